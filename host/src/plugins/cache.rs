//! The on-disk cache of compiled plugin code.
//!
//! A cache entry is native machine code that wasmtime maps and runs without
//! any check of its own (`Component::deserialize_file` is `unsafe` for that
//! reason). Whoever can put a file into the cache folder can therefore run
//! arbitrary code inside the gateway. So the cache trusts a file only if no
//! one but this process's user could have written it:
//!
//! - the folder is created owner-only (0700) and refused when it is a
//!   symbolic link, owned by another user, or writable by group or others;
//!   a refused cache does not stop the gateway, it compiles in memory;
//! - an entry is mapped only if it is a regular file owned by this user and
//!   not writable by group or others; anything else is deleted and recompiled;
//! - entries are written under a unique temporary name (several containers
//!   sharing a volume all run as PID 1) and renamed into place, so a mapped
//!   file never changes under a reader.
//!
//! Entry names are `<content hash>-<engine fingerprint>.cwasm`: compiled code
//! is only valid for the same plugin bytes, wasmtime build and code-affecting
//! engine settings.

use std::collections::HashSet;
use std::fs::{self, DirBuilder, Metadata, Permissions};
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Suffix of a finished entry.
const ENTRY_SUFFIX: &str = ".cwasm";
/// Between an entry's name and the random part of its temporary file.
const TEMP_MARK: &str = ".tmp-";
/// Random characters in a temporary name: enough that writers in different
/// containers (same PID, same clock) do not even have to retry.
const TEMP_RANDOM_CHARS: usize = 12;
/// A temporary file older than this was left by a writer that died: a write
/// takes milliseconds, even for a Python plugin's tens of megabytes.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60);
/// Longest content hash accepted as part of a file name (SHA-512 in hex);
/// the callers pass SHA-256 hex.
const MAX_HASH_LEN: usize = 128;
/// Hex digits of the engine fingerprint in a name.
const FINGERPRINT_LEN: usize = 16;

/// Compiled-code cache in one folder, or a disabled one that compiles in
/// memory every time.
pub struct CodeCache {
    dir: PathBuf,
    /// The uid whose files are trusted: this process's effective uid.
    uid: u32,
    /// Device and inode of the folder as checked by [`CodeCache::open`]: a
    /// folder swapped for another since then is not used.
    identity: (u64, u64),
    /// Why the cache is not used, if it is not.
    disabled: Option<String>,
    /// Engine fingerprints this process compiled with. [`CodeCache::prune`]
    /// deletes entries of other fingerprints (older wasmtime builds or
    /// settings), but only once it knows at least one current fingerprint,
    /// so a prune before the first compile cannot wipe a valid cache.
    fingerprints: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for CodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeCache")
            .field("dir", &self.dir)
            .field("disabled", &self.disabled)
            .finish()
    }
}

impl CodeCache {
    /// Creates the folder (owner-only; its parents normally) and checks that
    /// only this user can write into it. When it cannot be used, the reason
    /// is logged once and kept, and every compile happens in memory: a slow
    /// start is better than no gateway, and far better than running planted
    /// code.
    pub fn open(dir: &Path) -> CodeCache {
        let uid = effective_uid();
        let (identity, disabled) = match prepare_dir(dir, uid) {
            Ok(identity) => (identity, None),
            Err(reason) => {
                tracing::warn!(
                    cache = %dir.display(),
                    "compiled plugin cache disabled, plugins will be compiled at every load: {reason}"
                );
                ((0, 0), Some(reason))
            }
        };
        CodeCache {
            dir: dir.to_owned(),
            uid,
            identity,
            disabled,
            fingerprints: Mutex::new(HashSet::new()),
        }
    }

    /// Why the cache is disabled, or `None` when it is in use.
    pub fn disabled_reason(&self) -> Option<&str> {
        self.disabled.as_deref()
    }

