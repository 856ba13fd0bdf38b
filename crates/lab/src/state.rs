//! The lab's saved state: `STATE_DIR/lab.json`, written after every
//! change (atomically, via a temp file), so `up`, `exec` and `down` can be
//! separate processes; and removing what the lab keeps in its state dir.

use std::fs;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{io_err, LabError, Result};

/// The state file in a lab's state dir.
pub(crate) const STATE_FILE: &str = "lab.json";

/// Whether a saved state exists in `dir`.
pub(crate) fn exists(dir: &Path) -> bool {
    dir.join(STATE_FILE).exists()
}

/// Save `state` to `dir/lab.json`.
pub(crate) fn save<T: Serialize>(dir: &Path, state: &T) -> Result<()> {
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let text = serde_json::to_string_pretty(state).map_err(|source| LabError::State {
        path: path.clone(),
        source,
    })?;
    // 0600: the state holds the lab's cluster token.
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = fs::remove_file(&tmp);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(text.as_ref()))
            .map_err(io_err(format!("cannot write {}", tmp.display())))?;
    }
    fs::rename(&tmp, &path).map_err(io_err(format!("cannot write {}", path.display())))
}

/// Load the state saved in `dir`.
pub(crate) fn load<T: DeserializeOwned>(dir: &Path) -> Result<T> {
    let path = dir.join(STATE_FILE);
    let text = fs::read_to_string(&path)
        .map_err(io_err(format!("cannot read lab state {}", path.display())))?;
    serde_json::from_str(&text).map_err(|source| LabError::State { path, source })
}

/// Remove what a lab keeps in its state dir (`lab.json`, `hostN/`), then
/// the dir itself if that leaves it empty; anything else in it is kept.
pub(crate) fn remove(dir: &Path, errors: &mut Vec<LabError>) {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            errors.push(io_err(format!("cannot list {}", dir.display()))(e));
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let ours_file = name == STATE_FILE || name == format!("{STATE_FILE}.tmp");
        let ours_dir = name == crate::etcd::ETCD_DIR
            || name
                .strip_prefix("host")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let result = if ours_file {
            fs::remove_file(&path)
        } else if ours_dir && path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            continue;
        };
        if let Err(e) = result {
            errors.push(io_err(format!("cannot remove {}", path.display()))(e));
        }
    }
    if let Err(e) = fs::remove_dir(dir) {
        tracing::warn!(error = %e, dir = %dir.display(), "Left the lab's state dir in place.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_loads_and_removes_only_its_own_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lab");
        fs::create_dir_all(dir.join("host1/data")).unwrap();
        save(&dir, &vec![1, 2, 3]).unwrap();
        assert!(exists(&dir));
        assert_eq!(load::<Vec<u32>>(&dir).unwrap(), vec![1, 2, 3]);
        fs::write(dir.join("notes.txt"), "keep me").unwrap();
        let mut errors = Vec::new();
        remove(&dir, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(!exists(&dir));
        assert!(!dir.join("host1").exists());
        assert!(dir.join("notes.txt").exists(), "not ours: kept");
        fs::write(dir.join(STATE_FILE), "{broken").unwrap();
        assert!(matches!(
            load::<Vec<u32>>(&dir),
            Err(LabError::State { .. })
        ));
    }
}
