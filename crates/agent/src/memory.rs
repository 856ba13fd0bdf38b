//! The agent's allocator: its settings ([`tune_allocator`]) and giving
//! memory the agent has freed back to the system. glibc's allocator
//! keeps freed memory for reuse, and an agent's biggest allocations are
//! transient: the start-up (the Raft log decoded and replayed, the first
//! full datapath pass) and every snapshot built or installed. At 10,000
//! cluster endpoints that was about 12 MB of an agent's RSS held for
//! nothing (measured with `malloc_trim` on a running agent).

use std::time::Duration;

/// How many malloc arenas the process may use. glibc makes up to eight per
/// core, one for each thread that meets a locked one, and each keeps its
/// own free memory: an agent's threads are mostly idle, so a few arenas
/// serve them as well and hold far less.
const ARENAS: i32 = 2;

/// Allocations at least this large get their own mapping, returned to the
/// system when freed. glibc otherwise raises the bound to the largest block
/// ever freed (up to 32 MiB), after which a snapshot's multi-MB buffers
/// are carved out of the arenas and leave them fragmented.
const MMAP_THRESHOLD: i32 = 256 << 10;

/// Sets the allocator up for a long-lived agent. Call it first in `main`,
/// before any thread exists. Settings an operator made through glibc's own
/// variables (`GLIBC_TUNABLES`, `MALLOC_ARENA_MAX`, ...) are left alone.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_allocator() {
    let set_by_operator = |name: &str| std::env::var_os(name).is_some();
    if set_by_operator("GLIBC_TUNABLES") {
        return;
    }
    // SAFETY: mallopt only changes the allocator's parameters, under its
    // own lock; it has no other preconditions.
    unsafe {
        if !set_by_operator("MALLOC_ARENA_MAX") {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
        if !set_by_operator("MALLOC_MMAP_THRESHOLD_") {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }
}

/// Other allocators need no tuning here.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}

/// How often freed memory is returned.
const EVERY: Duration = Duration::from_secs(30);

/// Returns freed memory every [`EVERY`] until the task is aborted.
pub fn spawn_trim() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            trim();
        }
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim has no preconditions; it only walks the
    // allocator's own free lists, under the allocator's locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl's) return memory by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
