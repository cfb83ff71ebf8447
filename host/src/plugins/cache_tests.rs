//! Tests of [`super`] (`cache.rs`), kept apart so the module stays readable.

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

/// Loads `HASH_A` through `cache`: usable, and mapped from `entry` as it
/// is (the file is not rewritten).
fn assert_hit(cache: &CodeCache, engine: &Engine, entry: &Path) {
    let inode = fs::metadata(entry).unwrap().ino();
    let component = cache
        .load_or_compile(engine, EMPTY_COMPONENT, HASH_A)
        .unwrap();
    assert_usable(engine, &component);
    assert_eq!(fs::metadata(entry).unwrap().ino(), inode);
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
    assert_hit(&cache, &engine, &entry);
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
    assert_hit(&CodeCache::open(cache.dir()), &engine, &entry);
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
