//! Client writes: every one runs on the leader. A follower forwards it
//! there, retrying only while that is safe, and waits until it applied the
//! result itself (read your writes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use socketplane_store::kv::{self, Command, KvState};
use socketplane_store::{Op, StoreError, Txn, TxnResult};
use tokio::sync::oneshot;

use crate::error::Error;
use crate::leases::Leases;
use crate::shared::{lock, Core, Queued};
use crate::types::Outcome;
use crate::wire::{ClientRequest, ForwardResult, WireError};

/// The failed result of a txn whose compares this node's applied state
/// already refutes, with the last applied log index; `None` if the txn
/// must go through the log.
///
/// Safe on any node, however far behind its applied state is: a key's mod
/// revision only moves forward. Every write sets it to a new cluster
/// revision, higher than all before; a delete drops it to 0, and a later
/// re-create sets it higher again. So once some applied state shows the
/// key at mod revision `m > r` for a compare on `r > 0`, the key was
/// written after `r` in the committed history, and no state from now on
/// (in particular the leader's freshest one) can show it at `r` again: a
/// stale check rejects only what a fresh one would also reject, and the
/// failure is linearizable at the moment of the check. The other failing
/// cases are not decided here, because a fresher state could make them
/// hold: a key absent here may have been written at `r` since (`r > 0`),
/// and a key present here may have been deleted since (`r == 0`). They go
/// through the log, where the leader evaluates them in order.
pub(crate) fn refuted(core: &Core, txn: &Txn) -> Option<(TxnResult, u64)> {
    let g = core.sm.lock();
    refutes(&g.state, txn).then(|| {
        (
            TxnResult {
                succeeded: false,
                revision: g.state.revision(),
            },
            g.last_applied.map_or(0, |l| l.index),
        )
    })
}

/// Whether `state` shows a compare of `txn` can never hold again: a key
/// compared at a revision `r > 0` was since written at a higher one.
pub(crate) fn refutes(state: &KvState, txn: &Txn) -> bool {
    txn.compares.iter().any(|c| {
        c.mod_revision > 0 && state.get(&c.key).map_or(0, |kv| kv.mod_revision) > c.mod_revision
    })
}

/// Executes a client request on this node, which must be the leader.
pub(crate) async fn execute(
    core: &Arc<Core>,
    leases: &Leases,
    req: ClientRequest,
) -> ForwardResult {
    if core.is_stopped() {
        // Nothing was proposed: the caller may retry elsewhere.
        return Err(WireError::NotLeader { leader: None });
    }
    if let ClientRequest::LeaseKeepAlive(id) = &req {
        // No log entry: confirm with a heartbeat quorum that this node
        // still leads (a deposed leader must not accept renewals), then
        // renew in memory (see `leases`).
        core.raft.ensure_linearizable().await.map_err(|e| match e {
            openraft::error::RaftError::APIError(
                openraft::error::CheckIsLeaderError::ForwardToLeader(_),
            ) => core.not_leader(),
            e => WireError::Unavailable(e.to_string()),
        })?;
        leases.renew(core, *id).await?;
        let index = core.sm.lock().last_applied.map_or(0, |l| l.index);
        return Ok((kv::Response::Done, index));
    }
    let rx = match req {
        ClientRequest::Txn(mut txn) => {
            // The term's lease clock starts (one `RefreshLeases` entry)
            // before its first write, not at some later housekeeping tick
            // between writes.
            leases.now_ms(core).await?;
            let mut waits = 0;
            loop {
                // The leader's state is the freshest: a compare its sender
                // could not refute (it was behind) may fail here without a
                // log entry.
                if let Some((r, index)) = refuted(core, &txn) {
                    return Ok((kv::Response::Txn(r), index));
                }
                // Deferred again while another writer of a compared key is
                // unanswered (the last one may have lost its own race), a
                // bounded number of times so a stream of writers cannot
                // starve it.
                match enqueue(core, Command::Txn(txn), waits < MAX_DEFERRALS) {
                    Ok(rx) => break rx,
                    Err((Command::Txn(t), writer)) => {
                        txn = t;
                        await_answered(core, writer).await;
                        waits += 1;
                    }
                    Err(_) => return Err(no_queue()),
                }
            }
        }
        req => {
            let cmd = leases.command(core, req).await?;
            enqueue(core, cmd, false).map_err(|_| no_queue())?
        }
    };
    let (outcome, index) = answer(rx).await?;
    outcome.map(|r| (r, index)).map_err(WireError::from)
}

/// Proposals in flight at once; more wait and go together in the next.
const MAX_IN_FLIGHT: usize = 2;
/// Commands in one batch entry at most.
const MAX_BATCH: usize = 512;
/// How often a transaction waits for other writers of its keys at most.
const MAX_DEFERRALS: usize = 8;

