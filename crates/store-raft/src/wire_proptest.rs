//! Property tests of what the cluster port decodes from a peer: the
//! snapshot framing and state, Raft and store messages. Arbitrary bytes
//! and valid messages with bytes changed must give an error or a value,
//! never a panic.

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{CommittedLeaderId, EntryPayload};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use socketplane_store::kv::{self, KvState};
use socketplane_store::{Compare, Op, Txn};

use crate::types::{Entry, LogId, NodeId, SnapshotMeta, TypeConfig, Vote};
use crate::wire::{self, ClientRequest, ForwardResult, JoinRequest, LeaveRequest, SnapshotHeader};

fn txn() -> Txn {
    Txn::new()
        .when(Compare::absent("/socketplane/v1/k"))
        .then(Op::put("/socketplane/v1/k", b"v".to_vec()))
        .then(Op::delete("/socketplane/v1/old"))
}

/// One valid encoding of each message a peer can send.
fn valid_messages() -> Vec<Vec<u8>> {
    let log_id = LogId::new(CommittedLeaderId::new(3, 1), 7);
    let append: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(log_id),
        entries: vec![Entry {
            log_id,
            payload: EntryPayload::Normal(kv::Command::Txn(txn()).into()),
        }],
        leader_commit: Some(log_id),
    };
    let vote: VoteRequest<NodeId> = VoteRequest::new(Vote::new(4, 2), Some(log_id));
    let join = JoinRequest {
        node_id: 9,
        addr: "198.18.0.9:6675".into(),
        cluster: "lab".into(),
    };
    let forwarded: ForwardResult = Err(wire::WireError::NotLeader {
        leader: Some("198.18.0.1:6675".into()),
    });
    vec![
        serde_json::to_vec(&append).unwrap(),
        serde_json::to_vec(&vote).unwrap(),
        serde_json::to_vec(&join).unwrap(),
        serde_json::to_vec(&LeaveRequest { node_id: 9 }).unwrap(),
        serde_json::to_vec(&ClientRequest::Txn(txn())).unwrap(),
        serde_json::to_vec(&ClientRequest::LeaseGrant { ttl_ms: 3000 }).unwrap(),
        serde_json::to_vec(&forwarded).unwrap(),
        snapshot_body(),
    ]
}

/// A snapshot request: header length, header, state.
fn snapshot_body() -> Vec<u8> {
    let mut state = KvState::default();
    state.apply(&kv::Command::Txn(txn())).unwrap();
    let data = crate::sm::encode_snapshot(&state).unwrap();
    let header = SnapshotHeader {
        vote: Vote::new_committed(3, 1),
        meta: SnapshotMeta::default(),
    };
    let header = serde_json::to_vec(&header).unwrap();
    let mut body = (header.len() as u64).to_be_bytes().to_vec();
    body.extend(header);
    body.extend(data);
    body
}

fn try_decode<T: DeserializeOwned>(bytes: &[u8]) {
    let _ = serde_json::from_slice::<T>(bytes);
}

/// Everything the port decodes, on the same bytes.
fn decode_all(bytes: &[u8]) {
    try_decode::<AppendEntriesRequest<TypeConfig>>(bytes);
    try_decode::<VoteRequest<NodeId>>(bytes);
    try_decode::<JoinRequest>(bytes);
    try_decode::<LeaveRequest>(bytes);
    try_decode::<ClientRequest>(bytes);
    try_decode::<ForwardResult>(bytes);
    try_decode::<kv::Command>(bytes);
    if let Ok((_, data)) = wire::decode_snapshot(bytes) {
        let _ = crate::sm::decode_snapshot(&data);
    }
    let _ = crate::sm::decode_snapshot(bytes);
}

#[test]
fn the_valid_messages_decode() {
    let msgs = valid_messages();
    serde_json::from_slice::<AppendEntriesRequest<TypeConfig>>(&msgs[0]).unwrap();
    serde_json::from_slice::<VoteRequest<NodeId>>(&msgs[1]).unwrap();
    let (_, data) = wire::decode_snapshot(&msgs[7]).unwrap();
    crate::sm::decode_snapshot(&data).unwrap();
    // A header length past the body is an error, not a huge allocation.
    let mut lying = u64::MAX.to_be_bytes().to_vec();
    lying.extend(b"{}");
    assert!(wire::decode_snapshot(&lying).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let msgs = valid_messages();
        let mut bytes = msgs[which.index(msgs.len())].clone();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        decode_all(&bytes);
        decode_all(&bytes[..cut.index(bytes.len())]);
    }
}
