//! One Open vSwitch per test host: `ovsdb-server` and `ovs-vswitchd` run
//! inside the host's namespace with their own database, sockets, pid files
//! and logs in one directory (`OVS_RUNDIR`), on the userspace (`netdev`)
//! datapath, the only one this kernel has. Userspace VXLAN needs the
//! host's underlay address on an OVS bridge ([`Ovs::move_underlay`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cmd;
use crate::error::{io_err, KitError, Result};
use crate::gate::check_program;
use crate::netns;

/// The OVSDB schema from the Debian package openvswitch-switch.
pub const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// The bridge that carries a host's underlay address.
pub const UNDERLAY_BRIDGE: &str = "br-phy";
/// The Debian package with the programs and the schema.
pub const PACKAGE: &str = "openvswitch-switch";
/// How long `ovs-vsctl` may wait for the daemons.
const VSCTL_TIMEOUT: &str = "--timeout=10";
/// How long ovs-vswitchd may take to accept a route (see `route_add`).
const ROUTE_WAIT: Duration = Duration::from_secs(10);
/// How long a daemon gets after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The OVSDB socket of an instance kept in `dir`.
pub fn db_socket(dir: &Path) -> PathBuf {
    dir.join("db.sock")
}

/// An Open vSwitch instance in a namespace. One made by [`Ovs::start`]
/// stops its daemons when dropped, unless [`Ovs::detach`]ed.
#[derive(Debug)]
pub struct Ovs {
    ns: String,
    dir: PathBuf,
    owned: bool,
    _tmp: Option<tempfile::TempDir>,
}

impl Ovs {
    /// Start ovsdb-server (fresh database) and ovs-vswitchd in namespace
    /// `ns`, keeping their files in `dir` (created if missing).
    pub fn start(ns: &str, dir: &Path) -> Result<Ovs> {
        Ovs::start_with(ns, dir.to_path_buf(), None)
    }

    /// [`Ovs::start`] with a temporary directory, removed on drop.
    pub fn start_temp(ns: &str) -> Result<Ovs> {
        let tmp = tempfile::Builder::new()
            .prefix("spovs")
            .tempdir()
            .map_err(io_err("cannot create a temp dir for OVS"))?;
        let dir = tmp.path().to_path_buf();
        Ovs::start_with(ns, dir, Some(tmp))
    }

    fn start_with(ns: &str, dir: PathBuf, tmp: Option<tempfile::TempDir>) -> Result<Ovs> {
        for p in [
            "ovsdb-tool",
            "ovsdb-server",
            "ovs-vswitchd",
            "ovs-vsctl",
            "ovs-ofctl",
        ] {
            check_program(p, PACKAGE)?;
        }
        check_program("ethtool", "ethtool")?;
        if !Path::new(SCHEMA).exists() {
            return Err(KitError::Missing {
                program: SCHEMA.into(),
                package: PACKAGE.into(),
            });
        }
        std::fs::create_dir_all(&dir)
            .map_err(io_err(format!("cannot create {}", dir.display())))?;
        let ovs = Ovs {
            ns: ns.to_string(),
            dir,
            owned: true,
            _tmp: tmp,
        };
        cmd::run("ovsdb-tool", &["create", &ovs.file("conf.db"), SCHEMA])?;
        ovs.start_db()?;
        ovs.vsctl(&["--no-wait", "init"])?;
        ovs.start_vswitchd()?;
        Ok(ovs)
    }

    /// A handle to an instance already running in `ns` from `dir`; it
    /// does not stop the daemons when dropped.
    pub fn attach(ns: &str, dir: &Path) -> Ovs {
        Ovs {
            ns: ns.to_string(),
            dir: dir.to_path_buf(),
            owned: false,
            _tmp: None,
        }
    }

    /// Leave the daemons running after this value drops (whoever deletes
    /// the namespace kills them).
    pub fn detach(mut self) {
        self.owned = false;
    }

    /// The namespace.
    pub fn netns(&self) -> &str {
        &self.ns
    }

    /// The directory with database, sockets, pid files and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The OVSDB socket (`--ovsdb` for the agent).
    pub fn db_socket(&self) -> PathBuf {
        db_socket(&self.dir)
    }

