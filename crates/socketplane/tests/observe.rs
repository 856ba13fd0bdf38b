//! Seeing the cluster (issue 15), with real agents on lab hosts: `/metrics`
//! parses as Prometheus text and agrees with the CLI, the topology page in
//! headless Chromium (inside a lab host's namespace) lists every host,
//! network and endpoint and updates live, a stopped agent shows as
//! unhealthy everywhere, and `--http` serves only where it is told to.
//! Needs root and Debian's `chromium` (scripts/test.sh installs it).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{unique_name, wait_until, TestLab, BIN, FORMATION};
use socketplane_api::rest::{ClusterStatus, EndpointInfo, NetworkInfo};
use socketplane_lab::{Lab, LabConfig};
use socketplane_testkit::{netns, require_privileged};

const HTTP: &str = "127.0.0.1:9675";

/// A GET on `addr` from inside `ns`: (status, body); `Err` when nothing
/// answers.
fn http_get(ns: &str, addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let (addr, path) = (addr.to_string(), path.to_string());
    netns::in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((status, body.to_string()))
    })
}

/// `/metrics` of host `host`, parsed by an independent parser.
fn scrape(t: &TestLab, host: usize) -> prometheus_parse::Scrape {
    let ns = t.lab().hosts()[host].netns.clone();
    let (status, body) = http_get(&ns, HTTP, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e}\n{body}"))
}

/// A sample's value (counters and gauges alike), by name and labels.
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .and_then(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(*v),
            _ => None,
        })
}

