//! What the apply examples share: their common flags, reading the desired
//! state, applying it (or tearing down) and reporting as JSON.

use std::io::Read;
use std::net::Ipv4Addr;

use socketplane_datapath::{Datapath, DesiredState};

/// The flags every apply example takes.
pub struct Flags {
    pub prog: &'static str,
    pub iface: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
    pub table: Option<String>,
    pub teardown: bool,
    pub file: String,
}

impl Flags {
    /// Parses the command line; `extra(flag, value)` takes the example's
    /// own flags (returns false for an unknown one).
    pub fn parse(
        prog: &'static str,
        usage: &str,
        mut extra: impl FnMut(&str, &mut dyn FnMut() -> String) -> bool,
    ) -> Flags {
        let usage = || -> ! {
            eprintln!("usage: {prog} {usage}");
            std::process::exit(2)
        };
        let mut f = Flags {
            prog,
            iface: None,
            ip: None,
            mtu: None,
            table: None,
            teardown: false,
            file: "-".into(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut val = || args.next().unwrap_or_else(|| usage());
            match a.as_str() {
                "--iface" => f.iface = Some(val()),
                "--ip" => f.ip = Some(val().parse().unwrap_or_else(|_| usage())),
                "--mtu" => f.mtu = Some(val().parse().unwrap_or_else(|_| usage())),
                "--table" => f.table = Some(val()),
                "--teardown" => f.teardown = true,
                "-h" | "--help" => usage(),
                flag if flag.starts_with("--") => {
                    if !extra(flag, &mut val) {
                        usage()
                    }
                }
                file => f.file = file.to_string(),
            }
        }
        f
    }

    pub fn fail(&self, msg: impl std::fmt::Display) -> ! {
        eprintln!("{}: {msg}", self.prog);
        std::process::exit(1)
    }

    /// Tears down, or applies the desired state in [`Flags::file`] and
    /// prints `{"changes":N,"elapsed_ms":T}`.
    pub async fn run(&self, dp: &dyn Datapath) {
        if self.teardown {
            if let Err(e) = dp.teardown().await {
                self.fail(format!("teardown: {e}"));
            }
            return;
        }
        let mut text = String::new();
        let read = if self.file == "-" {
            std::io::stdin().read_to_string(&mut text).map(|_| ())
        } else {
            std::fs::read_to_string(&self.file).map(|t| text = t)
        };
        if let Err(e) = read {
            self.fail(format!("cannot read {}: {e}", self.file));
        }
        let desired: DesiredState = serde_json::from_str(&text)
            .unwrap_or_else(|e| self.fail(format!("bad desired state: {e}")));
        let start = std::time::Instant::now();
        match dp.apply(&desired).await {
            Ok(r) => println!(
                "{{\"changes\":{},\"elapsed_ms\":{:.3}}}",
                r.changes,
                start.elapsed().as_secs_f64() * 1000.0
            ),
            Err(e) => self.fail(e),
        }
    }
}
