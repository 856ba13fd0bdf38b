//! Tests against a real `ovsdb-server` (Debian `openvswitch-switch`), each
//! with its own database and socket in a temp dir, killed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use socketplane_ovsdb::{atom, ops, Client, Error};

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

struct Server {
    dir: tempfile::TempDir,
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {args:?} ({e}): install the Debian package openvswitch-switch")
        });
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Server {
    fn start() -> Server {
        assert!(
            Path::new(SCHEMA).exists(),
            "{SCHEMA} missing: install the Debian package openvswitch-switch"
        );
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("conf.db");
        run(&["ovsdb-tool", "create", db.to_str().unwrap(), SCHEMA]);
        let s = Server { dir };
        s.launch();
        s
    }

    fn p(&self, f: &str) -> String {
        self.dir.path().join(f).display().to_string()
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("db.sock")
    }

    fn launch(&self) {
        run(&[
            "ovsdb-server",
            &self.p("conf.db"),
            &format!("--remote=punix:{}", self.p("db.sock")),
            &format!("--pidfile={}", self.p("x.pid")),
            &format!("--unixctl={}", self.p("ctl")),
            &format!("--log-file={}", self.p("log")),
            "--detach",
        ]);
    }

    fn kill(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.p("x.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
            for _ in 0..50 {
                if !Path::new(&format!("/proc/{}", pid.trim())).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = std::fs::remove_file(self.p("x.pid"));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn init_ops() -> Vec<serde_json::Value> {
    vec![ops::insert("Open_vSwitch", ops::row([]), None)]
}

#[tokio::test]
async fn transact_monitor_echo() {
    let srv = Server::start();
    let c = Client::connect(srv.sock()).await.unwrap();
    c.echo().await.unwrap();
    assert!(c
        .list_dbs()
        .await
        .unwrap()
        .contains(&"Open_vSwitch".to_string()));
    assert!(c.snapshot().open_vswitch().is_none());
    c.transact(init_ops()).await.unwrap();
    let root = {
        assert!(
            c.wait_until(Duration::from_secs(5), |s| s.open_vswitch().is_some())
                .await
        );
        c.snapshot().open_vswitch().unwrap().uuid
    };

    // Bridge + port + interface in one transaction with named UUIDs.
    let ext = atom::string_map([("socketplane-network", "a")]);
    let r = c
        .transact(vec![
            ops::insert(
                "Interface",
                ops::row([
                    ("name", json!("p1")),
                    ("type", json!("internal")),
                    ("external_ids", atom::map(&ext)),
                ]),
                Some("i1"),
            ),
            ops::insert(
                "Port",
                ops::row([
                    ("name", json!("p1")),
                    ("interfaces", atom::set([atom::named_uuid("i1")])),
                ]),
                Some("p1"),
            ),
            ops::insert(
                "Bridge",
                ops::row([
                    ("name", json!("brx")),
                    ("fail_mode", json!("secure")),
                    ("datapath_type", json!("netdev")),
                    ("ports", atom::set([atom::named_uuid("p1")])),
                ]),
                Some("b"),
            ),
            ops::mutate(
                "Open_vSwitch",
                ops::by_uuid(&root),
                vec![ops::mutation(
                    "bridges",
                    "insert",
                    atom::set([atom::named_uuid("b")]),
                )],
            ),
        ])
        .await
        .unwrap();
    let bridge_uuid = Client::inserted_uuid(&r, 2).unwrap();
    assert!(
        c.wait_until(Duration::from_secs(5), |s| s.bridge_ports("brx").len() == 1)
            .await
    );
    let snap = c.snapshot();
    let b = snap.bridge("brx").unwrap();
    assert_eq!(b.uuid, bridge_uuid);
    assert_eq!(b.fail_mode.as_deref(), Some("secure"));
    assert_eq!(b.datapath_type, "netdev");
    let (p, ifs) = &snap.bridge_ports("brx")[0];
    assert_eq!(p.name, "p1");
    assert_eq!(ifs[0].kind, "internal");
    assert_eq!(ifs[0].external_ids, ext);
    assert_eq!(
        snap.open_vswitch().unwrap().bridges,
        vec![bridge_uuid.clone()]
    );

    // select, update, wait.
    let r = c
        .transact(vec![ops::select(
            "Bridge",
            vec![ops::eq("name", json!("brx"))],
            Some(&["name", "fail_mode"]),
        )])
        .await
        .unwrap();
    assert_eq!(r[0]["rows"][0]["name"], json!("brx"));
    c.transact(vec![
        ops::wait(
            "Bridge",
            vec![ops::eq("name", json!("brx"))],
            &["fail_mode"],
            "==",
            vec![json!({"fail_mode": "secure"})],
            0,
        ),
        ops::update(
            "Bridge",
            ops::by_uuid(&bridge_uuid),
            ops::row([("fail_mode", json!("standalone"))]),
        ),
    ])
    .await
    .unwrap();
    assert!(
        c.wait_until(Duration::from_secs(5), |s| s
            .bridge("brx")
            .and_then(|b| b.fail_mode)
            .as_deref()
            == Some("standalone"))
            .await
    );
    // A failed wait aborts the transaction with a per-operation error.
    let e = c
        .transact(vec![ops::wait(
            "Bridge",
            vec![ops::eq("name", json!("brx"))],
            &["fail_mode"],
            "==",
            vec![json!({"fail_mode": "secure"})],
            0,
        )])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Transaction { index: 0, .. }), "{e}");

    // Delete: removing the reference garbage-collects bridge, port, interface.
    c.transact(vec![ops::mutate(
        "Open_vSwitch",
        ops::by_uuid(&root),
        vec![ops::mutation(
            "bridges",
            "delete",
            atom::set([atom::uuid(&bridge_uuid)]),
        )],
    )])
    .await
    .unwrap();
    assert!(
        c.wait_until(Duration::from_secs(5), |s| s.bridges().is_empty()
            && s.ports().is_empty()
            && s.interfaces().is_empty())
            .await
    );
    // A plain delete of a root-set row.
    c.transact(vec![ops::delete("Open_vSwitch", vec![])])
        .await
        .unwrap();
    assert!(
        c.wait_until(Duration::from_secs(5), |s| s.open_vswitch().is_none())
            .await
    );
}

#[tokio::test]
async fn large_updates_span_reads() {
    let srv = Server::start();
    let c = Client::connect(srv.sock()).await.unwrap();
    c.transact(init_ops()).await.unwrap();
    // Many rows in one transaction: the update notification spans many reads.
    let root = {
        c.wait_until(Duration::from_secs(5), |s| s.open_vswitch().is_some())
            .await;
        c.snapshot().open_vswitch().unwrap().uuid
    };
    let mut tx = Vec::new();
    let mut ports = Vec::new();
    for i in 0..300 {
        tx.push(ops::insert(
            "Interface",
            ops::row([
                ("name", json!(format!("if{i}"))),
                ("type", json!("internal")),
            ]),
            Some(&format!("i{i}")),
        ));
        tx.push(ops::insert(
            "Port",
            ops::row([
                ("name", json!(format!("if{i}"))),
                ("interfaces", atom::named_uuid(&format!("i{i}"))),
            ]),
            Some(&format!("p{i}")),
        ));
        ports.push(atom::named_uuid(&format!("p{i}")));
    }
    tx.push(ops::insert(
        "Bridge",
        ops::row([("name", json!("big")), ("ports", atom::set(ports))]),
        Some("b"),
    ));
    tx.push(ops::mutate(
        "Open_vSwitch",
        ops::by_uuid(&root),
        vec![ops::mutation(
            "bridges",
            "insert",
            atom::set([atom::named_uuid("b")]),
        )],
    ));
    c.transact(tx).await.unwrap();
    assert!(
        c.wait_until(Duration::from_secs(5), |s| s.bridge_ports("big").len()
            == 300)
            .await
    );
    // An empty transaction is valid.
    c.transact(vec![]).await.unwrap();
    c.echo().await.unwrap();
    assert!(c.is_connected().await);
}

#[tokio::test]
async fn reconnects_and_resyncs_after_server_restart() {
    let srv = Server::start();
    let c = Client::connect(srv.sock()).await.unwrap();
    assert_eq!(c.generation(), 1);
    c.transact(init_ops()).await.unwrap();
    assert!(
        c.wait_until(Duration::from_secs(5), |s| s.open_vswitch().is_some())
            .await
    );
    srv.kill();
    // While down: requests fail clearly.
    let e = c.echo().await.unwrap_err();
    assert!(
        matches!(e, Error::Disconnected | Error::Connect { .. }),
        "{e}"
    );
    // Change the database offline so the resync has something to find.
    run(&[
        "ovsdb-tool",
        "transact",
        &srv.p("conf.db"),
        r#"["Open_vSwitch",{"op":"update","table":"Open_vSwitch","where":[],"row":{"external_ids":["map",[["k","v"]]]}}]"#,
    ]);
    srv.launch();
    let mut ok = false;
    for _ in 0..50 {
        if c.echo().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "no reconnect");
    assert!(c.generation() >= 2);
    let root = c.snapshot().open_vswitch().unwrap();
    assert_eq!(
        root.external_ids.get("k").map(String::as_str),
        Some("v"),
        "cache resynced"
    );
    // Not running at all: a clear connect error.
    srv.kill();
    let e = Client::connect(srv.dir.path().join("nothing.sock"))
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("cannot connect to ovsdb-server"),
        "{e}"
    );
}
