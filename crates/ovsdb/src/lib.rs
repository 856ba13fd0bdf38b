//! A native OVSDB client (RFC 7047): JSON-RPC 1.0 over a unix socket.
//!
//! - [`Client::transact`] runs a transaction (build operations with [`ops`]
//!   and values with [`atom`]); per-operation errors become
//!   [`Error::Transaction`].
//! - A `monitor` on `Open_vSwitch`, `Bridge`, `Port` and `Interface` keeps a
//!   live cache; [`Client::snapshot`] copies it, typed rows in [`rows`].
//! - The server's `echo` requests are answered; [`Client::echo`] sends one.
//! - Messages on the wire are not delimited: the reader splits the stream
//!   of concatenated JSON objects ([`stream`]), up to a size cap.
//! - When the connection drops, pending requests fail with
//!   [`Error::Disconnected`]; the next request reconnects and re-runs the
//!   monitor, replacing the cache (resync). [`Client::generation`] counts
//!   connections so callers can tell that they must re-verify state.

pub mod atom;
pub mod ops;
pub mod rows;
mod stream;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, RwLock};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch, Mutex};
use tracing::{debug, warn};

pub use rows::{Bridge, Interface, OpenVSwitch, Port, Snapshot};

/// The database of Open vSwitch.
pub const DB: &str = "Open_vSwitch";
/// Where Debian's ovsdb-server listens by default.
pub const DEFAULT_SOCKET: &str = "/var/run/openvswitch/db.sock";
/// Tables kept in the monitor cache.
pub const MONITORED: [&str; 4] = ["Open_vSwitch", "Bridge", "Port", "Interface"];
/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const MONITOR_ID: &str = "socketplane-cache";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to ovsdb-server at {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to ovsdb-server lost")]
    Disconnected,
    /// The request could not be written (the connection was already gone).
    #[error("connection to ovsdb-server lost before the request was sent")]
    NotSent,
    #[error("ovsdb-server did not answer {0} in time")]
    Timeout(String),
    #[error("ovsdb {method} failed: {error}")]
    Rpc { method: String, error: String },
    #[error("ovsdb transaction failed at operation {index}: {error}{}", if .details.is_empty() { String::new() } else { format!(" ({})", .details) })]
    Transaction {
        index: usize,
        error: String,
        details: String,
    },
    #[error("unexpected reply from ovsdb-server: {0}")]
    Protocol(String),
    #[error("writing to ovsdb-server: {0}")]
    Io(#[source] std::io::Error),
    #[error("encoding a request: {0}")]
    Encode(#[source] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

type Pending = Arc<StdMutex<HashMap<u64, oneshot::Sender<Value>>>>;

struct Conn {
    writer: Arc<Mutex<OwnedWriteHalf>>,
    pending: Pending,
    alive: Arc<AtomicBool>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

struct Shared {
    cache: RwLock<Snapshot>,
    version: watch::Sender<u64>,
}

/// A client of one ovsdb-server (the `Open_vSwitch` database).
pub struct Client {
    path: PathBuf,
    conn: Mutex<Option<Conn>>,
    next_id: AtomicU64,
    generation: AtomicU64,
    shared: Arc<Shared>,
}

async fn write_msg(w: &Mutex<OwnedWriteHalf>, msg: &Value) -> Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(Error::Encode)?;
    let mut w = w.lock().await;
    w.write_all(&bytes).await.map_err(Error::Io)
}

/// Applies `table-updates` to the cache; `reset` replaces it (initial monitor reply).
fn apply_updates(shared: &Shared, updates: &Value, reset: bool) {
    {
        let Ok(mut cache) = shared.cache.write() else {
            return;
        };
        if reset {
            cache.tables.clear();
            for t in MONITORED {
                cache.tables.insert(t.to_string(), Default::default());
            }
        }
        if let Some(tables) = updates.as_object() {
            for (table, rows) in tables {
                let t = cache.tables.entry(table.clone()).or_default();
                let Some(rows) = rows.as_object() else {
                    continue;
                };
                for (uuid, change) in rows {
                    match change.get("new").and_then(Value::as_object) {
                        Some(new) => {
                            t.insert(uuid.clone(), new.clone());
                        }
                        None => {
                            t.remove(uuid);
                        }
                    }
                }
            }
        }
    }
    shared.version.send_modify(|v| *v += 1);
}

async fn read_loop(
    mut rd: tokio::net::unix::OwnedReadHalf,
    writer: Arc<Mutex<OwnedWriteHalf>>,
    pending: Pending,
    alive: Arc<AtomicBool>,
    shared: Arc<Shared>,
    monitor_req: u64,
) {
    let mut framer = stream::Framer::new();
    let mut chunk = vec![0u8; 64 * 1024];
    'outer: loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                debug!(error = %e, "ovsdb read failed");
                break;
            }
        };
        let msgs = match framer.push(&chunk[..n]) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "ovsdb-server sent invalid JSON; dropping the connection");
                break;
            }
        };
        for msg in msgs {
            let method = msg.get("method").and_then(Value::as_str);
            match method {
                Some("echo") => {
                    let reply = json!({"id": msg.get("id").cloned().unwrap_or(Value::Null),
                        "result": msg.get("params").cloned().unwrap_or(json!([])), "error": null});
                    if write_msg(&writer, &reply).await.is_err() {
                        break 'outer;
                    }
                }
                Some("update") => {
                    if let Some(u) = msg.get("params").and_then(|p| p.get(1)) {
                        apply_updates(&shared, u, false);
                    }
                }
                Some(other) => debug!(method = other, "ignoring ovsdb notification"),
                None => {
                    let Some(id) = msg.get("id").and_then(Value::as_u64) else {
                        continue;
                    };
                    if id == monitor_req && msg.get("error").is_none_or(Value::is_null) {
                        if let Some(r) = msg.get("result") {
                            apply_updates(&shared, r, true);
                        }
                    }
                    let tx = pending.lock().ok().and_then(|mut p| p.remove(&id));
                    if let Some(tx) = tx {
                        let _ = tx.send(msg);
                    }
                }
            }
        }
    }
    alive.store(false, Ordering::SeqCst);
    // Dropping the senders fails every waiting request with Disconnected.
    if let Ok(mut p) = pending.lock() {
        p.clear();
    }
}

