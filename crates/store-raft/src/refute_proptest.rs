//! Property test of the safety argument behind `forward::refutes`: a
//! compare refuted by some applied state fails on every later state, so a
//! node may fail it from a stale state, and the leader after waiting for
//! an in-flight writer, without ever failing a compare that could hold.

use proptest::prelude::*;
use socketplane_store::kv::KvState;
use socketplane_store::{Compare, Op, Txn};

use crate::forward::refutes;

const KEYS: [&str; 3] = ["a", "b", "c"];

/// A valid transaction: at most one compare and one op per key.
fn txn() -> impl Strategy<Value = Txn> {
    (
        proptest::collection::vec(proptest::option::of(0i64..12), KEYS.len()),
        proptest::collection::vec(proptest::option::of(any::<bool>()), KEYS.len()),
    )
        .prop_map(|(compares, ops)| Txn {
            compares: KEYS
                .iter()
                .zip(compares)
                .filter_map(|(k, r)| Some(Compare::mod_revision(*k, r?)))
                .collect(),
            ops: KEYS
                .iter()
                .zip(ops)
                .filter_map(|(k, put)| {
                    Some(if put? {
                        Op::put(*k, b"v".to_vec())
                    } else {
                        Op::delete(*k)
                    })
                })
                .collect(),
        })
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
