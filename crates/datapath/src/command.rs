//! Running the helper programs the datapaths drive (`nft`, `iptables`,
//! `ovs-ofctl`): arguments, optional stdin, captured output.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::{DatapathError, Result};

/// What a finished program printed.
pub(crate) struct Output {
    pub ok: bool,
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `bin args…`, feeding `stdin`; a missing binary is
/// [`DatapathError::Unavailable`] naming the Debian `package`.
pub(crate) async fn run(
    bin: &str,
    args: &[&str],
    stdin: Option<&str>,
    package: &str,
) -> Result<Output> {
    let spawn_err = |source: std::io::Error| DatapathError::Spawn {
        program: bin.to_string(),
        source,
    };
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DatapathError::unavailable(
                bin,
                format!("the `{bin}` binary is missing (install the Debian package {package})"),
            )
        } else {
            spawn_err(e)
        }
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await.map_err(spawn_err)?;
        drop(pipe);
    }
    let out = child.wait_with_output().await.map_err(spawn_err)?;
    Ok(Output {
        ok: out.status.success(),
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Like [`run`]; a non-zero exit is [`DatapathError::Command`].
pub(crate) async fn run_ok(
    bin: &str,
    args: &[&str],
    stdin: Option<&str>,
    package: &str,
) -> Result<String> {
    let out = run(bin, args, stdin, package).await?;
    if out.ok {
        Ok(out.stdout)
    } else {
        Err(DatapathError::Command {
            command: format!("{bin} {}", args.join(" ")),
            status: out.status,
            stderr: out.stderr.trim().to_string(),
        })
    }
}
