//! Waiting for a condition, with a deadline.

use std::time::{Duration, Instant};

/// How often [`wait_until`] polls.
pub const DEFAULT_POLL: Duration = Duration::from_millis(50);

/// Call `f` every [`DEFAULT_POLL`] until it returns true or `timeout`
/// passes; returns whether it succeeded.
pub fn wait_until(timeout: Duration, f: impl FnMut() -> bool) -> bool {
    wait_until_every(timeout, DEFAULT_POLL, f)
}

/// Call `f` every `interval` until it returns true or `timeout` passes;
/// returns whether it succeeded. `f` is always called at least once, and
/// once more at the deadline.
pub fn wait_until_every(
    timeout: Duration,
    interval: Duration,
    mut f: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(interval.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn succeeds_when_the_condition_holds_and_fails_at_the_deadline() {
        let mut n = 0;
        assert!(wait_until_every(
            Duration::from_secs(1),
            Duration::from_millis(1),
            || {
                n += 1;
                n == 3
            }
        ));
        let started = Instant::now();
        let mut calls = 0;
        assert!(!wait_until(Duration::from_millis(120), || {
            calls += 1;
            false
        }));
        assert!(started.elapsed() >= Duration::from_millis(120));
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(calls >= 2, "{calls}");
    }
}
