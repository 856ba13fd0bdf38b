//! Crash safety with real processes: three node processes (this test binary
//! re-executed as `child_node_entrypoint`), a stream of writes, SIGKILL of
//! the leader and later of every node at once; every acknowledged write
//! survives.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use socketplane_store::{Store, StoreStatus};
use socketplane_store_raft::{EmbeddedConfig, EmbeddedStore, RaftTiming};

const CHILD_ENV: &str = "SOCKETPLANE_RAFT_TEST_CHILD";

#[derive(Serialize, Deserialize)]
struct Put {
    key: String,
    value: String,
}

/// Entry point of a node process; a no-op when run as an ordinary test.
#[test]
fn child_node_entrypoint() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(child_main());
}

async fn child_main() {
    common::init_tracing();
    let id: u64 = std::env::var("RAFT_ID").unwrap().parse().unwrap();
    let dir = PathBuf::from(std::env::var("RAFT_DIR").unwrap());
    let addr: SocketAddr = std::env::var("RAFT_ADDR").unwrap().parse().unwrap();
    let seed: Option<SocketAddr> = std::env::var("RAFT_SEED").ok().map(|s| s.parse().unwrap());
    let parent = std::os::unix::process::parent_id();
    let mut cfg = EmbeddedConfig::new(id, "crash", dir, addr);
    cfg.timing = RaftTiming::fast();
    let store = EmbeddedStore::open(cfg).await.expect("open");
    let listener = common::listener(Some(addr)).await;
    let st = store.clone();
    let test_routes = axum::Router::new()
        .route(
            "/test/put",
            axum::routing::post(move |body: axum::body::Bytes| {
                let st = st.clone();
                async move {
                    let p: Put = serde_json::from_slice(&body).unwrap();
                    match st.put(&p.key, p.value.into_bytes()).await {
                        Ok(rev) => (axum::http::StatusCode::OK, rev.to_string()),
                        Err(e) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
                    }
                }
            }),
        )
        .route(
            "/test/list",
            axum::routing::get({
                let st = store.clone();
                move || {
                    let st = st.clone();
                    async move {
                        match st.list("/crash/").await {
                            Ok(l) => {
                                let keys: Vec<String> =
                                    l.kvs.into_iter().map(|kv| kv.key).collect();
                                (
                                    axum::http::StatusCode::OK,
                                    serde_json::to_string(&keys).unwrap(),
                                )
                            }
                            Err(e) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
                        }
                    }
                }
            }),
        )
        .route(
            "/test/status",
            axum::routing::get({
                let st = store.clone();
                move || {
                    let st = st.clone();
                    async move { serde_json::to_string(&st.status().await.unwrap()).unwrap() }
                }
            }),
        );
    let app = store.router().merge(test_routes);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    if !store.is_member() {
        match seed {
            None => store.bootstrap().await.expect("bootstrap"),
            Some(s) => store.join(s).await.expect("join"),
        }
    }
    // Run until killed, or until the test process is gone.
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(0);
        }
    }
}

struct Proc {
    id: u64,
    addr: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
    seed: Option<SocketAddr>,
    child: Option<Child>,
}

impl Proc {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "child_node_entrypoint",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env("RAFT_ID", self.id.to_string())
        .env("RAFT_DIR", &self.dir)
        .env("RAFT_ADDR", self.addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
        if let Some(s) = self.seed {
            cmd.env("RAFT_SEED", s.to_string());
        }
        self.child = Some(cmd.spawn().expect("spawn node process"));
    }

