//! Crash-safe persistence in redb: the Raft log, the vote, the commit index
//! and which file holds the latest state-machine snapshot.
//!
//! The snapshot is a file of its own (`snapshot-<n>.json` beside the
//! database), written, synced and renamed before the database names it:
//! as a redb value of several MB it made the file grow to several times
//! the data (redb allocates large values in power-of-two blocks). Stores
//! from before keep theirs inline (`snapshot_data`) until the next one.
//!
//! One writer thread owns the database and group-commits whatever is queued
//! (several appends from concurrent proposals become one durable commit).
//! The log is also kept in memory (it is bounded by snapshots and purging),
//! so reads never touch the disk.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogId, RaftLogReader};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::error::Error;
use crate::types::{
    storage_err, Entry, LogId, NodeId, SnapshotMeta, StorageError, TypeConfig, Vote,
};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const FORMAT: &[u8] = b"socketplane-store-raft/1";
const K_FORMAT: &str = "format";
const K_CLUSTER: &str = "cluster";
const K_NODE: &str = "node_id";
const K_VOTE: &str = "vote";
const K_COMMITTED: &str = "committed";
const K_PURGED: &str = "last_purged";
const K_SNAP_META: &str = "snapshot_meta";
const K_SNAP_DATA: &str = "snapshot_data";
/// The file name (in the database's directory) of the latest snapshot.
const K_SNAP_FILE: &str = "snapshot_file";
const SNAP_PREFIX: &str = "snapshot-";
/// redb's page cache. Its default (1 GiB) kept every page read at start
/// in memory: at 10,000 endpoints about 15 MB per agent, read once, and
/// 4 MiB was still full at 10,000 endpoints. The log is kept in memory
/// anyway and the snapshot is a file of its own, so the cache serves only
/// writes, which touch the log table's newest and oldest pages.
const CACHE_BYTES: usize = 1 << 20;

/// Everything read back from the database at open.
pub(crate) struct Loaded {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub last_purged: Option<LogId>,
    pub entries: BTreeMap<u64, Entry>,
    /// The stored size of `entries`.
    pub log_bytes: u64,
    pub snapshot: Option<(SnapshotMeta, Vec<u8>)>,
}

/// Maps a redb error of any kind to ours, naming what was being done.
fn db_err<E: Into<redb::Error>>(what: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Database {
        what,
        source: e.into(),
    }
}

fn encode<T: serde::Serialize>(v: &T, what: &'static str) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(v).map_err(|source| storage_err(&Error::Encode { what, source }))
}