    /// The folder this cache was opened on.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads the compiled code of a component from the cache, or compiles it
    /// and stores the result.
    ///
    /// A restart must not recompile: compiling a small Rust plugin costs
    /// ~80 ms, a Python or JavaScript one tens of seconds, loading it from
    /// the cache well under a millisecond. Problems with the cache (an
    /// untrusted or corrupt entry, a failed write) are logged and cost a
    /// compile; only a plugin that does not compile is an error.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        content_hash: &str,
    ) -> Result<Component, String> {
        if !self.usable(content_hash) {
            return Component::new(engine, bytes).map_err(|e| format!("{e:#}"));
        }
        let fingerprint = engine_fingerprint(engine);
        self.fingerprints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fingerprint.clone());
        let name = format!("{content_hash}-{fingerprint}{ENTRY_SUFFIX}");
        let path = self.dir.join(&name);

        if let Some(component) = self.load_entry(engine, &path) {
            return Ok(component);
        }
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|e| format!("{e:#}"))?;
        if let Err(e) = self.store_entry(&name, &compiled) {
            tracing::warn!(cache = %path.display(), "cannot write compiled plugin cache: {e}");
        }
        // SAFETY: `compiled` was produced just above by this engine's
        // `precompile_component`, in memory no one else can reach.
        #[allow(unsafe_code)]
        let component =
            unsafe { Component::deserialize(engine, &compiled) }.map_err(|e| format!("{e:#}"))?;
        Ok(component)
    }

    /// Deletes what the cache no longer needs: entries whose content hash is
    /// not in `keep` (the hashes of the plugin files present now), entries
    /// compiled for another engine, and temporary files left by writers that
    /// died. Files that do not follow the cache's naming scheme are never
    /// touched: the folder may be shared with something else by mistake.
    /// Returns how many files were deleted.
    pub fn prune(&self, keep: &HashSet<String>) -> usize {
        if self.disabled.is_some() || self.check_still_safe().is_err() {
            return 0;
        }
        let fingerprints = self
            .fingerprints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(cache = %self.dir.display(), "cannot list compiled plugin cache: {e}");
                return 0;
            }
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            let obsolete = match classify(name) {
                Name::Entry { hash, fingerprint } => {
                    !keep.contains(hash)
                        || (!fingerprints.is_empty() && !fingerprints.contains(fingerprint))
                }
                Name::Temp => fs::symlink_metadata(entry.path())
                    .and_then(|m| m.modified())
                    .is_ok_and(|modified| {
                        now.duration_since(modified).unwrap_or_default() > STALE_TEMP_AGE
                    }),
                Name::Other => false,
            };
            // `remove_file` deletes a symbolic link itself, never its target,
            // and refuses a directory: a matching directory stays.
            if obsolete {
                match fs::remove_file(entry.path()) {
                    Ok(()) => {
                        removed += 1;
                        tracing::debug!(file = name, "pruned compiled plugin cache file");
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(
                        cache = %self.dir.display(),
                        file = name,
                        "cannot prune compiled plugin cache file: {e}"
                    ),
                }
            }
        }
        removed
    }

    /// Whether this load may use the folder. A hash that is not plain hex
    /// could name a path outside the folder, so it is never used in a name.
    fn usable(&self, content_hash: &str) -> bool {
        if self.disabled.is_some() {
            return false;
        }
        if !is_hash(content_hash) {
            tracing::warn!(
                hash = content_hash,
                "content hash is not lowercase hex, compiling without the cache"
            );
            return false;
        }
        match self.check_still_safe() {
            Ok(()) => true,
            Err(reason) => {
                tracing::warn!(
                    cache = %self.dir.display(),
                    "compiled plugin cache not used for this load: {reason}"
                );
                false
            }
        }
    }

    /// Re-checks the folder: one `stat`, negligible next to a compile or a
    /// load, and it catches a folder replaced or loosened since `open`.
    fn check_still_safe(&self) -> Result<(), String> {
        let identity = check_dir(&self.dir, self.uid)?;
        if identity != self.identity {
            return Err(format!(
                "cache folder {} was replaced since the gateway opened it",
                self.dir.display()
            ));
        }
        Ok(())
    }

    /// Maps a trusted entry. An entry that is untrusted or does not load is
    /// deleted, so the compile that follows replaces it.
    fn load_entry(&self, engine: &Engine, path: &Path) -> Option<Component> {
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(cache = %path.display(), "cannot inspect compiled plugin cache entry, recompiling: {e}");
                return None;
            }
        };
        if let Err(reason) = check_entry(&meta, self.uid) {
            tracing::warn!(
                cache = %path.display(),
                "untrusted compiled plugin cache entry, deleting and recompiling: {reason}"
            );
            remove_if_same(path, &meta);
            return None;
        }
        // SAFETY: the entry is a regular file (not a link) owned by this
        // process's user and writable by no one else, in a folder with the
        // same properties (checked just before), so only this user can have
        // written it, and this program writes only `precompile_component`
        // output, under a name carrying this engine's compatibility
        // fingerprint, by rename (never in place, so the mapping cannot
        // change under us). Anyone able to forge it as this user could
        // already replace the gateway binary.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize_file(engine, path) };
        match loaded {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(
                    cache = %path.display(),
                    "compiled plugin cache entry unusable, deleting and recompiling: {e:#}"
                );
                remove_if_same(path, &meta);
                None
            }
        }
    }

    /// Write-then-rename under a unique temporary name, owner-only: the
    /// final name appears complete or not at all, and a reader that mapped
    /// the previous file keeps its (unlinked) copy.
    fn store_entry(&self, name: &str, compiled: &[u8]) -> io::Result<()> {
        let prefix = format!("{name}{TEMP_MARK}");
        let mut tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .rand_bytes(TEMP_RANDOM_CHARS)
            .permissions(Permissions::from_mode(0o600))
            .tempfile_in(&self.dir)?;
        tmp.write_all(compiled)?;
        tmp.persist(self.dir.join(name)).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Creates the folder owner-only if it is missing, then checks it.
fn prepare_dir(dir: &Path, uid: u32) -> Result<(u64, u64), String> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create folder {}: {e}", parent.display()))?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create cache folder {}: {e}", dir.display())),
    }
    check_dir(dir, uid)
}

