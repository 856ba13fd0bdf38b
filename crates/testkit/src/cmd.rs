//! Running external commands: checked (an error unless they exit 0) or as
//! test shorthands that panic with the command's output.

use std::process::{Command, Output};

use crate::error::{KitError, Result};

/// Render a command line for messages.
pub fn render(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run a command to completion; an error unless it exits 0.
pub fn run(program: &str, args: &[&str]) -> Result<Output> {
    let mut c = Command::new(program);
    c.args(args);
    checked(&mut c)
}

/// Run a prepared command to completion; an error unless it exits 0.
pub fn checked(c: &mut Command) -> Result<Output> {
    let line = describe(c);
    let out = c.output().map_err(|e| KitError::Command {
        cmd: line.clone(),
        detail: if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{} is not installed ({e})",
                c.get_program().to_string_lossy()
            )
        } else {
            e.to_string()
        },
    })?;
    if !out.status.success() {
        return Err(KitError::Command {
            cmd: line,
            detail: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        });
    }
    Ok(out)
}

/// Run `ip ARGS...`, checked.
pub fn ip(args: &[&str]) -> Result<Output> {
    run("ip", args)
}

/// `ip -j [-n NS] ARGS...` parsed as JSON. Output that is not JSON is an
/// error, never "nothing": teardown checks must not pass on a broken dump.
pub fn ip_json(netns: Option<&str>, args: &[&str]) -> Result<serde_json::Value> {
    let mut full = vec!["-j"];
    if let Some(ns) = netns {
        full.extend(["-n", ns]);
    }
    full.extend_from_slice(args);
    let out = ip(&full)?;
    let text = String::from_utf8_lossy(&out.stdout);
    // `ip -j` prints nothing at all for some empty dumps.
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    serde_json::from_str(&text).map_err(|e| KitError::Output {
        cmd: render("ip", &full),
        detail: format!("{e}: {text}"),
    })
}

/// Test shorthand: run `argv`, panic with its output unless it exits 0;
/// returns stdout.
pub fn sh(argv: &[&str]) -> String {
    let (program, args) = argv.split_first().expect("sh: empty command");
    match run(program, args) {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => panic!("{e}"),
    }
}

/// Test shorthand: run `argv` and say whether it exited 0. Panics only if
/// it cannot run at all (a missing program is a broken setup, not "false").
pub fn try_sh(argv: &[&str]) -> bool {
    let (program, args) = argv.split_first().expect("try_sh: empty command");
    Command::new(program)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", render(program, args)))
}

fn describe(c: &Command) -> String {
    let args: Vec<String> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    render(&c.get_program().to_string_lossy(), &args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_status_and_stderr() {
        let err = run("sh", &["-c", "echo oops >&2; exit 3"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sh -c"), "{text}");
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.contains("oops"), "{text}");
        assert!(run("true", &[]).is_ok());
        assert!(run("/nonexistent/prog", &[])
            .unwrap_err()
            .to_string()
            .contains("not installed"));
    }

    #[test]
    fn shorthands() {
        assert_eq!(sh(&["echo", "hi"]), "hi\n");
        assert!(try_sh(&["true"]));
        assert!(!try_sh(&["false"]));
    }
}