/// A histogram's sample count.
fn histogram_count(s: &prometheus_parse::Scrape, name: &str) -> u64 {
    s.samples
        .iter()
        .find(|x| x.metric == name)
        .and_then(|x| match &x.value {
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count as u64).max()
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no histogram {name}"))
}

/// Headless Chromium in a namespace, driven over the DevTools protocol on
/// a pipe (fds 3 and 4), attached to its one page.
struct Browser {
    child: Child,
    commands: std::io::PipeWriter,
    replies: mpsc::Receiver<serde_json::Value>,
    next: u64,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(ns: &str, url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let (cmd_read, cmd_write) = std::io::pipe().unwrap();
        let (out_read, out_write) = std::io::pipe().unwrap();
        let (r, w) = (cmd_read.as_raw_fd(), out_write.as_raw_fd());
        let argv = [
            "chromium".to_string(),
            "--headless".into(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--no-first-run".into(),
            "--remote-debugging-pipe".into(),
            "--window-size=1280,1000".into(),
            format!("--user-data-dir={}", profile.path().display()),
            url.into(),
        ];
        let mut c = netns::command(ns, &argv);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: dup2 is async-signal-safe; nothing else runs before exec.
        unsafe {
            c.pre_exec(move || {
                // Through fresh copies: dup2 onto the same number would
                // keep close-on-exec set.
                let (r2, w2) = (libc::dup(r), libc::dup(w));
                if r2 < 0 || w2 < 0 || libc::dup2(r2, 3) < 0 || libc::dup2(w2, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().expect("start chromium");
        drop(cmd_read);
        drop(out_write);
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(out_read);
            let mut buf = Vec::new();
            while reader.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                buf.pop_if(|b| *b == 0);
                if let Ok(v) = serde_json::from_slice(&buf) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                buf.clear();
            }
        });
        let mut b = Browser {
            child,
            commands: cmd_write,
            replies,
            next: 0,
            session: String::new(),
            _profile: profile,
        };
        let targets = b.call("Target.getTargets", serde_json::json!({}));
        let page = targets["targetInfos"]
            .as_array()
            .and_then(|a| a.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["targetId"].as_str())
            .expect("a page target")
            .to_string();
        let attached = b.call(
            "Target.attachToTarget",
            serde_json::json!({ "targetId": page, "flatten": true }),
        );
        b.session = attached["sessionId"].as_str().expect("session").to_string();
        b
    }

    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next += 1;
        let id = self.next;
        let mut msg = serde_json::json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = self.session.clone().into();
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self
                .replies
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// The page's visible text.
    fn text(&mut self) -> String {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": "document.body ? document.body.innerText : ''", "returnByValue": true }),
        );
        r["result"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn screenshot(&mut self, to: &Path) {
        use base64::Engine;
        let r = self.call(
            "Page.captureScreenshot",
            serde_json::json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64");
        std::fs::write(to, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn attach(t: &mut TestLab, host: usize, name: &str, network: &str) -> EndpointInfo {
    t.workload(host, name, network)
}

/// The cluster status command on `host` as text: (exit code, stdout).
fn status_text(t: &TestLab, host: usize) -> (i32, String) {
    let out = t
        .lab()
        .exec(host, &[BIN.to_string(), "cluster".into(), "status".into()])
        .expect("cluster status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn metrics_page_and_health_show_the_cluster() {
    require_privileged!();
    socketplane_testkit::gate::require("chromium", "chromium");
    let mut t = TestLab::start('o', 3);
    t.sp(0, &["network", "create", "web", "10.31.0.0/24"])
        .expect("create web");
    // Workloads on two networks, on every host.
    let mut eps = vec![
        attach(&mut t, 0, "alpha", "web"),
        attach(&mut t, 0, "bravo", "default"),
        attach(&mut t, 1, "charlie", "web"),
        attach(&mut t, 2, "delta", "web"),
        attach(&mut t, 2, "echo", "default"),
    ];

    // Healthy, and it says so everywhere.
    let (code, out) = status_text(&t, 0);
    assert_eq!(code, 0, "a healthy cluster's status exits 0:\n{out}");
    let ns0 = t.lab().hosts()[0].netns.clone();
    assert_eq!(http_get(&ns0, HTTP, "/healthz").unwrap().0, 200);
    let ready = wait_until(Duration::from_secs(5), || {
        http_get(&ns0, HTTP, "/readyz").is_ok_and(|(s, _)| s == 200)
    });
    assert!(ready, "{:?}", http_get(&ns0, HTTP, "/readyz"));

    // /metrics agrees with the CLI.
    let networks: Vec<NetworkInfo> = t.sp_json(0, &["network", "list"]);
    let all: Vec<EndpointInfo> = t.sp_json(0, &["endpoint", "list"]);
    let local: Vec<EndpointInfo> = t.sp_json(0, &["endpoint", "list", "--local"]);
    let m = scrape(&t, 0);
    assert_eq!(
        value(&m, "socketplane_networks", &[]),
        Some(networks.len() as f64)
    );
    assert_eq!(
        value(&m, "socketplane_endpoints", &[("scope", "cluster")]),
        Some(all.len() as f64)
    );
    assert_eq!(
        value(&m, "socketplane_endpoints", &[("scope", "local")]),
        Some(local.len() as f64)
    );
    assert_eq!(
        value(&m, "socketplane_nodes", &[("state", "alive")]),
        Some(3.0)
    );
    for n in &networks {
        assert_eq!(
            value(
                &m,
                "socketplane_pool_used_addresses",
                &[("network", &n.network.name)]
            ),
            Some(n.endpoints as f64),
            "pool use of {}",
            n.network.name
        );
    }
    assert!(
        histogram_count(&m, "socketplane_attach_duration_seconds") >= 2,
        "host1 attached two endpoints"
    );
    assert!(histogram_count(&m, "socketplane_reconcile_duration_seconds") > 0);
    assert!(histogram_count(&m, "socketplane_store_commit_duration_seconds") > 0);
    assert!(
        value(
            &m,
            "socketplane_api_requests_total",
            &[("route", "POST /v1/endpoints"), ("origin", "cli")]
        )
        .is_some_and(|v| v >= 2.0),
        "attaches are counted by route and origin"
    );
    assert!(value(&m, "socketplane_store_term", &[]).is_some_and(|v| v >= 1.0));

    // The default binds loopback only: the underlay address does not
    // answer, neither locally nor from another host.
    let underlay = format!("{}:9675", t.lab().hosts()[0].underlay_ip);
    assert!(http_get(&ns0, &underlay, "/healthz").is_err());
    let ns1 = t.lab().hosts()[1].netns.clone();
    assert!(http_get(&ns1, &underlay, "/healthz").is_err());

    // The page, in Chromium inside host1's namespace.
    let mut page = Browser::open(&ns0, &format!("http://{HTTP}/"));
    let hosts: Vec<(String, String)> = t
        .lab()
        .hosts()
        .iter()
        .map(|h| (h.name.clone(), h.underlay_ip.to_string()))
        .collect();
    let everything_shown = |text: &str, eps: &[EndpointInfo]| {
        hosts.iter().all(|(_, addr)| text.contains(addr.as_str()))
            && networks.iter().all(|n| text.contains(&n.network.name))
            && eps
                .iter()
                .all(|e| text.contains(&e.endpoint.ip.to_string()))
    };
    let mut text = String::new();
    let shown = wait_until(Duration::from_secs(10), || {
        text = page.text();
        everything_shown(&text, &eps)
    });
    assert!(
        shown,
        "the page misses a host, network or endpoint:\n{text}"
    );
    assert!(text.contains("Healthy"), "{text}");

    // An endpoint attached now appears without a reload, within 2 s.
    let late = attach(&mut t, 1, "foxtrot", "web");
    let attached = Instant::now();
    let ip = late.endpoint.ip.to_string();
    let appeared = wait_until(Duration::from_secs(5), || page.text().contains(&ip));
    let took = attached.elapsed();
    assert!(appeared, "the new endpoint {ip} never appeared");
    assert!(
        took <= Duration::from_secs(2),
        "the new endpoint took {took:?} to appear"
    );
    eprintln!("a new endpoint appeared on the page {took:?} after its attach returned");
    eps.push(late);
    let shot = std::env::temp_dir().join(format!("{}-topology.png", unique_name('o')));
    page.screenshot(&shot);
    if let Ok(dir) = std::env::var("SOCKETPLANE_SCREENSHOT_DIR") {
        let _ = std::fs::copy(&shot, PathBuf::from(dir).join("topology.png"));
    }
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    let _ = std::fs::remove_file(&shot);

    // host3's agent stops: unhealthy in status (with the reason and a
    // non-zero exit), on the page and in /metrics.
    let gone = hosts[2].0.clone();
    t.lab_mut()
        .stop_agent(2, socketplane_lab::Signal::SIGTERM)
        .expect("stop agent");
    let mut last = (0, String::new());
    let flagged = wait_until(Duration::from_secs(15), || {
        last = status_text(&t, 0);
        last.0 == 2 && last.1.contains(&format!("{gone}: agent not responding"))
    });
    assert!(flagged, "cluster status does not flag {gone}: {last:?}");
    let status: ClusterStatus = t.sp_json(0, &["cluster", "status"]);
    assert!(!status.healthy, "{status:?}");
    let node = status.nodes.iter().find(|n| n.name == gone).unwrap();
    assert!(!node.alive && !node.problems.is_empty(), "{node:?}");
    let m = scrape(&t, 0);
    assert_eq!(
        value(&m, "socketplane_nodes", &[("state", "dead")]),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "socketplane_node_up", &[("node", &gone)]),
        Some(0.0)
    );
    assert!(value(&m, "socketplane_problems", &[]).is_some_and(|v| v >= 1.0));
    let on_page = wait_until(Duration::from_secs(5), || {
        text = page.text();
        text.contains("agent not responding") && text.contains("dead")
    });
    assert!(on_page, "the page does not show {gone} as dead:\n{text}");
}

/// `--http off` serves nothing.
#[test]
fn http_off_serves_nothing() {
    require_privileged!();
    let name = unique_name('q');
    let mut config = LabConfig::new(&name, 1, BIN);
    config.agent_args = common::test_agent_args(common::LEASE_TTL);
    config.agent_args.extend(["--http".into(), "off".into()]);
    config.state_dir = std::env::temp_dir().join(format!("sp-lab-{name}"));
    let t = TestLab::new(Lab::up(config).expect("lab up"));
    t.wait_for_nodes(0, 1, FORMATION);
    let ns = t.lab().hosts()[0].netns.clone();
    for path in ["/healthz", "/metrics", "/"] {
        let answer = http_get(&ns, HTTP, path);
        assert!(
            answer.is_err(),
            "--http off, yet {path} answers: {answer:?}"
        );
    }
}
