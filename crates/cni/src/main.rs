//! `socketplane-cni`, installed as `/opt/cni/bin/socketplane`: reads the
//! CNI environment and stdin, runs the command, prints the result or a CNI
//! error object on stdout (exit 1 on error). Logs go to stderr.

use std::io::{Read, Write};
use std::process::ExitCode;

use socketplane_cni::plugin::{self, Failure, Invocation};
use socketplane_cni::spec::{Command, Env, SPEC_VERSION};
use socketplane_cni::{codes, CniError};

fn main() -> ExitCode {
    let failure = |error: CniError| Failure {
        error,
        cni_version: SPEC_VERSION.to_string(),
    };
    let result = invocation().map_err(failure).and_then(|inv| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                failure(
                    CniError::new(codes::IO, "cannot start the async runtime")
                        .with_details(e.to_string()),
                )
            })?
            .block_on(plugin::run(&inv))
    });
    let mut out = std::io::stdout().lock();
    match result {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(f) => {
            let _ = writeln!(out, "{}", f.error.to_json(&f.cni_version));
            eprintln!("socketplane-cni: {}", f.error.msg);
            ExitCode::FAILURE
        }
    }
}

fn invocation() -> Result<Invocation, CniError> {
    let command = std::env::var("CNI_COMMAND").map_err(|_| {
        CniError::new(
            codes::INVALID_ENV,
            "CNI_COMMAND is not set: this is a CNI plugin, run by a container runtime (CNI spec 1.1.0)",
        )
    })?;
    let command = Command::parse(&command)?;
    let mut stdin = Vec::new();
    // VERSION may come without a configuration; the others need one.
    std::io::stdin().read_to_end(&mut stdin).map_err(|e| {
        CniError::new(
            codes::IO,
            "cannot read the network configuration from stdin",
        )
        .with_details(e.to_string())
    })?;
    Ok(Invocation {
        command,
        env: Env::from_lookup(|k| std::env::var(k).ok()),
        stdin,
    })
}
