//! A clean clone builds with nothing but a Rust toolchain (issue 10).
//!
//! Clones this repository's committed HEAD, hides every `protoc` on the
//! machine and the protobuf include files in a private mount namespace, and
//! runs `cargo build --locked` there with a fresh target
//! directory, so every build script really runs. The hiding is checked
//! first: if `protoc` still answers inside the namespace, the test fails
//! rather than proving nothing.
//!
//! Needs root (mount namespaces; skipped with a reason otherwise); it is one test in its own binary, since
//! a full build takes minutes and should not compete with the
//! multi-host tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Directories whose `google/protobuf/*.proto` files protoc would find.
const PROTO_INCLUDE_DIRS: &[&str] = &["/usr/include/google", "/usr/local/include/google"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// Every `protoc` on `PATH` (and the usual places), resolved to real files.
fn protoc_binaries() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/bin", "/usr/local/bin", "/bin"].map(PathBuf::from));
    let mut found: Vec<PathBuf> = dirs
        .iter()
        .map(|d| d.join("protoc"))
        .filter(|p| p.exists())
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    found.sort();
    found.dedup();
    found
}

#[test]
fn clean_clone_builds_without_protoc() {
    socketplane_testkit::require_privileged!();
    let work = tempfile::tempdir().expect("temp dir");
    let clone = work.path().join("src");
    let st = Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(repo_root())
        .arg(&clone)
        .status()
        .expect("run git clone");
    assert!(st.success(), "git clone failed: {st}");

    // Inside a private mount namespace: /dev/null over each protoc, an
    // empty tmpfs over each protobuf include dir; then prove protoc is gone
    // and the includes are empty; then build.
    let mut script = String::from("set -eu\n");
    for p in protoc_binaries() {
        script.push_str(&format!("mount --bind /dev/null '{}'\n", p.display()));
    }
    for d in PROTO_INCLUDE_DIRS {
        if Path::new(d).is_dir() {
            script.push_str(&format!("mount -t tmpfs tmpfs '{d}'\n"));
        }
    }
    script.push_str(
        "if protoc --version >/dev/null 2>&1; then echo 'protoc still runs' >&2; exit 97; fi\n\
         for d in /usr/include/google /usr/local/include/google; do\n\
           if [ -e \"$d/protobuf/descriptor.proto\" ]; then echo \"$d still visible\" >&2; exit 98; fi\n\
         done\n\
         unset PROTOC PROTOC_INCLUDE\n\
         cargo build --locked --quiet --config 'profile.dev.package.\"*\".opt-level=0'\n\
         \"$CARGO_TARGET_DIR/debug/socketplane\" --version\n",
    );
    let target = work.path().join("target");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .current_dir(&clone)
        .env("CARGO_TARGET_DIR", &target)
        // The plain `cargo build` a user runs; without debug info,
        // incremental state and optimised dependencies only to keep CI
        // short (what it needs to build, build scripts included, is the same).
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .env("CARGO_INCREMENTAL", "0")
        .env_remove("RUSTC_WRAPPER")
        .output()
        .expect("run unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(97),
        "protoc was not hidden: {stderr}"
    );
    assert_ne!(
        out.status.code(),
        Some(98),
        "protobuf includes were not hidden: {stderr}"
    );
    assert!(
        out.status.success(),
        "cargo build --locked of a clean clone failed without protoc:\n{stderr}"
    );
    // The clone's own target dir was fresh: the binary must come from it.
    assert!(
        target.join("debug/socketplane").is_file(),
        "no binary in the fresh target dir"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("socketplane"),
        "the built binary did not print its version: {stdout}"
    );
}