/// Opens (or creates) the database, checks it belongs to this cluster and
/// node, and loads its contents.
pub(crate) fn open_db(
    path: &Path,
    cluster: &str,
    node_id: NodeId,
) -> Result<(Database, Loaded), Error> {
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| match e {
            // Another process holds the file lock: nothing is wrong with the data.
            redb::DatabaseError::DatabaseAlreadyOpen => Error::InUse {
                path: path.to_path_buf(),
            },
            e => db_err("open")(e),
        })?;
    let rtx = db.begin_read().map_err(db_err("read transaction"))?;
    let meta = match rtx.open_table(META) {
        Ok(t) => Some(t),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(db_err("meta table")(e)),
    };
    let get = |k: &str| -> Result<Option<Vec<u8>>, Error> {
        match &meta {
            None => Ok(None),
            Some(t) => Ok(t
                .get(k)
                .map_err(db_err("meta table"))?
                .map(|v| v.value().to_vec())),
        }
    };
    match get(K_FORMAT)? {
        None => {
            let tables = rtx.list_tables().map_err(db_err("list tables"))?.count();
            if tables > 0 {
                return Err(Error::Corrupt(format!(
                    "{} is not a socketplane store database",
                    path.display()
                )));
            }
            drop(meta);
            drop(rtx);
            let mut w = db.begin_write().map_err(db_err("initialize"))?;
            w.set_durability(Durability::Immediate);
            {
                let mut t = w.open_table(META).map_err(db_err("initialize"))?;
                t.insert(K_FORMAT, FORMAT).map_err(db_err("initialize"))?;
                t.insert(K_CLUSTER, cluster.as_bytes())
                    .map_err(db_err("initialize"))?;
                t.insert(K_NODE, node_id.to_string().as_bytes())
                    .map_err(db_err("initialize"))?;
                w.open_table(LOG).map_err(db_err("initialize"))?;
            }
            w.commit().map_err(db_err("initialize"))?;
            let loaded = Loaded {
                vote: None,
                committed: None,
                last_purged: None,
                entries: BTreeMap::new(),
                log_bytes: 0,
                snapshot: None,
            };
            return Ok((db, loaded));
        }
        Some(f) if f != FORMAT => {
            return Err(Error::Corrupt(format!(
                "{}: unknown format {:?}",
                path.display(),
                String::from_utf8_lossy(&f)
            )))
        }
        Some(_) => {}
    }
    let stored_cluster = get(K_CLUSTER)?.unwrap_or_default();
    if stored_cluster != cluster.as_bytes() {
        return Err(Error::Corrupt(format!(
            "data dir belongs to cluster {:?}, not {:?}",
            String::from_utf8_lossy(&stored_cluster),
            cluster
        )));
    }
    let stored_node = get(K_NODE)?.unwrap_or_default();
    if stored_node != node_id.to_string().as_bytes() {
        return Err(Error::Corrupt(format!(
            "data dir belongs to node {}, not {}",
            String::from_utf8_lossy(&stored_node),
            node_id
        )));
    }
    fn de<T: serde::de::DeserializeOwned>(
        v: Option<Vec<u8>>,
        what: &'static str,
    ) -> Result<Option<T>, Error> {
        match v {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| Error::Decode { what, source }),
        }
    }
    let vote: Option<Vote> = de(get(K_VOTE)?, "vote")?;
    let committed: Option<LogId> = de(get(K_COMMITTED)?, "commit index")?;
    let last_purged: Option<LogId> = de(get(K_PURGED)?, "purge marker")?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let snapshot = read_snapshot(&rtx, dir)?;
    remove_other_snapshots(dir, get(K_SNAP_FILE)?.as_deref());
    let mut entries = BTreeMap::new();
    let mut log_bytes = 0;
    let log = rtx.open_table(LOG).map_err(db_err("log table"))?;
    for item in log.iter().map_err(db_err("log table"))? {
        let (k, v) = item.map_err(db_err("log table"))?;
        log_bytes += v.value().len() as u64;
        // Entries of the first format (before the log carried
        // `socketplane_store::kv` commands) decode as the same commands.
        let entry: Entry = serde_json::from_slice(v.value()).map_err(|source| Error::Decode {
            what: "log entry",
            source,
        })?;
        if entry.log_id.index != k.value() {
            return Err(Error::Corrupt(format!(
                "log entry {} stored at index {}",
                entry.log_id.index,
                k.value()
            )));
        }
        entries.insert(k.value(), entry);
    }
    drop(log);
    drop(meta);
    drop(rtx);
    Ok((
        db,
        Loaded {
            vote,
            committed,
            last_purged,
            entries,
            log_bytes,
            snapshot,
        },
    ))
}

/// A write's outcome, shared by every op of its batch.
type WriteResult = Result<(), Arc<Error>>;
type Ack = oneshot::Sender<WriteResult>;

enum WriteOp {
    Append(Vec<(u64, Vec<u8>)>, LogFlushed<TypeConfig>),
    Meta(&'static str, Vec<u8>, Option<Ack>),
    /// Delete log entries with index >= the given one.
    Truncate(u64, Ack),
    /// Delete log entries with index <= the given one and record the marker.
    Purge(u64, Vec<u8>, Ack),
    Snapshot(Vec<u8>, Vec<u8>, Ack),
}

/// What the writer thread did so far: how many durable commits (fsyncs)
/// it took to persist how many log entries.
#[derive(Debug, Default)]
pub(crate) struct WriteCounters {
    durable_commits: AtomicU64,
    entries: AtomicU64,
    /// Bytes of log appended since the last snapshot was saved (at open:
    /// the log read back), and that snapshot's size: what decides when
    /// the next one is due (see `node::snapshot_upkeep`).
    log_bytes_since_snapshot: AtomicU64,
    snapshot_bytes: AtomicU64,
    snapshots_saved: AtomicU64,
}

/// A snapshot of [`WriteCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogWriteStats {
    /// redb commits with `Durability::Immediate`, i.e. fsyncs.
    pub durable_commits: u64,
    /// Log entries appended.
    pub entries: u64,
}