/// Refuses a folder someone other than `uid` could write into. Readable by
/// others is fine: compiled plugins are no secret, and the gateway's own
/// user may need a looser umask for other reasons.
fn check_dir(dir: &Path, uid: u32) -> Result<(u64, u64), String> {
    let shown = dir.display();
    let meta = fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot inspect cache folder {shown}: {e}"))?;
    if meta.file_type().is_symlink() {
        return Err(format!(
            "cache folder {shown} is a symbolic link; use the real path"
        ));
    }
    if !meta.is_dir() {
        return Err(format!("cache folder {shown} is not a directory"));
    }
    if meta.uid() != uid {
        return Err(format!(
            "cache folder {shown} is owned by uid {}, not this process's uid {uid}",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "cache folder {shown} is writable by group/others (mode {mode:04o}); \
             `chmod 700` it or choose another folder"
        ));
    }
    Ok((meta.dev(), meta.ino()))
}

/// Why an entry must not be mapped, if it must not.
fn check_entry(meta: &Metadata, uid: u32) -> Result<(), String> {
    if meta.file_type().is_symlink() {
        return Err("it is a symbolic link".into());
    }
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    if meta.uid() != uid {
        return Err(format!(
            "it is owned by uid {}, not this process's uid {uid}",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!("it is writable by group/others (mode {mode:04o})"));
    }
    Ok(())
}

/// Deletes `path` unless it is no longer the file `meta` describes: another
/// gateway sharing the folder may have just renamed a good entry into place.
fn remove_if_same(path: &Path, meta: &Metadata) {
    let same = fs::symlink_metadata(path)
        .is_ok_and(|now| now.dev() == meta.dev() && now.ino() == meta.ino());
    if !same {
        return;
    }
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(cache = %path.display(), "cannot delete compiled plugin cache entry: {e}");
    }
}

/// What a file name in the folder is to the cache.
#[derive(Debug, PartialEq, Eq)]
enum Name<'a> {
    Entry {
        hash: &'a str,
        fingerprint: &'a str,
    },
    /// A temporary file of this cache, or of the previous scheme
    /// (`<hash>-<fingerprint>.tmp<pid>`).
    Temp,
    Other,
}

fn classify(name: &str) -> Name<'_> {
    if let Some((entry, random)) = name.split_once(TEMP_MARK) {
        if parse_entry(entry).is_some()
            && !random.is_empty()
            && random.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Name::Temp;
        }
        return Name::Other;
    }
    if let Some(stem) = name.strip_suffix(ENTRY_SUFFIX) {
        return match parse_key(stem) {
            Some((hash, fingerprint)) => Name::Entry { hash, fingerprint },
            None => Name::Other,
        };
    }
    if let Some((stem, pid)) = name.rsplit_once(".tmp")
        && parse_key(stem).is_some()
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
    {
        return Name::Temp;
    }
    Name::Other
}

/// `<hash>-<fingerprint>.cwasm` → its key.
fn parse_entry(name: &str) -> Option<(&str, &str)> {
    parse_key(name.strip_suffix(ENTRY_SUFFIX)?)
}

/// `<hash>-<fingerprint>` → (hash, fingerprint).
fn parse_key(stem: &str) -> Option<(&str, &str)> {
    let (hash, fingerprint) = stem.rsplit_once('-')?;
    (is_hash(hash) && fingerprint.len() == FINGERPRINT_LEN && is_lower_hex(fingerprint))
        .then_some((hash, fingerprint))
}

fn is_hash(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_HASH_LEN && is_lower_hex(s)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Part of every entry name: wasmtime's compatibility hash (its version and
/// the code-affecting settings), digested with SHA-256 rather than the
/// standard library's hasher, whose algorithm may change between Rust
/// releases, so a name means the same thing to every build sharing a folder.
pub fn engine_fingerprint(engine: &Engine) -> String {
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            let digest = self.0.clone().finalize();
            let mut first = [0u8; 8];
            first.copy_from_slice(&digest[..8]);
            u64::from_be_bytes(first)
        }
    }
    let mut hasher = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// The uid this process creates files as, whose files it may trust.
fn effective_uid() -> u32 {
    // SAFETY: `geteuid` takes no arguments, touches no memory of ours and
    // cannot fail (POSIX).
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid()
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
