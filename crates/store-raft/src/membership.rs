//! Who is in the cluster: founding it, joining and leaving it, and the
//! leader's upkeep of voters (promote replicas while voters are missing,
//! replace voters that stay unreachable).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Weak;
use std::time::{Duration, Instant};

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use socketplane_store::StoreError;

use crate::error::{chain, Error};
use crate::shared::{lock, Core, Ticker};
use crate::types::NodeId;
use crate::wire::{JoinRequest, LeaveRequest, WireError};
use futures::FutureExt;

/// How long a join may take end to end (the new node must catch up).
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one join call waits for the leader to add the node.
const JOIN_CALL_TIMEOUT: Duration = Duration::from_secs(40);
/// How long the leader waits for a new node to catch up as a replica.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// What a node that is no member itself answers a join request with, at
/// once: the joiner then tries another peer instead of waiting here (on a
/// cold start most peers it sees are still joiners too).
const NOT_A_MEMBER: &str = "this node is not a cluster member yet";

/// Raft takes one membership change at a time and refuses the others
/// ("already undergoing a configuration change"); joins that arrive
/// together (a cold start of many hosts) queue here instead of failing and
/// retrying. One store per process, so one queue per process is enough.
static MEMBERSHIP_CHANGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Replicas waiting for [`MEMBERSHIP_CHANGES`]: whoever gets it adds them
/// all in one change.
static PENDING_JOINS: std::sync::Mutex<BTreeMap<NodeId, BasicNode>> =
    std::sync::Mutex::new(BTreeMap::new());

/// Whether this node is in the membership Raft reports (`fallback` until
/// Raft reported the state it loaded).
pub(crate) fn is_member(core: &Core, fallback: bool) -> bool {
    let m = core.raft.metrics();
    let m = m.borrow();
    let membership = m.membership_config.membership();
    if membership.nodes().next().is_none() {
        return fallback;
    }
    membership.get_node(&core.id()).is_some()
}

/// Founds a one-voter cluster with this node.
pub(crate) async fn bootstrap(core: &Core) -> Result<(), StoreError> {
    let mut nodes = BTreeMap::new();
    nodes.insert(core.id(), BasicNode::new(core.cfg.advertise));
    match core.raft.initialize(nodes).await {
        Ok(()) => {}
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => return Ok(()),
        Err(e) => return Err(StoreError::Internal(format!("bootstrap failed: {e}"))),
    }
    core.raft
        .wait(Some(core.cfg.timing.request_timeout))
        .current_leader(core.id(), "bootstrap")
        .await
        .map_err(|e| StoreError::Unavailable(format!("bootstrap: no leader: {e}")))?;
    Ok(())
}