impl Client {
    /// Connects to the ovsdb-server socket at `path` and fills the cache.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client> {
        let (version, _) = watch::channel(0);
        let c = Client {
            path: path.as_ref().to_owned(),
            conn: Mutex::new(None),
            next_id: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            shared: Arc::new(Shared {
                cache: RwLock::new(Snapshot::default()),
                version,
            }),
        };
        c.ensure_conn().await?;
        Ok(c)
    }

    /// The socket this client talks to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of connections made so far (1 after `connect`; grows on each
    /// reconnect, after which the cache has been resynchronised).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Whether the current connection is up (no reconnect attempted).
    pub async fn is_connected(&self) -> bool {
        self.conn
            .lock()
            .await
            .as_ref()
            .is_some_and(|c| c.alive.load(Ordering::SeqCst))
    }

    /// A copy of the monitored tables.
    pub fn snapshot(&self) -> Snapshot {
        self.shared
            .cache
            .read()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Waits until `pred` holds for the cache, at most `timeout`; returns
    /// whether it did.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&Snapshot) -> bool) -> bool {
        let mut rx = self.shared.version.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if pred(&self.snapshot()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return pred(&self.snapshot()),
            }
        }
    }

    async fn ensure_conn(&self) -> Result<()> {
        let mut guard = self.conn.lock().await;
        if guard
            .as_ref()
            .is_some_and(|c| c.alive.load(Ordering::SeqCst))
        {
            return Ok(());
        }
        *guard = None;
        let stream = UnixStream::connect(&self.path)
            .await
            .map_err(|source| Error::Connect {
                path: self.path.clone(),
                source,
            })?;
        let (rd, wr) = stream.into_split();
        let writer = Arc::new(Mutex::new(wr));
        let pending: Pending = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let monitor_req = self.next_id.fetch_add(1, Ordering::SeqCst);
        let reader = tokio::spawn(read_loop(
            rd,
            writer.clone(),
            pending.clone(),
            alive.clone(),
            self.shared.clone(),
            monitor_req,
        ));
        let view = ConnView {
            writer: writer.clone(),
            pending: pending.clone(),
            alive: alive.clone(),
        };
        let conn = Conn {
            writer,
            pending,
            alive,
            reader,
        };
        // Monitor every column of the tables we use; the reply (applied to
        // the cache by the reader, in order with later updates) is the
        // initial content.
        let mut reqs = serde_json::Map::new();
        for t in MONITORED {
            reqs.insert(t.to_string(), json!({}));
        }
        let params = json!([DB, MONITOR_ID, reqs]);
        let reply = view.call(monitor_req, "monitor", params).await?;
        if reply.get("result").is_none_or(|r| !r.is_object()) {
            return Err(Error::Protocol(format!("monitor reply {reply}")));
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        debug!(path = %self.path.display(), "Connected to ovsdb-server.");
        *guard = Some(conn);
        Ok(())
    }

    /// Sends `method(params)` and returns the reply's `result`,
    /// (re)connecting first when needed. A request that could not be sent
    /// on a connection found dead is retried once on a fresh connection
    /// (a connection's end is noticed only when its reader runs, which on a
    /// current-thread runtime may be no earlier than this call).
    pub async fn request(&self, method: &str, params: Value) -> Result<Value> {
        match self.request_once(method, params.clone()).await {
            Err(Error::NotSent) => {}
            Err(Error::Disconnected) if method == "echo" => {}
            other => return other,
        }
        debug!(method, "ovsdb connection was dead; reconnecting");
        match self.request_once(method, params).await {
            Err(Error::NotSent) => Err(Error::Disconnected),
            other => other,
        }
    }

    async fn request_once(&self, method: &str, params: Value) -> Result<Value> {
        self.ensure_conn().await?;
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let view = {
            let g = self.conn.lock().await;
            let c = g.as_ref().ok_or(Error::Disconnected)?;
            ConnView {
                writer: c.writer.clone(),
                pending: c.pending.clone(),
                alive: c.alive.clone(),
            }
        };
        let reply = view.call(id, method, params).await;
        if matches!(reply, Err(Error::Disconnected | Error::NotSent)) {
            view.alive.store(false, Ordering::SeqCst);
            let mut g = self.conn.lock().await;
            if g.as_ref().is_some_and(|c| !c.alive.load(Ordering::SeqCst)) {
                *g = None;
            }
        }
        let reply = reply?;
        Ok(reply.get("result").cloned().unwrap_or(Value::Null))
    }

    /// `echo`: a liveness probe.
    pub async fn echo(&self) -> Result<()> {
        let r = self.request("echo", json!(["socketplane"])).await?;
        if r == json!(["socketplane"]) {
            Ok(())
        } else {
            Err(Error::Protocol(format!("echo returned {r}")))
        }
    }

    /// `list_dbs`.
    pub async fn list_dbs(&self) -> Result<Vec<String>> {
        let r = self.request("list_dbs", json!([])).await?;
        Ok(r.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Runs `ops` as one transaction on [`DB`]; returns each operation's
    /// result. Any failed operation fails the whole call.
    pub async fn transact(&self, ops: Vec<Value>) -> Result<Vec<Value>> {
        let n = ops.len();
        let mut params = vec![json!(DB)];
        params.extend(ops);
        let r = self.request("transact", Value::Array(params)).await?;
        let results = r
            .as_array()
            .cloned()
            .ok_or_else(|| Error::Protocol(format!("transact returned {r}")))?;
        for (index, res) in results.iter().enumerate() {
            if let Some(e) = res.get("error").filter(|e| !e.is_null()) {
                return Err(Error::Transaction {
                    index,
                    error: e
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| e.to_string()),
                    details: res
                        .get("details")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                });
            }
        }
        if results.len() < n {
            return Err(Error::Protocol(format!(
                "transact returned {} results for {n} operations",
                results.len()
            )));
        }
        Ok(results)
    }

    /// The UUID of the row inserted by operation `index` of a transaction result.
    pub fn inserted_uuid(results: &[Value], index: usize) -> Option<String> {
        results
            .get(index)
            .and_then(|r| r.get("uuid"))
            .and_then(atom::as_uuid)
    }
}

struct ConnView {
    writer: Arc<Mutex<OwnedWriteHalf>>,
    pending: Pending,
    alive: Arc<AtomicBool>,
}

impl ConnView {
    async fn call(&self, id: u64, method: &str, params: Value) -> Result<Value> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, tx);
        }
        if !self.alive.load(Ordering::SeqCst) {
            return Err(Error::NotSent);
        }
        let msg = json!({"method": method, "params": params, "id": id});
        if let Err(e) = write_msg(&self.writer, &msg).await {
            self.alive.store(false, Ordering::SeqCst);
            debug!(error = %e, "ovsdb write failed");
            return Err(Error::NotSent);
        }
        let reply = match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => return Err(Error::Disconnected),
            Err(_) => {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&id);
                }
                return Err(Error::Timeout(method.into()));
            }
        };
        match reply.get("error") {
            None | Some(Value::Null) => Ok(reply),
            Some(e) => Err(Error::Rpc {
                method: method.into(),
                error: e.to_string(),
            }),
        }
    }
}