/// A handle to the writer thread.
#[derive(Clone)]
pub(crate) struct Writer {
    /// For reads (every write goes through the thread); `None` once
    /// stopped, so that the file is closed when the thread ends.
    db: Arc<Mutex<Option<Arc<Database>>>>,
    tx: Arc<Mutex<Option<mpsc::Sender<WriteOp>>>>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    counters: Arc<WriteCounters>,
    /// Where the snapshot files are.
    dir: Arc<PathBuf>,
}

impl Writer {
    /// `dir`: the database's directory, for the snapshot files.
    pub fn spawn(db: Database, dir: PathBuf) -> Self {
        let (tx, rx) = mpsc::channel::<WriteOp>();
        let counters = Arc::new(WriteCounters::default());
        let c = counters.clone();
        let db = Arc::new(db);
        let written = db.clone();
        let dir = Arc::new(dir);
        let files = dir.clone();
        let thread = std::thread::Builder::new()
            .name("store-raft-writer".into())
            .spawn(move || writer_loop(written, &files, rx, &c))
            .ok();
        Self {
            db: Arc::new(Mutex::new(Some(db))),
            tx: Arc::new(Mutex::new(Some(tx))),
            thread: Arc::new(Mutex::new(thread)),
            counters,
            dir,
        }
    }

    /// Starts the size counters from what was read back at open.
    pub fn note_loaded(&self, log_bytes: u64, snapshot_bytes: u64) {
        let c = &self.counters;
        c.log_bytes_since_snapshot
            .store(log_bytes, Ordering::Relaxed);
        c.snapshot_bytes.store(snapshot_bytes, Ordering::Relaxed);
    }

    /// Bytes of log written since the last snapshot, its size, and how
    /// many snapshots were saved since open.
    pub fn log_and_snapshot_bytes(&self) -> (u64, u64, u64) {
        let c = &self.counters;
        (
            c.log_bytes_since_snapshot.load(Ordering::Relaxed),
            c.snapshot_bytes.load(Ordering::Relaxed),
            c.snapshots_saved.load(Ordering::Relaxed),
        )
    }

    pub fn stats(&self) -> LogWriteStats {
        LogWriteStats {
            durable_commits: self.counters.durable_commits.load(Ordering::Relaxed),
            entries: self.counters.entries.load(Ordering::Relaxed),
        }
    }

    fn send(&self, op: WriteOp) -> Result<(), StorageError> {
        let g = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        match g.as_ref() {
            Some(tx) => tx.send(op).map_err(|_| storage_err(&Error::WriterStopped)),
            None => Err(storage_err(&Error::WriterStopped)),
        }
    }

