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
mod tests {
    use super::*;
    use std::sync::Arc;
    use wasmtime::Store;
    use wasmtime::component::Linker;

    /// The smallest component: a header and nothing else.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";
    const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).unwrap()
    }

    fn entry_path(cache: &CodeCache, engine: &Engine, hash: &str) -> PathBuf {
        cache
            .dir()
            .join(format!("{hash}-{}.cwasm", engine_fingerprint(engine)))
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    /// The component really works: it instantiates.
    fn assert_usable(engine: &Engine, component: &Component) {
        let linker = Linker::<()>::new(engine);
        let mut store = Store::new(engine, ());
        linker.instantiate(&mut store, component).unwrap();
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn creates_the_folder_owner_only_and_caches() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/cache");
        let cache = CodeCache::open(&dir);
        assert_eq!(cache.disabled_reason(), None);
        assert_eq!(mode(&dir), 0o700);

        let engine = engine();
        let component = cache
            .load_or_compile(&engine, EMPTY_COMPONENT, HASH_A)
            .unwrap();
        assert_usable(&engine, &component);
        let entry = entry_path(&cache, &engine, HASH_A);
        assert_eq!(mode(&entry), 0o600);
        assert_eq!(files(&dir).len(), 1, "no temporary file left behind");

        // A hit maps the same file; it is not rewritten.
        let inode = fs::metadata(&entry).unwrap().ino();
        let again = cache
            .load_or_compile(&engine, EMPTY_COMPONENT, HASH_A)
            .unwrap();
        assert_usable(&engine, &again);
        assert_eq!(fs::metadata(&entry).unwrap().ino(), inode);
    }

    #[test]
    fn a_folder_writable_by_others_is_refused_and_compiling_still_works() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o777)).unwrap();
        let cache = CodeCache::open(&dir);
        let reason = cache.disabled_reason().expect("refused");
        assert!(
            reason.contains("writable by group/others (mode 0777)"),
            "{reason}"
        );
        assert!(reason.contains(&dir.display().to_string()), "{reason}");

        let engine = engine();
        let component = cache
            .load_or_compile(&engine, EMPTY_COMPONENT, HASH_A)
            .unwrap();
        assert_usable(&engine, &component);
        assert!(files(&dir).is_empty(), "a refused folder is not written");
        assert_eq!(cache.prune(&HashSet::new()), 0);
    }

    #[test]
    fn a_symlinked_folder_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::set_permissions(&real, Permissions::from_mode(0o700)).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let cache = CodeCache::open(&link);
        let reason = cache.disabled_reason().expect("refused");
        assert!(reason.contains("symbolic link"), "{reason}");
    }

    #[test]
    fn a_folder_of_another_user_is_refused() {
        if effective_uid() != 0 {
            // Only root can give a folder away; the check itself is the
            // same comparison as for entries.
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&dir, Some(1234), None).unwrap();
        let cache = CodeCache::open(&dir);
        let reason = cache.disabled_reason().expect("refused");
        assert!(
            reason.contains("owned by uid 1234, not this process's uid 0"),
            "{reason}"
        );
    }

    #[test]
    fn a_planted_entry_writable_by_others_is_replaced() {
        let root = tempfile::tempdir().unwrap();
        let cache = CodeCache::open(&root.path().join("cache"));
        let engine = engine();
        // Valid compiled code: only the permission check keeps it from
        // being mapped.
        let planted = engine.precompile_component(EMPTY_COMPONENT).unwrap();
        let entry = entry_path(&cache, &engine, HASH_A);
        fs::write(&entry, &planted).unwrap();
        fs::set_permissions(&entry, Permissions::from_mode(0o666)).unwrap();
        // A second link keeps the planted inode alive, so its number cannot
        // be reused by the replacement.
        fs::hard_link(&entry, root.path().join("planted")).unwrap();
        let planted_inode = fs::metadata(&entry).unwrap().ino();

        let component = cache
            .load_or_compile(&engine, EMPTY_COMPONENT, HASH_A)
            .unwrap();
        assert_usable(&engine, &component);
        assert_eq!(mode(&entry), 0o600, "rewritten by the cache");
        assert_ne!(fs::metadata(&entry).unwrap().ino(), planted_inode);
    }

    #[test]
    fn a_symlinked_entry_is_replaced_and_its_target_untouched() {
        let root = tempfile::tempdir().unwrap();
        let cache = CodeCache::open(&root.path().join("cache"));
        let engine = engine();
        let target = root.path().join("elsewhere.cwasm");
        fs::write(
            &target,
            engine.precompile_component(EMPTY_COMPONENT).unwrap(),
        )
        .unwrap();
        let entry = entry_path(&cache, &engine, HASH_A);
        std::os::unix::fs::symlink(&target, &entry).unwrap();

        let component = cache
            .load_or_compile(&engine, EMPTY_COMPONENT, HASH_A)
            .unwrap();
        assert_usable(&engine, &component);
        assert!(fs::symlink_metadata(&entry).unwrap().is_file());
        assert!(target.exists());
    }

    #[test]
    fn a_corrupt_entry_is_deleted_and_recompiled() {
        let root = tempfile::tempdir().unwrap();
        let cache = CodeCache::open(&root.path().join("cache"));
        let engine = engine();
        let entry = entry_path(&cache, &engine, HASH_A);
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        fs::write(&entry, &garbage).unwrap();
        fs::set_permissions(&entry, Permissions::from_mode(0o600)).unwrap();

        let component = cache
            .load_or_compile(&engine, EMPTY_COMPONENT, HASH_A)
            .unwrap();
        assert_usable(&engine, &component);
        assert_ne!(fs::read(&entry).unwrap(), garbage);

        // The rewritten entry is a good one: a second cache maps it.
        let inode = fs::metadata(&entry).unwrap().ino();
        let reopened = CodeCache::open(cache.dir());
        let component = reopened
            .load_or_compile(&engine, EMPTY_COMPONENT, HASH_A)
            .unwrap();
        assert_usable(&engine, &component);
        assert_eq!(fs::metadata(&entry).unwrap().ino(), inode);
    }

    #[test]
    fn a_hash_that_is_not_hex_never_names_a_file() {
        let root = tempfile::tempdir().unwrap();
        let cache = CodeCache::open(&root.path().join("cache"));
        let engine = engine();
        for hash in ["../../escape", "", "ABCDEF", "a/b"] {
            let component = cache
                .load_or_compile(&engine, EMPTY_COMPONENT, hash)
                .unwrap();
            assert_usable(&engine, &component);
        }
        assert!(files(cache.dir()).is_empty());
        assert_eq!(files(root.path()), vec!["cache".to_string()]);
    }

    #[test]
    fn a_component_that_does_not_compile_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let cache = CodeCache::open(&root.path().join("cache"));
        let err = cache
            .load_or_compile(&engine(), b"\0asm\x0d\0\x01\0garbage", HASH_A)
            .unwrap_err();
        assert!(!err.is_empty());
        assert!(files(cache.dir()).is_empty());
    }

    #[test]
    fn prune_keeps_only_current_entries_and_cache_files() {
        let root = tempfile::tempdir().unwrap();
        let cache = CodeCache::open(&root.path().join("cache"));
        let dir = cache.dir().to_owned();
        let engine = engine();
        let fingerprint = engine_fingerprint(&engine);

        // Before any compile the current fingerprint is unknown: entries of
        // kept hashes survive whatever their fingerprint.
        let other_engine = format!("{HASH_A}-0123456789abcdef.cwasm");
        fs::write(dir.join(&other_engine), b"old").unwrap();
        assert_eq!(cache.prune(&HashSet::from([HASH_A.to_string()])), 0);

        cache
            .load_or_compile(&engine, EMPTY_COMPONENT, HASH_A)
            .unwrap();
        cache
            .load_or_compile(&engine, EMPTY_COMPONENT, HASH_B)
            .unwrap();
        let old = SystemTime::now() - Duration::from_secs(600);
        let stale_temp = format!("{HASH_A}-{fingerprint}.cwasm.tmp-AbC123xyz789");
        let fresh_temp = format!("{HASH_A}-{fingerprint}.cwasm.tmp-Fresh0000001");
        let legacy_temp = format!("{HASH_B}-{fingerprint}.tmp1");
        for name in [&stale_temp, &fresh_temp, &legacy_temp] {
            fs::write(dir.join(name), b"partial").unwrap();
        }
        for name in [&stale_temp, &legacy_temp] {
            fs::File::options()
                .write(true)
                .open(dir.join(name))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let unrelated = [
            "README",
            "notes.cwasm",
            "zz-0123456789abcdef.cwasm",
            "x.tmp-old",
        ];
        for name in unrelated {
            fs::write(dir.join(name), b"not ours").unwrap();
            fs::File::options()
                .write(true)
                .open(dir.join(name))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        // A directory with an entry's name is never removed.
        let dir_entry = format!("{HASH_B}-0000000000000000.cwasm");
        fs::create_dir(dir.join(&dir_entry)).unwrap();

        let removed = cache.prune(&HashSet::from([HASH_A.to_string()]));
        assert_eq!(removed, 4, "{:?}", files(&dir));
        let mut expected: Vec<String> = unrelated.iter().map(|s| s.to_string()).collect();
        expected.push(format!("{HASH_A}-{fingerprint}.cwasm"));
        expected.push(fresh_temp);
        expected.push(dir_entry);
        expected.sort();
        assert_eq!(files(&dir), expected);

        // The kept entry still loads.
        let component = cache
            .load_or_compile(&engine, EMPTY_COMPONENT, HASH_A)
            .unwrap();
        assert_usable(&engine, &component);
    }

    #[test]
    fn concurrent_writers_of_one_entry_all_succeed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache");
        let engine = engine();
        let caches = [
            Arc::new(CodeCache::open(&dir)),
            Arc::new(CodeCache::open(&dir)),
        ];
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let cache = caches[i % 2].clone();
                let engine = engine.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..5 {
                        let component = cache
                            .load_or_compile(&engine, EMPTY_COMPONENT, HASH_A)
                            .unwrap();
                        assert_usable(&engine, &component);
                        // Force misses too, so writes race with reads.
                        let _ = fs::remove_file(entry_path(&cache, &engine, HASH_A));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        // Only finished entries remain (at most the one), never a temp file.
        for name in files(&dir) {
            assert_eq!(
                classify(&name),
                Name::Entry {
                    hash: HASH_A,
                    fingerprint: &engine_fingerprint(&engine)
                },
                "{name}"
            );
        }
        let component = caches[0]
            .load_or_compile(&engine, EMPTY_COMPONENT, HASH_A)
            .unwrap();
        assert_usable(&engine, &component);
    }

    #[test]
    fn names_are_classified_strictly() {
        let fp = "0123456789abcdef";
        assert_eq!(
            classify(&format!("{HASH_A}-{fp}.cwasm")),
            Name::Entry {
                hash: HASH_A,
                fingerprint: fp
            }
        );
        assert_eq!(
            classify(&format!("{HASH_A}-{fp}.cwasm.tmp-x1Y2")),
            Name::Temp
        );
        assert_eq!(classify(&format!("{HASH_A}-{fp}.tmp42")), Name::Temp);
        for other in [
            format!("{HASH_A}-{fp}.cwasm.tmp-"),
            format!("{HASH_A}-{fp}.cwasm.tmp-a/b"),
            format!("{HASH_A}-{fp}.tmp"),
            format!("{HASH_A}-{fp}.tmpx"),
            format!("{HASH_A}-0123.cwasm"),
            format!("{HASH_A}-0123456789ABCDEF.cwasm"),
            format!("-{fp}.cwasm"),
            format!("{HASH_A}{fp}.cwasm"),
            "plugin.wasm".to_string(),
        ] {
            assert_eq!(classify(&other), Name::Other, "{other}");
        }
    }

    #[test]
    fn the_fingerprint_is_stable_and_follows_code_settings() {
        let a = engine_fingerprint(&engine());
        assert_eq!(a, engine_fingerprint(&engine()));
        assert_eq!(a.len(), FINGERPRINT_LEN);
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let b = engine_fingerprint(&Engine::new(&config).unwrap());
        assert_ne!(a, b);
    }
}
