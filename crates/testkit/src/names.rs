//! Unique names for test resources.

use std::sync::atomic::{AtomicU32, Ordering};

/// Base-36 digits in a [`unique_name`] after its tag.
const DIGITS: u32 = 5;

/// A short name, unique across the tests of one process and very likely
/// across concurrent processes: `tag` and five of `0-9a-z` (6 characters,
/// the longest lab name). Names of namespaces and devices derive from it,
/// so parallel tests never collide and device names stay short.
pub fn unique_name(tag: char) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let space = 36u64.pow(DIGITS);
    let count = u64::from(COUNTER.fetch_add(1, Ordering::Relaxed));
    // 4097 is coprime to 36^5: distinct pids map to distinct bases, and the
    // counter walks away from them.
    let mut n = (u64::from(std::process::id()) * 4097 + count) % space;
    let mut name = String::with_capacity(1 + DIGITS as usize);
    name.push(tag);
    let mut digits = [b'0'; DIGITS as usize];
    for d in digits.iter_mut().rev() {
        let v = (n % 36) as u8;
        *d = if v < 10 { b'0' + v } else { b'a' + v - 10 };
        n /= 36;
    }
    name.extend(digits.iter().map(|b| char::from(*b)));
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_distinct_and_tagged() {
        let names: std::collections::HashSet<String> =
            (0..1000).map(|_| unique_name('q')).collect();
        assert_eq!(names.len(), 1000);
        for n in &names {
            assert_eq!(n.len(), 6, "{n}");
            assert!(n.starts_with('q'));
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
                "{n}"
            );
        }
    }
}