/// The keys `cmd` writes if it succeeds (only transactions are tracked:
/// a missed writer only costs a log entry, never a wrong answer).
fn writes_of(cmd: &Command) -> Vec<String> {
    let Command::Txn(txn) = cmd else {
        return Vec::new();
    };
    let mut keys: Vec<String> = txn
        .ops
        .iter()
        .map(|op| match op {
            Op::Put { key, .. } | Op::Delete { key } => key.clone(),
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The keys `txn` compares at a revision `refuted` could rule out.
fn refutable_keys(cmd: &Command) -> impl Iterator<Item = &str> {
    let compares = match cmd {
        Command::Txn(txn) => txn.compares.as_slice(),
        _ => &[],
    };
    compares
        .iter()
        .filter(|c| c.mod_revision > 0)
        .map(|c| c.key.as_str())
}

/// Where a queued command's outcome arrives.
type AnswerRx = oneshot::Receiver<Result<(Outcome, u64), WireError>>;

/// Queues `cmd` for the next proposal (group commit, see
/// [`drive_proposals`]). With `defer`, a transaction comparing a key that
/// an unanswered proposal may write is not queued: it comes back with that
/// proposal's sequence number, to wait for it ([`await_answered`]).
///
/// Under contention the losers of a compare-and-set race arrive while the
/// winner's write is in flight: their compares still hold on the applied
/// state, but will not once it is applied. Waiting for it (no longer than
/// the proposal they would have joined takes) lets `refuted` fail them
/// without a log entry, and keeps the pipeline free for writes that can
/// succeed. Waiting decides nothing by itself: a writer that failed or
/// was never committed leaves the compare holding, and the txn is
/// proposed as before (or waits for the next writer). The check and the
/// queueing happen under one lock, so of the transactions racing on one
/// key only the first is queued.
fn enqueue(core: &Arc<Core>, cmd: Command, defer: bool) -> Result<AnswerRx, (Command, u64)> {
    let (tx, rx) = oneshot::channel();
    let writes = writes_of(&cmd);
    let drive = {
        let mut q = lock(&core.proposals);
        if defer {
            if let Some(writer) = q.last_writer(refutable_keys(&cmd)) {
                return Err((cmd, writer));
            }
        }
        let seq = q.next_seq;
        q.next_seq += 1;
        q.pending.insert(seq);
        for k in &writes {
            q.writers.insert(k.clone(), seq);
        }
        q.waiting.push(Queued {
            cmd,
            reply: tx,
            seq,
            writes,
        });
        let drive = q.in_flight < MAX_IN_FLIGHT;
        if drive {
            q.in_flight += 1;
        }
        drive
    };
    if drive {
        tokio::spawn(drive_proposals(core.clone()));
    }
    Ok(rx)
}

/// Waits until every proposal queued up to `seq` has been answered (and
/// so, if it succeeded, applied here).
async fn await_answered(core: &Core, seq: u64) {
    loop {
        // Registered before the check: a wake-up in between is not lost.
        let answered = core.answered.notified();
        if lock(&core.proposals).answered_up_to(seq) {
            return;
        }
        answered.await;
    }
}

fn no_queue() -> WireError {
    WireError::Unavailable("proposal not queued".into())
}

/// A queued command's outcome and the index of its log entry.
async fn answer(rx: AnswerRx) -> Result<(Outcome, u64), WireError> {
    rx.await.unwrap_or_else(|_| {
        Err(WireError::Unavailable(
            "proposal dropped; outcome unknown".into(),
        ))
    })
}

/// Proposes what is waiting, batch after batch, until nothing is.
///
/// openraft 0.9 appends each proposal on its own and waits for its flush
/// before it takes the next, so concurrent proposals would cost one log
/// entry, one fsync on every node and one replication round each. Instead
/// the commands that arrive while proposals are in flight are proposed
/// together as one `Command::Batch` entry: one fsync per node for all.
async fn drive_proposals(core: Arc<Core>) {
    loop {
        let mut batch: Vec<Queued> = {
            let mut q = lock(&core.proposals);
            if q.waiting.is_empty() {
                q.in_flight -= 1;
                return;
            }
            let n = q.waiting.len().min(MAX_BATCH);
            q.waiting.drain(..n).collect()
        };
        let mut done = Vec::with_capacity(batch.len());
        if batch.len() == 1 {
            let Some(Queued {
                cmd,
                reply,
                seq,
                writes,
            }) = batch.pop()
            else {
                continue;
            };
            let res = core
                .raft
                .client_write(cmd.into())
                .await
                .map(|r| (r.data.single(), r.log_id.index))
                .map_err(|e| core.write_err(e));
            let _ = reply.send(res);
            done.push((seq, writes));
        } else {
            let mut cmds = Vec::with_capacity(batch.len());
            let mut replies = Vec::with_capacity(batch.len());
            for q in batch {
                cmds.push(q.cmd);
                replies.push(q.reply);
                done.push((q.seq, q.writes));
            }
            match core.raft.client_write(Command::Batch(cmds).into()).await {
                Ok(r) if r.data.0.len() == replies.len() => {
                    let index = r.log_id.index;
                    for (outcome, reply) in r.data.0.into_iter().zip(replies) {
                        let _ = reply.send(Ok((outcome, index)));
                    }
                }
                Ok(r) => {
                    let e = WireError::Unavailable(format!(
                        "batch of {} commands answered {} outcomes",
                        replies.len(),
                        r.data.0.len()
                    ));
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    let e = core.write_err(e);
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
        {
            let mut q = lock(&core.proposals);
            for (seq, writes) in &done {
                q.answered(*seq, writes);
            }
        }
        core.answered.notify_waiters();
    }
}

/// The error of a request on a node cut off from the majority.
/// `in_flight`: it may have been proposed, so its outcome is unknown.
fn no_quorum(why: &str, in_flight: bool) -> StoreError {
    StoreError::Unavailable(format!(
        "the store has no quorum: {why}{}",
        if in_flight { "; outcome unknown" } else { "" }
    ))
}

/// Runs a client request on the leader (this node or a remote one).
pub(crate) async fn submit(
    core: &Arc<Core>,
    leases: &Leases,
    req: ClientRequest,
) -> Result<kv::Response, StoreError> {
    let idempotent = req.idempotent();
    let timeout = core.cfg.timing.request_timeout;
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(5);
    let mut last = String::from("no leader");
    loop {
        if core.is_stopped() {
            return Err(StoreError::Unavailable("store is shut down".into()));
        }
        if let Some(why) = core.no_quorum() {
            return Err(no_quorum(&why, false));
        }
        match core.leader() {
            Some((id, _)) if id == core.id() => {
                let left = deadline.saturating_duration_since(Instant::now());
                let res = tokio::select! {
                    r = tokio::time::timeout(left, execute(core, leases, req.clone())) => r,
                    why = core.until_no_quorum() => return Err(no_quorum(&why, true)),
                };
                let res = match res {
                    Ok(r) => r,
                    Err(_) => {
                        return Err(StoreError::Unavailable(
                            "no quorum within the request timeout; outcome unknown".into(),
                        ))
                    }
                };
                match res {
                    Ok((r, _)) => return Ok(r),
                    Err(WireError::NotLeader { .. }) => last = "leader changed".into(),
                    Err(WireError::Unavailable(e)) if idempotent => last = e,
                    Err(e) => return Err(e.into()),
                }
            }
            Some((leader, addr)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(StoreError::Unavailable(last));
                }
                let res: Option<Result<ForwardResult, Error>> = tokio::select! {
                    r = core.net.post(&addr, "/raft/v1/forward", &req, left) => Some(r),
                    why = core.until_no_quorum() => return Err(no_quorum(&why, true)),
                    // A new leader took over: the old one, cut off, would
                    // hold the request until the timeout.
                    () = core.until_leader_is_not(leader) => None,
                };
                match res {
                    None if idempotent => last = format!("the leader changed from {addr}"),
                    None => {
                        return Err(StoreError::Unavailable(format!(
                            "the leader changed from {addr} during the request; outcome unknown"
                        )))
                    }
                    Some(Ok(Ok((r, index)))) => {
                        // Read your writes: wait until this node applied it
                        // too (the write succeeded either way).
                        let left = deadline.saturating_duration_since(Instant::now());
                        let _ = core
                            .raft
                            .wait(Some(left.max(Duration::from_secs(1))))
                            .applied_index_at_least(Some(index), "forwarded write")
                            .await;
                        return Ok(r);
                    }
                    Some(Ok(Err(WireError::NotLeader { .. }))) => {
                        last = format!("{addr} is not the leader")
                    }
                    Some(Ok(Err(WireError::Unavailable(e)))) if idempotent => last = e,
                    Some(Ok(Err(e))) => return Err(e.into()),
                    // Refused before anything was proposed: retry.
                    Some(Err(e @ Error::Connect { .. })) => last = crate::error::chain(&e),
                    Some(Err(e @ Error::Status { status: 503, .. })) => {
                        last = crate::error::chain(&e)
                    }
                    Some(Err(e)) if idempotent => last = crate::error::chain(&e),
                    Some(Err(e)) => {
                        return Err(StoreError::Unavailable(format!(
                            "leader failed during the request, outcome unknown: {}",
                            crate::error::chain(&e)
                        )))
                    }
                }
            }
            None => {}
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Unavailable(last));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(100));
    }
}
