//! A unix socket only its owner can reach, from the moment it has a name:
//! it is bound in a fresh private (0700) directory beside its final path,
//! restricted to 0600 there, then renamed into place. Binding in place and
//! `chmod` afterwards would leave a window in which anyone could connect;
//! so would a process-wide `umask`, which other threads share.

use std::fs::{DirBuilder, Permissions};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use tokio::net::UnixListener;

use crate::error::{Error, Result};

/// Mode of the socket itself.
pub const SOCKET_MODE: u32 = 0o600;
/// Mode of a socket directory the agent creates.
pub const DIR_MODE: u32 = 0o700;

/// Binds a listening socket at `path` (mode 0600), replacing a stale one
/// left by a crashed agent. Missing parent directories are created 0700; an
/// existing one others may write to is used, with a warning, since they
/// could put their own socket in its place.
pub fn bind(path: &Path) -> Result<UnixListener> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(Error::io(format!("creating {}", dir.display())))?;
    } else if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.permissions().mode();
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o7777),
                "The local API socket's directory is writable by others; use a 0700 directory.");
        }
    }
    // tempfile makes the directory 0700 and removes it when dropped.
    let private = tempfile::Builder::new()
        .prefix(".socketplane-bind-")
        .tempdir_in(dir)
        .map_err(Error::io(format!(
            "creating a private directory in {}",
            dir.display()
        )))?;
    let staged = private.path().join("sock");
    let listener = UnixListener::bind(&staged).map_err(Error::io(format!(
        "binding the local API socket {}",
        path.display()
    )))?;
    std::fs::set_permissions(&staged, Permissions::from_mode(SOCKET_MODE))
        .map_err(Error::io(format!("restricting {}", staged.display())))?;
    std::fs::rename(&staged, path).map_err(Error::io(format!(
        "moving the local API socket to {}",
        path.display()
    )))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileTypeExt;

    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// The socket's name only ever appears by a rename of the finished,
    /// restricted socket (never created in place), in a 0700 directory.
    #[tokio::test]
    async fn the_socket_is_0600_from_the_moment_it_has_a_name() {
        let top = tempfile::tempdir().unwrap();
        let run = top.path().join("run/socketplane");
        let path = run.join("sp.sock");
        let first = bind(&path).unwrap();
        assert_eq!(mode(&run), DIR_MODE, "the socket's directory");
        assert_eq!(mode(run.parent().unwrap()), DIR_MODE);
        assert_eq!(mode(&path), SOCKET_MODE);
        assert!(std::fs::metadata(&path).unwrap().file_type().is_socket());
        tokio::net::UnixStream::connect(&path).await.unwrap();
        drop(first);

        // Again over the stale socket, watching the directory.
        let watch = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
        watch
            .add_watch(
                &run,
                AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ATTRIB,
            )
            .unwrap();
        let second = bind(&path).unwrap();
        let events = watch.read_events().unwrap();
        let ours: Vec<_> = events
            .iter()
            .filter(|e| e.name.as_deref() == Some(std::ffi::OsStr::new("sp.sock")))
            .collect();
        assert!(
            !ours.is_empty() && ours.iter().all(|e| e.mask == AddWatchFlags::IN_MOVED_TO),
            "the socket must appear only by rename: {ours:?}"
        );
        assert_eq!(mode(&path), SOCKET_MODE);
        tokio::net::UnixStream::connect(&path).await.unwrap();
        // The private directory is gone: only the socket is left.
        let left: Vec<_> = std::fs::read_dir(&run).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");
        drop(second);
    }
}
