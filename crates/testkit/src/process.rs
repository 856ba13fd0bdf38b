//! Processes by pid: identity (pid plus start time, so a reused pid is not
//! mistaken for ours), liveness, signals, and waiting for them to go.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use crate::wait::wait_until_every;

/// How often [`wait_gone`] looks.
const GONE_POLL: Duration = Duration::from_millis(20);

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `Z`, ...
    pub state: char,
    /// Session id.
    pub session: i32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

/// Parse `/proc/<pid>/stat`; `None` when the process does not exist.
pub fn stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // "pid (comm) state ppid pgrp session ... starttime ..."; comm may hold
    // anything, so split after its last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let session = fields.get(3)?.parse().ok()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some(ProcStat {
        state,
        session,
        start_time,
    })
}

/// Whether process `pid`, started at `start_time`, still runs. A zombie
/// child of ours is reaped and counts as gone; a reused pid counts as gone.
pub fn alive(pid: u32, start_time: u64) -> bool {
    let Some(st) = stat(pid) else {
        return false;
    };
    if st.start_time != start_time {
        return false;
    }
    if st.state == 'Z' || st.state == 'X' {
        reap(pid);
        return false;
    }
    true
}

/// Reap `pid` if it is an exited child of this process (no-op otherwise).
pub fn reap(pid: u32) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG));
    }
}

/// Send `sig` to the process group led by `pid` (a detached process leads
/// its own session), falling back to the process alone.
pub fn signal_group(pid: u32, sig: Signal) -> nix::Result<()> {
    let raw = i32::try_from(pid).map_err(|_| nix::errno::Errno::EINVAL)?;
    let p = Pid::from_raw(raw);
    killpg(p, sig).or_else(|_| kill(p, sig))
}

/// Send `sig` to one process.
pub fn signal(pid: u32, sig: Signal) -> nix::Result<()> {
    let raw = i32::try_from(pid).map_err(|_| nix::errno::Errno::EINVAL)?;
    kill(Pid::from_raw(raw), sig)
}

/// Wait until the process is gone, up to `timeout`.
pub fn wait_gone(pid: u32, start_time: u64, timeout: Duration) -> bool {
    wait_until_every(timeout, GONE_POLL, || !alive(pid, start_time))
}

/// Signal every process in `pids` (if still the same process) and wait up
/// to `timeout` for each to go; returns the pids still alive.
pub fn kill_all(pids: &[u32], sig: Signal, timeout: Duration) -> Vec<u32> {
    let me = std::process::id();
    let targets: Vec<(u32, u64)> = pids
        .iter()
        .filter(|p| **p != me)
        .filter_map(|p| stat(*p).map(|s| (*p, s.start_time)))
        .collect();
    for (pid, _) in &targets {
        let _ = signal(*pid, sig);
    }
    targets
        .into_iter()
        .filter(|(pid, st)| !wait_gone(*pid, *st, timeout))
        .map(|(pid, _)| pid)
        .collect()
}

/// Stop the daemon whose pid is in `pidfile` (SIGTERM, then SIGKILL after
/// `grace`) and remove the file. A missing file or process is fine.
pub fn stop_pidfile(pidfile: &Path, grace: Duration) {
    let pid = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if let Some(pid) = pid {
        if !kill_all(&[pid], Signal::SIGTERM, grace).is_empty() {
            kill_all(&[pid], Signal::SIGKILL, grace);
        }
    }
    let _ = std::fs::remove_file(pidfile);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let line =
            "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.state, 'S');
        assert_eq!(st.session, 1234);
        assert_eq!(st.start_time, 987654);
    }

    #[test]
    fn own_process_is_alive() {
        let me = std::process::id();
        let st = stat(me).unwrap();
        assert!(alive(me, st.start_time));
        assert!(!alive(me, st.start_time + 1));
    }

    #[test]
    fn kills_and_waits() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(kill_all(&[pid], Signal::SIGTERM, Duration::from_secs(5)).is_empty());
        // `alive` reaped it already.
        assert!(stat(pid).is_none());
        assert!(child.wait().is_err());
    }
}
