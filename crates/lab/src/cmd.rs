//! Running `ip` and other external commands.

use std::process::{Command, Output};

use crate::error::{LabError, Result};

/// Render a command line for messages.
pub(crate) fn render(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Run a command to completion; error unless it exits 0.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| LabError::Command {
            cmd: render(program, args),
            detail: if e.kind() == std::io::ErrorKind::NotFound {
                format!("{program} is not installed ({e})")
            } else {
                e.to_string()
            },
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: render(program, args),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out)
}

/// Run `ip ARGS...`.
pub(crate) fn ip(args: &[&str]) -> Result<Output> {
    run("ip", args)
}

/// Whether the named network namespace exists.
pub(crate) fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// Names of all network namespaces (from /run/netns).
pub(crate) fn netns_list() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Pids of the processes in a network namespace (`ip netns pids`).
pub(crate) fn netns_pids(name: &str) -> Vec<i32> {
    match ip(&["netns", "pids", name]) {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}
