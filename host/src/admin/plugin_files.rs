//! Plugin files on disk for the dashboard's upload and rollback.
//!
//! The watcher loads `<dir>/*.wasm` (not subfolders, not other
//! extensions), so every write goes to a hidden temp file in the same
//! folder, is synced, then renamed over the target: the registry never sees
//! a half-written plugin, and a failed upload leaves nothing behind. The
//! version an upload replaces is kept in `<dir>/.previous/<id>.wasm`,
//! which the watcher does not load; a rollback swaps the two.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The folder, inside the plugin folder, that holds replaced versions.
pub const PREVIOUS_DIR: &str = ".previous";

/// What went wrong with a plugin file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(
        "{0:?} is not a plugin file name: use <id>.wasm, the id made of letters, digits, '-', '_' and '.' (at most 100 characters, not starting with '.')"
    )]
    BadName(String),
    #[error("no previous version of {0:?} is kept: one is kept when an upload replaces the file")]
    NoPrevious(String),
    /// The running gateway refuses the file (nothing was changed).
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FileError {
    let what = what.into();
    move |source| FileError::Io { what, source }
}

/// The plugin id a file name (`<id>.wasm`, or the bare id) names.
pub fn plugin_id(file: &str) -> Result<&str, FileError> {
    let id = file.strip_suffix(".wasm").unwrap_or(file);
    let ok = !id.is_empty()
        && id.len() <= 100
        && !id.starts_with('.')
        && !id.contains("..")
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(id)
    } else {
        Err(FileError::BadName(file.to_string()))
    }
}

/// Where the current and the previous version of `id` live.
pub fn paths(dir: &Path, id: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{id}.wasm")),
        dir.join(PREVIOUS_DIR).join(format!("{id}.wasm")),
    )
}

/// Writes `bytes` to `target` by write-then-rename: a hidden temp file in
/// the target's folder (no `.wasm` extension: the watcher ignores it),
/// synced, renamed over the target, and the folder synced. On any error
/// the temp file is removed and the target is untouched.
pub fn write_atomically(target: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".upload-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io(format!(
            "cannot create a temp file in {}",
            dir.display()
        )))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io(format!("cannot write {}", tmp.path().display())))?;
    tmp.persist(target).map_err(|e| FileError::Io {
        what: format!("cannot rename into {}", target.display()),
        source: e.error,
    })?;
    sync_dir(dir);
    Ok(())
}

/// Removes upload temp files (`.upload-*.tmp`) older than `age` from `dir`
/// and its `.previous` folder: what a gateway killed mid-upload left
/// behind. Younger ones may belong to an upload in progress (another
/// gateway sharing the folder) and stay. Returns how many went.
pub fn remove_stale_uploads(dir: &Path, age: std::time::Duration) -> usize {
    let mut removed = 0;
    for folder in [dir.to_path_buf(), dir.join(PREVIOUS_DIR)] {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with(".upload-") && name.ends_with(".tmp")) {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|elapsed| elapsed >= age);
            if old && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Makes a rename durable; a folder that cannot be opened for it (some
/// file systems) costs only durability, never the write.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn previous_dir(dir: &Path) -> Result<PathBuf, FileError> {
    let p = dir.join(PREVIOUS_DIR);
    std::fs::create_dir_all(&p).map_err(io(format!("cannot create {}", p.display())))?;
    Ok(p)
}

/// Installs a new version of `id`: the current file (if any) is kept as
/// the previous version first, then the new bytes replace it. Whether a
/// version was replaced.
pub fn install(dir: &Path, id: &str, bytes: &[u8]) -> Result<bool, FileError> {
    let (current, previous) = paths(dir, id);
    let replaced = match std::fs::read(&current) {
        Ok(old) => {
            previous_dir(dir)?;
            write_atomically(&previous, &old)?;
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io(format!("cannot read {}", current.display()))(e)),
    };
    write_atomically(&current, bytes)?;
    Ok(replaced)
}

/// Puts the previous version of `id` back, keeping the one it replaces as
/// the new previous one (so a second rollback undoes the first). Each step
/// is a rename within one file system: the current file is always a whole
/// version.
pub fn rollback(dir: &Path, id: &str) -> Result<(), FileError> {
    let (current, previous) = paths(dir, id);
    let old = match std::fs::read(&previous) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FileError::NoPrevious(id.to_string()));
        }
        Err(e) => return Err(io(format!("cannot read {}", previous.display()))(e)),
    };
    let now = match std::fs::read(&current) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(format!("cannot read {}", current.display()))(e)),
    };
    write_atomically(&current, &old)?;
    match now {
        Some(now) => write_atomically(&previous, &now)?,
        None => {
            std::fs::remove_file(&previous)
                .map_err(io(format!("cannot remove {}", previous.display())))?;
        }
    }
    Ok(())
}