    /// SIGKILL, no chance to flush anything.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn status(client: &reqwest::Client, addr: SocketAddr) -> Option<StoreStatus> {
    let r = client
        .get(format!("http://{addr}/test/status"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

async fn wait_cluster(client: &reqwest::Client, addrs: &[SocketAddr], members: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    'outer: loop {
        assert!(Instant::now() < deadline, "cluster did not form");
        for a in addrs {
            match status(client, *a).await {
                Some(s) if s.healthy && s.members.len() == members => {}
                _ => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'outer;
                }
            }
        }
        return;
    }
}

async fn list(client: &reqwest::Client, addr: SocketAddr) -> Option<BTreeSet<String>> {
    let r = client
        .get(format!("http://{addr}/test/list"))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json::<Vec<String>>()
        .await
        .ok()
        .map(|v| v.into_iter().collect())
}

fn dump_logs(procs: &[Proc]) {
    for p in procs {
        if let Ok(s) = std::fs::read_to_string(&p.log) {
            let tail: Vec<&str> = s.lines().rev().take(30).collect();
            eprintln!("--- node {} log (last lines, newest first) ---", p.id);
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

async fn write_stream(
    client: reqwest::Client,
    addrs: Arc<Mutex<Vec<SocketAddr>>>,
    acked: Arc<Mutex<BTreeSet<String>>>,
    worker: usize,
    count: usize,
    tag: &str,
) {
    for i in 0..count {
        let key = format!("/crash/{tag}-{worker}-{i}");
        let targets = addrs.lock().unwrap().clone();
        let addr = targets[(worker + i) % targets.len()];
        let r = client
            .post(format!("http://{addr}/test/put"))
            .timeout(Duration::from_secs(15))
            .body(
                serde_json::to_vec(&Put {
                    key: key.clone(),
                    value: "v".into(),
                })
                .unwrap(),
            )
            .send()
            .await;
        if let Ok(r) = r {
            if r.status().is_success() {
                acked.lock().unwrap().insert(key);
            }
        }
    }
}

fn root_paths(root: &Path, id: u64) -> (PathBuf, PathBuf) {
    (root.join(format!("n{id}")), root.join(format!("n{id}.log")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_acknowledged_writes() {
    common::init_tracing();
    let root = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let mut procs: Vec<Proc> = (0..3)
        .map(|i| {
            let id = i as u64 + 1;
            let (dir, log) = root_paths(root.path(), id);
            Proc {
                id,
                addr: addrs[i],
                dir,
                log,
                seed: if i == 0 { None } else { Some(addrs[0]) },
                child: None,
            }
        })
        .collect();
    procs[0].spawn();
    wait_cluster(&client, &addrs[..1], 1).await;
    procs[1].spawn();
    procs[2].spawn();
    wait_cluster(&client, &addrs, 3).await;

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let targets = Arc::new(Mutex::new(addrs.clone()));
    // Phase 1: a stream of writes; SIGKILL the leader in the middle.
    let writers: Vec<_> = (0..6)
        .map(|w| {
            tokio::spawn(write_stream(
                client.clone(),
                targets.clone(),
                acked.clone(),
                w,
                120,
                "a",
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 200 {
        assert!(Instant::now() < deadline, "writes stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leader: u64 = status(&client, addrs[0])
        .await
        .and_then(|s| s.leader)
        .and_then(|l| l.parse().ok())
        .unwrap_or(1);
    let li = (leader - 1) as usize;
    targets.lock().unwrap().retain(|a| *a != addrs[li]);
    procs[li].kill9();
    for w in writers {
        w.await.unwrap();
    }
    let phase1 = acked.lock().unwrap().len();
    eprintln!("phase 1: {phase1} acknowledged writes; killed leader {leader}");
    assert!(phase1 >= 400, "too few writes succeeded: {phase1}");

    // Restart the killed node from its data dir; it holds every ack'd write.
    procs[li].spawn();
    *targets.lock().unwrap() = addrs.clone();
    wait_cluster(&client, &addrs, 3).await;
    let want = acked.lock().unwrap().clone();
    let got = list(&client, addrs[li])
        .await
        .expect("list from restarted node");
    let missing: Vec<_> = want.difference(&got).collect();
    if !missing.is_empty() {
        dump_logs(&procs);
    }
    assert!(
        missing.is_empty(),
        "restarted node lacks {} writes, e.g. {:?}",
        missing.len(),
        missing.first()
    );

    // Phase 2: more writes, then SIGKILL every node at once (power loss).
    let writers: Vec<_> = (0..6)
        .map(|w| {
            tokio::spawn(write_stream(
                client.clone(),
                targets.clone(),
                acked.clone(),
                w,
                60,
                "b",
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < phase1 + 150 {
        assert!(Instant::now() < deadline, "writes stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Kill while writes are in flight.
    for p in procs.iter_mut() {
        p.kill9();
    }
    for w in writers {
        w.await.unwrap();
    }
    let want = acked.lock().unwrap().clone();
    eprintln!("phase 2: {} acknowledged writes in total", want.len());
    for p in procs.iter_mut() {
        p.spawn();
    }
    wait_cluster(&client, &addrs, 3).await;
    for (i, a) in addrs.iter().enumerate() {
        let got = list(&client, *a).await.expect("list after restart");
        let missing: Vec<_> = want.difference(&got).collect();
        if !missing.is_empty() {
            dump_logs(&procs);
        }
        assert!(
            missing.is_empty(),
            "node {} lacks {} acknowledged writes after kill -9, e.g. {:?}",
            i + 1,
            missing.len(),
            missing.first()
        );
    }
}
