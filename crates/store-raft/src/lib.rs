//! The embedded store backend: a Raft-replicated key-value store (openraft +
//! redb) inside the agent.
//!
//! Every node keeps the whole key space in memory (the store's own state
//! machine, `socketplane_store::kv::KvState`), applied from the Raft log;
//! the log, the vote and snapshots of the state are persisted in redb with a
//! durable commit before anything is acknowledged. Writes (transactions,
//! lease operations) are forwarded to the leader; reads are linearizable
//! (confirmed by the leader, then served from the local state once it has
//! applied at least the leader's commit index). Watches are served from the
//! local state with a bounded history.
//!
//! Nodes talk HTTP under `/raft/v1/` on the cluster port: mount
//! [`EmbeddedStore::router`] there, behind a server that admits only
//! authenticated members (the agent's cluster port); peers are dialled over
//! TLS with [`EmbeddedConfig::tls`] (plain HTTP for an `--open` cluster).
//!
//! # Use
//!
//! ```ignore
//! let store = EmbeddedStore::open(EmbeddedConfig::new(id, "default", data_dir.join("store"), advertise)).await?;
//! let app = store.router().merge(other_cluster_routes);     // serve on the cluster port
//! if !store.is_member() {
//!     if bootstrap { store.bootstrap().await? } else { store.join(seed).await? }
//! }
//! let store: Arc<dyn Store> = store;                         // the rest of the agent
//! // on exit: store.shutdown().await (closes the database)
//! ```
//!
//! # Guarantees
//!
//! - Writes are acknowledged only after a quorum persisted them (redb
//!   commit with fsync). Writes that arrive while others are in flight are
//!   proposed together as one log entry (group commit: one fsync per node
//!   for the batch). A compare that the applied state already refutes
//!   fails without a log entry (see `forward::refuted`); on the leader, a
//!   compare on a key that an unanswered proposal may write first waits
//!   for that proposal, so the losers of a compare-and-set race fail
//!   without a log entry too (see `forward::enqueue`).
//! - A write whose outcome cannot be known (the leader died mid-request, no
//!   quorum within `request_timeout`) fails with `Unavailable`; it may still
//!   have been applied. Writes refused before being proposed are retried
//!   transparently against the new leader.
//! - One state machine: the log carries `socketplane_store::kv` commands
//!   and every node applies them to a `KvState`, the same code `MemStore`
//!   runs, so both backends agree by construction.
//! - Leases run on the leader's clock: grants and expiry are replicated
//!   with the leader's time, so a lease expires `ttl` after its last
//!   keep-alive. Keep-alives renew on the leader (after a heartbeat quorum
//!   confirmed it leads) without a log entry; a renewed deadline is
//!   replicated only when the old one is reached. A new leader first gives
//!   every lease a fresh TTL.
//! - Voters: the founder, then joiners while there are fewer than
//!   `max_voters`; later nodes are replicas. The leader promotes a caught-up
//!   live replica when a voter is missing or has been unreachable for
//!   `replace_after` (the dead voter stays as a replica).
//!
//! openraft logs unreachable peers at ERROR level every retry; filter the
//! `openraft` target (e.g. `openraft=off`) in the agent's log settings.

// openraft's error types (mandated by its storage traits) and axum's
// response are large; boxing them would only add noise.
#![allow(clippy::result_large_err)]

//! # Modules
//!
//! Lower modules never import higher ones:
//! `types`, `wire`, `error` (shared types) ← `config`, `storage` (redb),
//! `sm` (openraft glue over `kv`), `network` (peer client) ← `shared` (what a
//! node shares) ← `reads` (linearizable reads), `leases` (lease clock),
//! `membership` ← `forward` (writes on the leader) ← `node` (open, handle,
//! shutdown) ← `store_api` (the `Store` trait), `http` (the routes).

mod config;
mod elect;
mod error;
mod forward;
mod http;
mod leases;
mod membership;
mod network;
mod node;
mod reads;
#[cfg(test)]
mod refute_proptest;
mod shared;
mod sm;
mod storage;
mod store_api;
mod types;
mod wire;
#[cfg(test)]
mod wire_proptest;

pub use config::{EmbeddedConfig, RaftTiming};
pub use http::{MAX_BODY, MAX_SNAPSHOT_BODY};
pub use network::ReplicationStats;
pub use node::{EmbeddedStore, RaftProgress};
pub use storage::LogWriteStats;
pub use types::NodeId;