/// The SHA-256 of a file's bytes as hex (the hash plugins are known by),
/// if it can be read.
pub fn file_hash(path: &Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).ok()?;
    Some(
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn stale_upload_temp_files_go_and_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        let previous = dir.path().join(PREVIOUS_DIR);
        std::fs::create_dir(&previous).unwrap();
        for f in [
            dir.path().join(".upload-abc.tmp"),
            previous.join(".upload-def.tmp"),
            dir.path().join("keep.wasm"),
            dir.path().join(".upload-notes.txt"),
        ] {
            std::fs::write(f, b"x").unwrap();
        }
        // Too young to be a dead upload's: kept.
        assert_eq!(
            remove_stale_uploads(dir.path(), std::time::Duration::from_secs(600)),
            0
        );
        assert_eq!(
            remove_stale_uploads(dir.path(), std::time::Duration::ZERO),
            2
        );
        assert_eq!(
            names(dir.path()),
            [".previous", ".upload-notes.txt", "keep.wasm"]
        );
        assert!(names(&previous).is_empty());
        // A folder that does not exist is nothing to tidy.
        assert_eq!(
            remove_stale_uploads(&dir.path().join("none"), std::time::Duration::ZERO),
            0
        );
    }

    #[test]
    fn file_names_are_plain_ids() {
        assert_eq!(plugin_id("priority.wasm").unwrap(), "priority");
        assert_eq!(plugin_id("cost-aware").unwrap(), "cost-aware");
        assert_eq!(plugin_id("v1.2_x.wasm").unwrap(), "v1.2_x");
        for bad in [
            "",
            ".wasm",
            ".previous",
            "../x.wasm",
            "a/b.wasm",
            "a..b",
            "a b",
            "é.wasm",
        ] {
            let e = plugin_id(bad).unwrap_err().to_string();
            assert!(e.contains("not a plugin file name"), "{bad}: {e}");
        }
        assert!(plugin_id(&"x".repeat(101)).is_err());
    }

    #[test]
    fn install_keeps_the_replaced_version_outside_the_loaded_folder() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            !install(dir.path(), "s", b"one").unwrap(),
            "nothing replaced"
        );
        assert_eq!(names(dir.path()), ["s.wasm"], "no temp file left");
        assert!(install(dir.path(), "s", b"two").unwrap());
        let (current, previous) = paths(dir.path(), "s");
        assert_eq!(std::fs::read(&current).unwrap(), b"two");
        assert_eq!(std::fs::read(&previous).unwrap(), b"one");
        assert_eq!(names(dir.path()), [".previous", "s.wasm"]);
        assert_eq!(names(&dir.path().join(PREVIOUS_DIR)), ["s.wasm"]);
    }

    #[test]
    fn rollback_swaps_and_a_second_one_undoes_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = rollback(dir.path(), "s").unwrap_err();
        assert!(matches!(e, FileError::NoPrevious(_)), "{e}");
        install(dir.path(), "s", b"one").unwrap();
        install(dir.path(), "s", b"two").unwrap();
        let (current, previous) = paths(dir.path(), "s");
        rollback(dir.path(), "s").unwrap();
        assert_eq!(std::fs::read(&current).unwrap(), b"one");
        assert_eq!(std::fs::read(&previous).unwrap(), b"two");
        rollback(dir.path(), "s").unwrap();
        assert_eq!(std::fs::read(&current).unwrap(), b"two");
        assert_eq!(names(dir.path()), [".previous", "s.wasm"]);
        assert_eq!(names(&dir.path().join(PREVIOUS_DIR)), ["s.wasm"]);
    }

    #[test]
    fn a_failed_write_leaves_the_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("missing-folder").join("s.wasm");
        let e = write_atomically(&target, b"x").unwrap_err().to_string();
        assert!(e.contains("cannot create a temp file"), "{e}");
        assert!(!target.exists());
    }

    #[test]
    fn hashes_are_sha256_hex() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            file_hash(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(file_hash(&dir.path().join("none")), None);
    }
}
