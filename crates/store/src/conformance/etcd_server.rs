//! Throwaway etcd servers for tests and benchmarks: one member
//! ([`EtcdTestServer`]) or a cluster of members on loopback
//! ([`EtcdTestCluster`]).
//!
//! Runs `/usr/bin/etcd` (Debian package `etcd-server`) as a child process on
//! 127.0.0.1 with free ports and a temporary data directory. The process is
//! killed and the directory removed when the [`EtcdTestServer`] is dropped
//! (also on panic). It can be killed and restarted on the same ports and
//! data to test reconnection.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::etcd::{EtcdOptions, EtcdStore, EtcdTls};
use crate::Store;

/// Where the etcd binary is expected.
pub const ETCD_BIN: &str = "/usr/bin/etcd";

/// One etcd member listening on 127.0.0.1.
pub struct EtcdTestServer {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    name: String,
    /// `--initial-cluster`: this member alone, or every cluster member.
    initial_cluster: String,
    /// Serves clients over TLS and wants their certificates.
    tls: bool,
}

/// This machine's architecture as Go names it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

impl EtcdTestServer {
    /// Starts a fresh server and waits until it serves requests (up to
    /// 20 s). Fails with a message naming the package if etcd is missing.
    pub async fn start() -> Result<Self, String> {
        let mut s = Self::prepare(&format!("sp-test-{}", std::process::id()))?;
        s.initial_cluster = format!("{}={}", s.name, s.peer_url());
        s.spawn_and_wait().await?;
        Ok(s)
    }

    /// A member with its ports and directory, not started.
    fn prepare(name: &str) -> Result<Self, String> {
        if !Path::new(ETCD_BIN).exists() {
            return Err(format!(
                "{ETCD_BIN} not found: install the etcd server (`apt-get install -y etcd-server`)"
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("socketplane-etcd-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let client_port = free_port()?;
        let mut peer_port = free_port()?;
        while peer_port == client_port {
            peer_port = free_port()?;
        }
        Ok(Self {
            child: None,
            client_port,
            peer_port,
            dir,
            name: name.to_string(),
            initial_cluster: String::new(),
            tls: false,
        })
    }

    /// Starts a server that takes clients only over TLS with a client
    /// certificate (`--client-cert-auth`), all signed by a CA made for it
    /// (with the `openssl` command); see [`Self::client_tls`].
    pub async fn start_tls() -> Result<Self, String> {
        let mut s = Self::prepare(&format!("sp-tls-{}", std::process::id()))?;
        s.initial_cluster = format!("{}={}", s.name, s.peer_url());
        s.tls = true;
        make_certificates(&s.certs_dir())?;
        s.spawn_and_wait().await?;
        Ok(s)
    }

    fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// TLS settings for a client of a [`Self::start_tls`] server: its CA
    /// and, with `client_cert`, the client certificate it accepts.
    pub fn client_tls(&self, client_cert: bool) -> Result<EtcdTls, String> {
        let d = self.certs_dir();
        let (cert, key) = (d.join("client.pem"), d.join("client.key"));
        let (cert, key) = match client_cert {
            true => (Some(cert.as_path()), Some(key.as_path())),
            false => (None, None),
        };
        EtcdTls::from_files(&d.join("ca.pem"), cert, key).map_err(|e| e.to_string())
    }

    /// Paths of the CA, client certificate and client key (PEM).
    pub fn client_tls_files(&self) -> (PathBuf, PathBuf, PathBuf) {
        let d = self.certs_dir();
        (d.join("ca.pem"), d.join("client.pem"), d.join("client.key"))
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// "127.0.0.1:PORT", for [`EtcdStore::connect`].
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `etcd://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The tail of etcd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Connects a store to this server.
    pub async fn store(&self) -> Result<EtcdStore, String> {
        let opts = EtcdOptions {
            tls: match self.tls {
                true => Some(self.client_tls(true)?),
                false => None,
            },
            ..EtcdOptions::default()
        };
        EtcdStore::connect_with(&[self.endpoint()], opts)
            .await
            .map_err(|e| e.to_string())
    }

    /// Kills the server (SIGKILL) and waits for it; data stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts a killed server on the same ports and data directory.
    pub async fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn_and_wait().await
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.spawn()?;
        self.wait_ready().await
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("etcd log file: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("etcd log file: {e}"))?;
        let scheme = if self.tls { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = self.peer_url();
        let mut cmd = Command::new(ETCD_BIN);
        if self.tls {
            let d = self.certs_dir();
            cmd.arg("--cert-file")
                .arg(d.join("server.pem"))
                .arg("--key-file")
                .arg(d.join("server.key"))
                .arg("--trusted-ca-file")
                .arg(d.join("ca.pem"))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            // Fast elections and a 1 s minimum lease TTL keep tests short.
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .args([
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
                "--log-level",
                "warn",
            ])
            // etcd 3.4 refuses to start on arm64 unless told it is fine.
            .env("ETCD_UNSUPPORTED_ARCH", go_arch())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .map_err(|e| format!("spawn {ETCD_BIN}: {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let opts = EtcdOptions {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(1),
            tls: match self.tls {
                true => Some(self.client_tls(true)?),
                false => None,
            },
            ..EtcdOptions::default()
        };
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("etcd exited with {status}:\n{}", self.log_tail()));
                }
            }
            if let Ok(s) = EtcdStore::connect_with(&[self.endpoint()], opts.clone()).await {
                if s.status().await.is_ok_and(|st| st.healthy) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "etcd did not become ready within 20 s:\n{}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made
/// with the `openssl` command into `dir`.
fn make_certificates(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let openssl = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| format!("run openssl (package openssl): {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(format!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=socketplane-test-ca",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca)?;
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let ext_file = format!("{name}.ext");
        std::fs::write(dir.join(&ext_file), ext).map_err(|e| format!("{ext_file}: {e}"))?;
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subj = format!("/CN=socketplane-test-{name}");
        let mut req = vec!["req", "-subj", &subj];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr]);
        openssl(&req)?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext_file,
            "-out",
            &pem,
        ])?;
    }
    Ok(())
}

impl Drop for EtcdTestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An etcd cluster of several members on 127.0.0.1, every member its own
/// process, ports and data directory; all killed when dropped.
pub struct EtcdTestCluster {
    members: Vec<EtcdTestServer>,
}

impl EtcdTestCluster {
    /// Starts `n` members and waits until each serves requests.
    pub async fn start(n: usize) -> Result<Self, String> {
        let pid = std::process::id();
        let mut members = (0..n)
            .map(|i| EtcdTestServer::prepare(&format!("sp-test-{pid}-{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        // All members first: none is ready before a quorum runs.
        for m in &mut members {
            m.initial_cluster = initial.clone();
            m.spawn()?;
        }
        for m in &mut members {
            m.wait_ready().await?;
        }
        Ok(Self { members })
    }

    /// "127.0.0.1:PORT" of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint()).collect()
    }

    /// One store per member, each connected to that member only (as our
    /// embedded nodes each serve their own clients).
    pub async fn stores(&self) -> Result<Vec<EtcdStore>, String> {
        let mut out = Vec::new();
        for m in &self.members {
            out.push(m.store().await?);
        }
        Ok(out)
    }
}
