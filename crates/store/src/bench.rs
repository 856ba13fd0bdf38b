//! A compare-and-set throughput benchmark over any set of store handles.
//!
//! [`cas_benchmark`] increments one counter `total_ops` times with
//! `concurrency` concurrent workers, worker `i` using `stores[i % len]`
//! (e.g. one handle per cluster member), and reports throughput and
//! latency percentiles. Each operation is a get followed by a
//! compare-and-set, retried until it wins, so contention costs show up in
//! the latencies (and in `conflicts`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conformance::cas_increment;
use crate::Store;

/// The outcome of [`cas_benchmark`].
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    /// Successful increments per second of wall time.
    pub ops_per_sec: f64,
    /// Median latency of one successful increment (including retries).
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Increments that succeeded.
    pub ops: usize,
    /// Increments abandoned because the store returned an error.
    pub errors: usize,
    /// Lost compare-and-set races (each retried).
    pub conflicts: u64,
    pub elapsed: Duration,
    /// Whether the counter grew by exactly `ops` (linearizability check).
    pub consistent: bool,
}

impl std::fmt::Display for BenchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ops in {:.2?}: {:.0} ops/s, p50 {:.2?}, p99 {:.2?}, {} conflicts, {} errors{}",
            self.ops,
            self.elapsed,
            self.ops_per_sec,
            self.p50,
            self.p99,
            self.conflicts,
            self.errors,
            if self.consistent {
                ""
            } else {
                ", COUNTER INCONSISTENT"
            }
        )
    }
}

fn counter_value(kv: Option<crate::KeyValue>) -> Option<u64> {
    match kv {
        None => Some(0),
        Some(kv) => std::str::from_utf8(&kv.value).ok()?.parse().ok(),
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Runs `total_ops` CAS increments of the counter at `key` with
/// `concurrency` workers spread over `stores`. An empty `stores` or zero
/// ops gives an empty result.
pub async fn cas_benchmark(
    stores: Vec<Arc<dyn Store>>,
    key: &str,
    total_ops: usize,
    concurrency: usize,
) -> BenchResult {
    let empty = BenchResult {
        ops_per_sec: 0.0,
        p50: Duration::ZERO,
        p99: Duration::ZERO,
        ops: 0,
        errors: 0,
        conflicts: 0,
        elapsed: Duration::ZERO,
        consistent: true,
    };
    if stores.is_empty() || total_ops == 0 {
        return empty;
    }
    let start_value = match stores[0].get(key).await {
        Ok(kv) => counter_value(kv),
        Err(e) => {
            tracing::warn!(error = %e, "benchmark could not read the counter");
            return BenchResult {
                errors: total_ops,
                consistent: false,
                ..empty
            };
        }
    };
    let claimed = Arc::new(AtomicUsize::new(0));
    let key: Arc<str> = Arc::from(key);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            let claimed = claimed.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let (mut errors, mut conflicts) = (0usize, 0u64);
                while claimed.fetch_add(1, Ordering::Relaxed) < total_ops {
                    let t = Instant::now();
                    match cas_increment(store.as_ref(), &key).await {
                        Ok((_, retries)) => {
                            lat.push(t.elapsed());
                            conflicts += u64::from(retries);
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "benchmark increment failed");
                            errors += 1;
                        }
                    }
                }
                (lat, errors, conflicts)
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(total_ops);
    let (mut errors, mut conflicts) = (0usize, 0u64);
    for w in workers {
        match w.await {
            Ok((l, e, c)) => {
                lat.extend(l);
                errors += e;
                conflicts += c;
            }
            Err(e) => {
                tracing::warn!(error = %e, "benchmark worker died");
            }
        }
    }
    let elapsed = started.elapsed();
    lat.sort_unstable();
    let ops = lat.len();
    let end_value = stores[0].get(&key).await.ok().and_then(counter_value);
    let consistent = match (start_value, end_value) {
        (Some(s), Some(e)) => e.checked_sub(s) == Some(ops as u64),
        _ => false,
    };
    BenchResult {
        ops_per_sec: ops as f64 / elapsed.as_secs_f64().max(1e-9),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        ops,
        errors,
        conflicts,
        elapsed,
        consistent,
    }
}