/// Asks a member (any; it forwards to the leader) to add this node.
pub(crate) async fn join(core: &Core, seed: SocketAddr) -> Result<(), StoreError> {
    let req = JoinRequest {
        node_id: core.id(),
        addr: core.cfg.advertise.to_string(),
        cluster: core.cfg.cluster.clone(),
    };
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let mut target = seed.to_string();
    let mut last_err;
    loop {
        let res: Result<Result<(), WireError>, Error> = core
            .net
            .post(&target, "/raft/v1/join", &req, JOIN_CALL_TIMEOUT)
            .await;
        match res {
            Ok(Ok(())) => break,
            Ok(Err(WireError::ClusterMismatch { ours, theirs })) => {
                return Err(StoreError::InvalidArgument(format!(
                    "cannot join: {target} belongs to cluster {ours:?}, this node to cluster {theirs:?}"
                )))
            }
            Ok(Err(WireError::NotLeader { leader: Some(l) })) => {
                last_err = format!("redirected to {l}");
                target = l;
            }
            Ok(Err(WireError::InvalidArgument(e))) => {
                return Err(StoreError::InvalidArgument(format!("cannot join: {e}")))
            }
            Ok(Err(WireError::Unavailable(e))) if e == NOT_A_MEMBER => {
                return Err(StoreError::Unavailable(format!(
                    "cannot join via {target}: {e}"
                )))
            }
            Ok(Err(e)) => last_err = e.to_string(),
            Err(Error::Status { status, body, .. }) if status == 401 || status == 409 => {
                return Err(StoreError::InvalidArgument(format!(
                    "cannot join via {target}: {body}"
                )))
            }
            Err(e) => {
                last_err = chain(&e);
                target = seed.to_string();
            }
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Unavailable(format!(
                "cannot join via {seed}: {last_err}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let id = core.id();
    core.raft
        .wait(Some(CATCH_UP_TIMEOUT))
        .metrics(
            |m| m.membership_config.membership().get_node(&id).is_some(),
            "join",
        )
        .await
        .map_err(|e| {
            StoreError::Unavailable(format!("joined but membership not replicated: {e}"))
        })?;
    Ok(())
}

/// Removes this node from the cluster (through the leader).
pub(crate) async fn leave(core: &Core) -> Result<(), StoreError> {
    let req = LeaveRequest { node_id: core.id() };
    let timeout = core.cfg.timing.request_timeout;
    let deadline = Instant::now() + timeout;
    loop {
        let res = match core.leader() {
            Some((id, _)) if id == core.id() => serve_leave(core, req.clone()).await,
            Some((_, addr)) => core
                .net
                .post::<_, Result<(), WireError>>(&addr, "/raft/v1/leave", &req, timeout)
                .await
                .unwrap_or_else(|e| Err(WireError::Unavailable(chain(&e)))),
            None => Err(WireError::NotLeader { leader: None }),
        };
        match res {
            Ok(()) => return Ok(()),
            Err(WireError::NotLeader { .. }) | Err(WireError::Unavailable(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Unavailable("leave: no leader".into()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Serves a join request: on the leader, adds the node as a replica and
/// makes it a voter while voters are missing; elsewhere, passes it on.
pub(crate) async fn serve_join(core: &Core, req: JoinRequest) -> Result<(), WireError> {
    if req.cluster != core.cfg.cluster {
        return Err(WireError::ClusterMismatch {
            ours: core.cfg.cluster.clone(),
            theirs: req.cluster,
        });
    }
    if req.addr.parse::<SocketAddr>().is_err() {
        return Err(WireError::InvalidArgument(format!(
            "bad address {:?}",
            req.addr
        )));
    }
    if !is_member(core, false) {
        return Err(WireError::Unavailable(NOT_A_MEMBER.into()));
    }
    match core.leader() {
        Some((id, _)) if id == core.id() => {}
        Some((_, addr)) => {
            return core
                .net
                .post::<_, Result<(), WireError>>(&addr, "/raft/v1/join", &req, JOIN_CALL_TIMEOUT)
                .await
                .unwrap_or_else(|e| Err(WireError::Unavailable(chain(&e))))
        }
        None => return Err(WireError::Unavailable("no leader".into())),
    }
    let node = BasicNode::new(&req.addr);
    lock(&PENDING_JOINS).insert(req.node_id, node.clone());
    let _one_at_a_time = MEMBERSHIP_CHANGES.lock().await;
    let m = core.metrics();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let known = membership.get_node(&req.node_id).map(|n| n.addr.clone());
    let promote = !voters.contains(&req.node_id) && voters.len() < core.cfg.max_voters;
    if known.as_deref() != Some(req.addr.as_str()) {
        let add = if promote {
            // A future voter must catch up first.
            lock(&PENDING_JOINS).remove(&req.node_id);
            core.raft.add_learner(req.node_id, node, true).boxed()
        } else {
            // Every replica waiting here goes in with this one change; each
            // catches up on its own.
            let mut batch = std::mem::take(&mut *lock(&PENDING_JOINS));
            batch.retain(|id, n| membership.get_node(id).map(|k| &k.addr) != Some(&n.addr));
            batch.insert(req.node_id, node);
            core.raft
                .change_membership(ChangeMembers::AddNodes(batch), true)
                .boxed()
        };
        match tokio::time::timeout(CATCH_UP_TIMEOUT, add).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(core.write_err(e)),
            Err(_) => {
                return Err(WireError::Unavailable(
                    "new node did not catch up in time".into(),
                ))
            }
        }
    } else {
        lock(&PENDING_JOINS).remove(&req.node_id);
    }
    if promote {
        core.raft
            .change_membership(
                ChangeMembers::AddVoterIds(BTreeSet::from([req.node_id])),
                false,
            )
            .await
            .map_err(|e| core.write_err(e))?;
    }
    tracing::info!(node = req.node_id, addr = %req.addr, "Node joined the store cluster.");
    Ok(())
}

/// Serves a leave request on the leader.
pub(crate) async fn serve_leave(core: &Core, req: LeaveRequest) -> Result<(), WireError> {
    if !core.is_leader() {
        return Err(core.not_leader());
    }
    let m = core.metrics();
    let membership = m.membership_config.membership();
    if membership.get_node(&req.node_id).is_none() {
        return Ok(());
    }
    let ids = BTreeSet::from([req.node_id]);
    let change = if membership.voter_ids().any(|v| v == req.node_id) {
        ChangeMembers::RemoveVoters(ids)
    } else {
        ChangeMembers::RemoveNodes(ids)
    };
    core.raft
        .change_membership(change, false)
        .await
        .map_err(|e| core.write_err(e))?;
    Ok(())
}

/// Leader upkeep: promote replicas while voters are missing, and replace
/// voters that have been unreachable for `replace_after`.
async fn tick(core: &Core, leader_since: Instant) {
    let _one_at_a_time = MEMBERSHIP_CHANGES.lock().await;
    let m = core.metrics();
    if m.state != ServerState::Leader {
        return;
    }
    let membership = m.membership_config.membership();
    if membership.get_joint_config().len() > 1 {
        return;
    }
    let me = core.id();
    let now = Instant::now();
    let seen = |id: NodeId| -> Duration {
        if id == me {
            return Duration::ZERO;
        }
        let since = core
            .net
            .last_contact(id)
            .unwrap_or(leader_since)
            .max(leader_since);
        now.saturating_duration_since(since)
    };
    let alive_window = core.cfg.replace_after.min(Duration::from_secs(3));
    let last_index = m.last_log_index.unwrap_or(0);
    let caught_up = |id: NodeId| -> bool {
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned())
            .flatten()
            .map(|l| l.index)
            .unwrap_or(0);
        matched + 100 >= last_index
    };
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let mut learners: Vec<NodeId> = membership
        .learner_ids()
        .filter(|id| seen(*id) < alive_window && caught_up(*id))
        .collect();
    learners.sort();
    let dead: Vec<NodeId> = voters
        .iter()
        .copied()
        .filter(|id| seen(*id) >= core.cfg.replace_after)
        .collect();
    if voters.len() < core.cfg.max_voters {
        if let Some(l) = learners.first() {
            tracing::info!(node = *l, "Promoting a replica to voter.");
            if let Err(e) = core
                .raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*l])), false)
                .await
            {
                tracing::warn!(error = %e, "Could not promote a replica.");
            }
            return;
        }
    }
    if let (Some(d), Some(l)) = (dead.first(), learners.first()) {
        let mut new_voters = voters.clone();
        new_voters.remove(d);
        new_voters.insert(*l);
        tracing::warn!(
            dead = *d,
            replacement = *l,
            "Replacing an unreachable voter with a replica."
        );
        if let Err(e) = core
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(new_voters), true)
            .await
        {
            tracing::warn!(error = %e, "Could not replace an unreachable voter.");
        }
    }
}

/// Runs [`tick`] while the node lives.
pub(crate) async fn upkeep_loop(core: Weak<Core>) {
    let Some(mut ticks) = Ticker::every(&core, |c| {
        (c.cfg.timing.heartbeat * 4).max(Duration::from_millis(200))
    }) else {
        return;
    };
    let mut term = 0;
    let mut since = Instant::now();
    loop {
        let Some(core) = ticks.tick().await else {
            return;
        };
        let m = core.metrics();
        if m.state != ServerState::Leader {
            term = 0;
            continue;
        }
        if m.current_term != term {
            term = m.current_term;
            since = Instant::now();
        }
        tick(&core, since).await;
    }
}