    /// The OpenFlow management socket of `bridge` (`ovs-ofctl` target).
    pub fn mgmt_target(&self, bridge: &str) -> String {
        format!("unix:{}", self.dir.join(format!("{bridge}.mgmt")).display())
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Run an OVS program in the namespace with this instance's
    /// directories; checked; returns stdout.
    pub fn run(&self, argv: &[&str]) -> Result<String> {
        let env = [
            format!("OVS_RUNDIR={}", self.dir.display()),
            format!("OVS_DBDIR={}", self.dir.display()),
            format!("OVS_LOGDIR={}", self.dir.display()),
        ];
        let mut full: Vec<&str> = vec!["env"];
        full.extend(env.iter().map(String::as_str));
        full.extend_from_slice(argv);
        let out = netns::exec(&self.ns, &full)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Start ovsdb-server on the existing database.
    pub fn start_db(&self) -> Result<()> {
        self.run(&[
            "ovsdb-server",
            &self.file("conf.db"),
            &format!("--remote=punix:{}", self.db_socket().display()),
            &format!("--pidfile={}", self.file("ovsdb-server.pid")),
            &format!("--unixctl={}", self.file("ovsdb-server.ctl")),
            &format!("--log-file={}", self.file("ovsdb-server.log")),
            "--detach",
        ])
        .map(|_| ())
    }

    /// Start ovs-vswitchd, without the kernel's routing table (see
    /// [`Ovs::sync_routes`]), then give it the routes of the underlay
    /// bridge, if there is one yet.
    pub fn start_vswitchd(&self) -> Result<()> {
        self.run(&[
            "ovs-vswitchd",
            &format!("unix:{}", self.db_socket().display()),
            &format!("--pidfile={}", self.file("ovs-vswitchd.pid")),
            &format!("--unixctl={}", self.file("ovs-vswitchd.ctl")),
            &format!("--log-file={}", self.file("ovs-vswitchd.log")),
            "--detach",
            "--disable-system-route",
        ])?;
        self.sync_routes()
    }

    /// `ovs-appctl` to this instance's ovs-vswitchd; returns stdout.
    pub fn appctl(&self, args: &[&str]) -> Result<String> {
        let ctl = self.file("ovs-vswitchd.ctl");
        let mut v = vec!["ovs-appctl", "-t", ctl.as_str()];
        v.extend_from_slice(args);
        self.run(&v)
    }

    /// Gives ovs-vswitchd, as its own routes, the underlay bridge's subnet
    /// and the namespace's default route when it leaves through that
    /// bridge. ovs-vswitchd runs with `--disable-system-route`: with the
    /// kernel's table it drops and re-reads every route on every link
    /// change in the namespace (OVS 3.1), and VXLAN packets that arrive in
    /// that moment are not decapsulated but handed to the host's stack,
    /// which drops them. Every endpoint attach or detach is such a link
    /// change. Without the bridge (before [`Ovs::move_underlay`]) this does
    /// nothing.
    pub fn sync_routes(&self) -> Result<()> {
        let addrs = cmd::ip_json(
            Some(&self.ns),
            &["-4", "addr", "show", "dev", UNDERLAY_BRIDGE],
        );
        let Some(cidr) = addrs.ok().as_ref().and_then(first_cidr) else {
            return Ok(());
        };
        self.route_add(&[&cidr, UNDERLAY_BRIDGE])?;
        let routes = cmd::ip_json(Some(&self.ns), &["-4", "route", "show", "default"])?;
        let via = routes.as_array().and_then(|l| {
            l.iter()
                .find(|r| r["dev"].as_str() == Some(UNDERLAY_BRIDGE))
                .and_then(|r| r["gateway"].as_str())
        });
        if let Some(gw) = via {
            self.route_add(&["0.0.0.0/0", UNDERLAY_BRIDGE, gw])?;
        }
        Ok(())
    }

    /// `ovs/route/add ARGS`, retried for a few seconds: ovs-vswitchd
    /// refuses a route through a bridge until it has seen the bridge's
    /// address, which it learns asynchronously.
    fn route_add(&self, args: &[&str]) -> Result<()> {
        let mut argv = vec!["ovs/route/add"];
        argv.extend_from_slice(args);
        let deadline = std::time::Instant::now() + ROUTE_WAIT;
        loop {
            match self.appctl(&argv) {
                Ok(_) => return Ok(()),
                Err(e) if std::time::Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Stop ovs-vswitchd (its flows and internal ports go with it).
    pub fn stop_vswitchd(&self) {
        crate::process::stop_pidfile(&self.dir.join("ovs-vswitchd.pid"), STOP_GRACE);
    }

    /// Stop ovsdb-server (the database file stays).
    pub fn stop_db(&self) {
        crate::process::stop_pidfile(&self.dir.join("ovsdb-server.pid"), STOP_GRACE);
    }

    /// `ovs-vsctl --db=... ARGS`; returns stdout.
    pub fn vsctl(&self, args: &[&str]) -> Result<String> {
        let db = format!("--db=unix:{}", self.db_socket().display());
        let mut v = vec!["ovs-vsctl", db.as_str(), VSCTL_TIMEOUT];
        v.extend_from_slice(args);
        self.run(&v)
    }

    /// `ovs-ofctl -O OpenFlow14 ARGS`; returns stdout.
    pub fn ofctl(&self, args: &[&str]) -> Result<String> {
        let mut v = vec!["ovs-ofctl", "-O", "OpenFlow14"];
        v.extend_from_slice(args);
        self.run(&v)
    }

    /// The flows of `bridge` without counters, sorted.
    pub fn flows(&self, bridge: &str) -> Result<Vec<String>> {
        let out = self.ofctl(&["--no-stats", "dump-flows", &self.mgmt_target(bridge)])?;
        let mut v: Vec<String> = out
            .lines()
            .filter(|l| l.contains("actions="))
            .map(|l| l.trim().to_string())
            .collect();
        v.sort();
        Ok(v)
    }

    /// The userspace tunnelling setup: a `netdev` bridge `bridge` with
    /// `iface` as its port, and `iface`'s IPv4 address moved onto the
    /// bridge (up). Returns that address (`a.b.c.d/len`).
    ///
    /// The kernel still sees every frame of `iface` (ovs-vswitchd reads it
    /// with a packet socket), so first it is told never to answer ARP
    /// there (`arp_ignore=8`): else it answers for the address on the
    /// bridge with `iface`'s MAC too, a peer's ovs-vswitchd may take that
    /// one as this host's tunnel neighbour, and tunnel packets sent to it
    /// are refused by this host's stack instead of decapsulated.
    pub fn move_underlay(&self, iface: &str, bridge: &str) -> Result<String> {
        let addrs = cmd::ip_json(Some(&self.ns), &["-4", "addr", "show", "dev", iface])?;
        let cidr = first_cidr(&addrs).ok_or_else(|| KitError::Output {
            cmd: format!("ip -j -n {} -4 addr show dev {iface}", self.ns),
            detail: format!("{iface} has no IPv4 address: {addrs}"),
        })?;
        let quiet = format!("net.ipv4.conf.{iface}.arp_ignore=8");
        netns::exec(&self.ns, &["sysctl", "-qw", &quiet])?;
        self.vsctl(&[
            "add-br",
            bridge,
            "--",
            "set",
            "bridge",
            bridge,
            "datapath_type=netdev",
            "--",
            "add-port",
            bridge,
            iface,
        ])?;
        cmd::ip(&["-n", &self.ns, "addr", "flush", "dev", iface])?;
        cmd::ip(&["-n", &self.ns, "addr", "add", &cidr, "dev", bridge])?;
        cmd::ip(&["-n", &self.ns, "link", "set", bridge, "up"])?;
        if bridge == UNDERLAY_BRIDGE {
            self.sync_routes()?;
        }
        Ok(cidr)
    }

    /// Stop both daemons now.
    pub fn stop(&self) {
        self.stop_vswitchd();
        self.stop_db();
    }
}

/// The first IPv4 address (`a.b.c.d/len`) in `ip -j addr show` output.
fn first_cidr(addrs: &serde_json::Value) -> Option<String> {
    let a = addrs
        .as_array()?
        .first()?
        .get("addr_info")?
        .as_array()?
        .first()?;
    Some(format!(
        "{}/{}",
        a["local"].as_str()?,
        a["prefixlen"].as_u64()?
    ))
}

impl Drop for Ovs {
    fn drop(&mut self) {
        if self.owned {
            self.stop();
        }
    }
}
