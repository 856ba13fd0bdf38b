//! Property test of the safety argument behind `forward::refutes`: a
//! compare refuted by some applied state fails on every later state, so a
//! node may fail it from a stale state, and the leader after waiting for
//! an in-flight writer, without ever failing a compare that could hold.

use proptest::prelude::*;
use socketplane_store::kv::KvState;
use socketplane_store::{Compare, Op, Txn};

use crate::forward::refutes;

const KEYS: [&str; 3] = ["a", "b", "c"];

fn compare() -> impl Strategy<Value = Compare> {
    (0..KEYS.len(), 0i64..12).prop_map(|(k, r)| Compare::mod_revision(KEYS[k], r))
}

fn op() -> impl Strategy<Value = Op> {
    (0..KEYS.len(), any::<bool>()).prop_map(|(k, put)| {
        if put {
            Op::put(KEYS[k], b"v".to_vec())
        } else {
            Op::delete(KEYS[k])
        }
    })
}

fn txn() -> impl Strategy<Value = Txn> {
    (
        proptest::collection::vec(compare(), 0..3),
        proptest::collection::vec(op(), 1..3),
    )
        .prop_map(|(compares, ops)| Txn { compares, ops })
}

proptest! {
    #[test]
    fn refuted_compares_never_hold_later(history in proptest::collection::vec(txn(), 0..24),
                                         probe in txn()) {
        let mut state = KvState::new(1000);
        let mut states = vec![state.clone()];
        for t in &history {
            state.txn(t).unwrap();
            states.push(state.clone());
        }
        for (i, earlier) in states.iter().enumerate() {
            if !refutes(earlier, &probe) {
                continue;
            }
            for later in &states[i..] {
                let r = later.clone().txn(&probe).unwrap();
                prop_assert!(!r.succeeded, "refuted at state {} but holds later", i);
            }
        }
    }
}
