//! What a test needs before it can run: root and network namespaces
//! (privileged tests skip without them, with a printed reason), and
//! installed programs (a missing one fails the test, naming the package).

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::error::{KitError, Result};

/// With this set to `1`, a privileged test that cannot run panics instead
/// of skipping (`scripts/test.sh` sets it, so CI cannot go green by
/// skipping).
pub const REQUIRE_PRIVILEGED_ENV: &str = "SOCKETPLANE_REQUIRE_PRIVILEGED";

/// Why privileged tests cannot run here, or `None` when they can: the
/// process must be root and able to make a network namespace.
pub fn privileged_unavailable() -> Option<&'static str> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON.get_or_init(probe).as_deref()
}

fn probe() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (network namespaces)".into());
    }
    // unshare on a throwaway thread: it changes only that thread.
    let made = std::thread::spawn(|| nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET))
        .join()
        .unwrap_or(Err(nix::errno::Errno::EINVAL));
    match made {
        Ok(()) => None,
        Err(e) => Some(format!(
            "needs root (network namespaces): cannot create one here ({e})"
        )),
    }
}

/// What a privileged test does when it cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Run the test.
    Run,
    /// Skip it, printing this line.
    Skip(String),
    /// Fail it with this message (skipping is forbidden).
    Fail(String),
}

/// The decision, apart from the machine: `reason` why privileged tests
/// cannot run (if any) and the value of [`REQUIRE_PRIVILEGED_ENV`].
pub fn verdict(test: &str, reason: Option<&str>, require_env: Option<&str>) -> Verdict {
    match reason {
        None => Verdict::Run,
        Some(r) if require_env == Some("1") => Verdict::Fail(format!(
            "{test}: {r}, and {REQUIRE_PRIVILEGED_ENV}=1 forbids skipping it"
        )),
        Some(r) => Verdict::Skip(format!("SKIPPED {test}: {r}")),
    }
}

/// Call first in a test that needs root and network namespaces; returns
/// true when the test must return at once (it was reported as skipped).
/// Panics instead when [`REQUIRE_PRIVILEGED_ENV`] is `1`. Prefer the
/// [`require_privileged!`](crate::require_privileged) macro.
pub fn skip_unless_privileged(test: &str) -> bool {
    let env = std::env::var(REQUIRE_PRIVILEGED_ENV).ok();
    match verdict(test, privileged_unavailable(), env.as_deref()) {
        Verdict::Run => false,
        Verdict::Skip(line) => {
            // Straight to the process's stderr: libtest captures `eprintln!`
            // of passing tests, and a skip must be seen.
            let _ = writeln!(std::io::stderr(), "{line}");
            true
        }
        Verdict::Fail(msg) => panic!("{msg}"),
    }
}

/// Skip the calling test (return from it) unless it can use root and
/// network namespaces; see [`skip_unless_privileged`]. Takes the test's
/// name, or uses the calling function's path.
#[macro_export]
macro_rules! require_privileged {
    () => {
        if $crate::skip_unless_privileged($crate::function_name!()) {
            return;
        }
    };
    ($name:expr) => {
        if $crate::skip_unless_privileged(&$name) {
            return;
        }
    };
}

/// The path of the function it is used in (`crate::module::function`).
#[macro_export]
macro_rules! function_name {
    () => {{
        fn here() {}
        fn name_of<T>(_: T) -> &'static str {
            ::std::any::type_name::<T>()
        }
        let name = name_of(here);
        name.strip_suffix("::here").unwrap_or(name)
    }};
}

/// Where `program` is on `PATH` (or the path itself if it has a `/`).
pub fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// An error naming the Debian `package` unless `program` is installed.
pub fn check_program(program: &str, package: &str) -> Result<PathBuf> {
    find_program(program).ok_or_else(|| KitError::Missing {
        program: program.into(),
        package: package.into(),
    })
}

/// Panic, naming the Debian `package`, unless `program` is installed.
pub fn require(program: &str, package: &str) {
    if let Err(e) = check_program(program, package) {
        panic!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(verdict("t", None, Some("1")), Verdict::Run);
        assert_eq!(verdict("t", None, None), Verdict::Run);
        assert_eq!(
            verdict("t", Some("needs root (network namespaces)"), None),
            Verdict::Skip("SKIPPED t: needs root (network namespaces)".into())
        );
        assert_eq!(
            verdict("t", Some("needs root (network namespaces)"), Some("0")),
            Verdict::Skip("SKIPPED t: needs root (network namespaces)".into())
        );
        match verdict("t", Some("needs root (network namespaces)"), Some("1")) {
            Verdict::Fail(m) => assert!(m.contains(REQUIRE_PRIVILEGED_ENV), "{m}"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn function_name_names_the_caller() {
        assert_eq!(
            crate::function_name!(),
            "socketplane_testkit::gate::tests::function_name_names_the_caller"
        );
    }

    #[test]
    fn programs() {
        assert!(find_program("sh").is_some());
        let err = check_program("no-such-program-xyz", "some-package").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`no-such-program-xyz` is not installed: install the Debian package some-package"
        );
    }

    #[test]
    #[should_panic(expected = "install the Debian package pkg")]
    fn require_panics_with_the_package() {
        require("no-such-program-xyz", "pkg");
    }
}
