//! Detached agent processes: identity, liveness, signals.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub state: char,
    pub session: i32,
    pub start_time: u64,
}

/// Parse `/proc/<pid>/stat`; `None` when the process does not exist.
pub(crate) fn stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // "pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
    //  majflt cmajflt utime stime cutime cstime priority nice threads
    //  itrealvalue starttime ..."; comm may contain anything, so split
    // after its last ')'.
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

/// Whether the process `pid`, started at `start_time` (clock ticks since
/// boot, as in /proc), is still running. A zombie child of ours is reaped
/// and counts as gone; a reused pid (other start time) counts as gone.
pub(crate) fn alive(pid: u32, start_time: u64) -> bool {
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
pub(crate) fn reap(pid: u32) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    let _ = waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG));
}

/// Send `sig` to the process group led by `pid` (the agent runs in its own
/// session), falling back to the process alone.
pub(crate) fn signal(pid: u32, sig: Signal) -> nix::Result<()> {
    let raw = i32::try_from(pid).map_err(|_| nix::errno::Errno::EINVAL)?;
    let p = Pid::from_raw(raw);
    match killpg(p, sig) {
        Ok(()) => Ok(()),
        Err(_) => kill(p, sig),
    }
}

/// Send a signal to any pid (used for stray processes in lab namespaces).
pub(crate) fn signal_pid(pid: i32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid), sig);
}

/// Wait until the process is gone, up to `timeout`.
pub(crate) fn wait_gone(pid: u32, start_time: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !alive(pid, start_time) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
}