    async fn send_wait(&self, f: impl FnOnce(Ack) -> WriteOp) -> Result<(), StorageError> {
        let (ack, rx) = oneshot::channel();
        self.send(f(ack))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(storage_err(&*e)),
            Err(_) => Err(storage_err(&Error::WriterStopped)),
        }
    }

    pub async fn save_snapshot(
        &self,
        meta: &SnapshotMeta,
        data: &[u8],
    ) -> Result<(), StorageError> {
        let m = encode(meta, "snapshot metadata")?;
        let d = data.to_vec();
        self.send_wait(|ack| WriteOp::Snapshot(m, d, ack)).await
    }

    /// The last snapshot saved, read from the file: it is sent rarely (to
    /// a new or far-behind node) and would otherwise stay in memory, the
    /// size of the whole state.
    pub async fn load_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let db = db.ok_or_else(|| storage_err(&Error::WriterStopped))?;
        let dir = self.dir.clone();
        let read = move || {
            // A snapshot saved meanwhile removes the file an older read
            // transaction names: read again, and see the new one.
            let mut tries = 0;
            loop {
                let rtx = db.begin_read().map_err(db_err("read transaction"))?;
                match read_snapshot(&rtx, &dir) {
                    Err(Error::SnapshotFile { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound && tries < 3 =>
                    {
                        tries += 1;
                    }
                    r => return r,
                }
            }
        };
        match tokio::task::spawn_blocking(read).await {
            Ok(r) => r.map_err(|e| storage_err(&e)),
            Err(e) => Err(storage_err(&Error::Task(e))),
        }
    }

    /// Stops the writer thread after it finished what is queued, closing
    /// the database.
    pub fn stop(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.db.lock().unwrap_or_else(|e| e.into_inner()).take();
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// Group commit: whatever queued up while the previous commit was being
/// fsynced (appends from concurrent proposals, which openraft also hands
/// over in batches) goes into one redb transaction and one fsync.
fn writer_loop(
    db: Arc<Database>,
    dir: &Path,
    rx: mpsc::Receiver<WriteOp>,
    counters: &WriteCounters,
) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < 1024 {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let durable = ops
            .iter()
            .any(|op| !matches!(op, WriteOp::Meta(_, _, None)));
        let res: WriteResult = write_batch(&db, dir, &ops, durable).map_err(Arc::new);
        if res.is_ok() {
            let entries: usize = ops
                .iter()
                .map(|op| match op {
                    WriteOp::Append(rows, _) => rows.len(),
                    _ => 0,
                })
                .sum();
            counters
                .entries
                .fetch_add(entries as u64, Ordering::Relaxed);
            for op in &ops {
                match op {
                    WriteOp::Append(rows, _) => {
                        let bytes: usize = rows.iter().map(|(_, d)| d.len()).sum();
                        counters
                            .log_bytes_since_snapshot
                            .fetch_add(bytes as u64, Ordering::Relaxed);
                    }
                    WriteOp::Snapshot(_, d, _) => {
                        counters
                            .log_bytes_since_snapshot
                            .store(0, Ordering::Relaxed);
                        counters
                            .snapshot_bytes
                            .store(d.len() as u64, Ordering::Relaxed);
                        counters.snapshots_saved.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            if durable {
                counters.durable_commits.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Err(e) = &res {
            tracing::error!(error = %crate::error::chain(&**e), "Failed to persist the raft log.");
        }
        for op in ops {
            match op {
                WriteOp::Append(_, cb) => {
                    cb.log_io_completed(res.clone().map_err(std::io::Error::other))
                }
                WriteOp::Meta(_, _, ack) => {
                    if let Some(ack) = ack {
                        let _ = ack.send(res.clone());
                    }
                }
                WriteOp::Truncate(_, ack)
                | WriteOp::Purge(_, _, ack)
                | WriteOp::Snapshot(_, _, ack) => {
                    let _ = ack.send(res.clone());
                }
            }
        }
    }
    drop(db);
}

fn write_batch(db: &Database, dir: &Path, ops: &[WriteOp], durable: bool) -> Result<(), Error> {
    // The last snapshot of the batch is the one that counts; its file is
    // on disk before the transaction names it.
    let snapshot = ops.iter().rev().find_map(|op| match op {
        WriteOp::Snapshot(m, d, _) => Some((m, d)),
        _ => None,
    });
    let snapshot = match snapshot {
        Some((m, d)) => Some((m, write_snapshot_file(dir, d)?)),
        None => None,
    };
    let named = snapshot.as_ref().map(|(m, f)| (m.as_slice(), f.as_str()));
    write_tables(db, ops, durable, named).map_err(db_err("write"))?;
    if let Some((_, file)) = &snapshot {
        remove_other_snapshots(dir, Some(file.as_bytes()));
    }
    Ok(())
}

fn write_tables(
    db: &Database,
    ops: &[WriteOp],
    durable: bool,
    snapshot: Option<(&[u8], &str)>,
) -> Result<(), redb::Error> {
    let mut w = db.begin_write()?;
    w.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    });
    {
        let mut log = w.open_table(LOG)?;
        let mut meta = w.open_table(META)?;
        for op in ops {
            match op {
                WriteOp::Append(entries, _) => {
                    for (i, data) in entries {
                        log.insert(*i, data.as_slice())?;
                    }
                }
                WriteOp::Meta(k, v, _) => {
                    meta.insert(*k, v.as_slice())?;
                }
                WriteOp::Truncate(from, _) => {
                    log.retain_in(*from.., |_, _| false)?;
                }
                WriteOp::Purge(upto, marker, _) => {
                    log.retain_in(..=*upto, |_, _| false)?;
                    meta.insert(K_PURGED, marker.as_slice())?;
                }
                WriteOp::Snapshot(..) => {}
            }
        }
        if let Some((m, file)) = snapshot {
            meta.insert(K_SNAP_FILE, file.as_bytes())?;
            meta.insert(K_SNAP_META, m)?;
            meta.remove(K_SNAP_DATA)?;
        }
    }
    w.commit()?;
    Ok(())
}

/// The snapshot in `rtx` (metadata and data, from one transaction, so
/// they always belong together).
fn read_snapshot(
    rtx: &redb::ReadTransaction,
    dir: &Path,
) -> Result<Option<(SnapshotMeta, Vec<u8>)>, Error> {
    let meta = match rtx.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(db_err("meta table")(e)),
    };
    let get = |k: &str| -> Result<Option<Vec<u8>>, Error> {
        Ok(meta
            .get(k)
            .map_err(db_err("meta table"))?
            .map(|v| v.value().to_vec()))
    };
    let Some(m) = get(K_SNAP_META)? else {
        return Ok(None);
    };
    let m: SnapshotMeta = serde_json::from_slice(&m).map_err(|source| Error::Decode {
        what: "snapshot metadata",
        source,
    })?;
    let data = match get(K_SNAP_FILE)? {
        Some(name) => {
            let path = dir.join(String::from_utf8_lossy(&name).as_ref());
            std::fs::read(&path).map_err(|source| Error::SnapshotFile { path, source })?
        }
        None => get(K_SNAP_DATA)?.ok_or_else(|| Error::Corrupt("snapshot data missing".into()))?,
    };
    Ok(Some((m, data)))
}

/// Writes a snapshot file durably (synced, renamed into place, directory
/// synced) and returns its name.
fn write_snapshot_file(dir: &Path, data: &[u8]) -> Result<String, Error> {
    use std::io::Write;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!("{SNAP_PREFIX}{nanos}.json");
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::SnapshotFile { path, source }
    };
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(data).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(name)
}

/// Deletes snapshot files other than `keep`: the one replaced, or one a
/// crash left before the database named it.
fn remove_other_snapshots(dir: &Path, keep: Option<&[u8]>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(SNAP_PREFIX) && keep != Some(name.as_bytes()) {
            if let Err(error) = std::fs::remove_file(e.path()) {
                tracing::warn!(%error, file = %e.path().display(), "Could not remove an old snapshot file.");
            }
        }
    }
}

pub(crate) struct LogMem {
    pub entries: BTreeMap<u64, Entry>,
    pub last_purged: Option<LogId>,
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
}

/// The openraft log storage (and its reader).
#[derive(Clone)]
pub(crate) struct LogStore {
    mem: Arc<Mutex<LogMem>>,
    writer: Writer,
}

impl LogStore {
    pub fn new(loaded: &mut Loaded, writer: Writer) -> Self {
        Self {
            mem: Arc::new(Mutex::new(LogMem {
                entries: std::mem::take(&mut loaded.entries),
                last_purged: loaded.last_purged,
                vote: loaded.vote,
                committed: loaded.committed,
            })),
            writer,
        }
    }

    /// The id of the last entry this node holds (or last purged).
    pub fn last_log_id(&self) -> Option<LogId> {
        let g = self.lock();
        g.entries
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(g.last_purged)
    }

    /// What the entries from `from` on hold, one line each (diagnostics).
    pub fn describe_from(&self, from: u64) -> Vec<String> {
        self.lock()
            .entries
            .range(from..)
            .map(|(i, e)| {
                let what = match &e.payload {
                    openraft::EntryPayload::Normal(cmd) => format!("{cmd:?}"),
                    other => format!("{other:?}"),
                };
                format!("{i} {}: {what}", e.get_log_id().leader_id)
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogMem> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        if let (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) =
            (start, end)
        {
            if s > e {
                return Ok(Vec::new());
            }
        }
        let g = self.lock();
        Ok(g.entries
            .range((start, end))
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.lock().last_purged;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: self.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let v = encode(vote, "vote")?;
        self.writer
            .send_wait(|ack| WriteOp::Meta(K_VOTE, v, Some(ack)))
            .await?;
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let v = encode(&committed, "commit index")?;
        self.writer.send(WriteOp::Meta(K_COMMITTED, v, None))?;
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut rows = Vec::new();
        {
            let mut g = self.lock();
            for e in entries {
                rows.push((e.log_id.index, encode(&e, "log entry")?));
                g.entries.insert(e.log_id.index, e);
            }
        }
        self.writer.send(WriteOp::Append(rows, callback))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut g = self.lock();
            let _ = g.entries.split_off(&log_id.index);
        }
        self.writer
            .send_wait(|ack| WriteOp::Truncate(log_id.index, ack))
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut g = self.lock();
            let keep = g.entries.split_off(&(log_id.index + 1));
            g.entries = keep;
            g.last_purged = Some(log_id);
        }
        let marker = encode(&log_id, "purge marker")?;
        self.writer
            .send_wait(|ack| WriteOp::Purge(log_id.index, marker, ack))
            .await
    }
}
