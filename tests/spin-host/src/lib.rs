//! Spin test host: a tiny WASI 0.2 component that EXPORTS the two Spin host interfaces
//! the gateway's Spin build imports, so the gateway can run under plain `wasmtime serve`
//! (which does not provide them) after `wac plug <gateway> --plug <this>`:
//!
//! * `fermyon:spin/key-value@2.0.0` - every store label lives in the directory
//!   `/kv/<label>/` of a preopened directory (`wasmtime serve --dir <host-dir>::/kv`).
//!   One file per key; the file name is the lowercase hex of the key's UTF-8 bytes, the
//!   file content is the raw value. Writes go to a `.tmp-*` file in the same directory
//!   and are then renamed over the target, so readers never see a half-written value.
//!   State therefore persists across requests and across wasmtime restarts, and
//!   `scripts/spin-kv-put` can seed it from outside.
//! * `fermyon:spin/variables@2.0.0` - `get(name)` validates `name` like Spin does
//!   (lowercase ASCII letters, digits and single underscores, starting with a letter,
//!   ending with a letter or digit) and returns the WASI environment variable
//!   `SPIN_VARIABLE_<NAME uppercased>`, the mapping of Spin's environment-variable
//!   provider (`wasmtime serve --env SPIN_VARIABLE_OPENAI_API_KEY=...`).
//!
//! What this fixture does NOT do (it is not Spin):
//! * no `spin.toml`: no route table (every path reaches the one component), no
//!   `allowed_outbound_hosts` enforcement (outbound HTTP goes wherever wasmtime lets it),
//!   no check that a KV label is listed in `key_value_stores` (any label matching
//!   `[A-Za-z0-9_.-]+` opens; anything else is `no-such-store`), no `[variables]`
//!   declarations, defaults, `required`/`secret` flags or templates (any valid name that
//!   is set in the environment resolves), no Vault/Azure/dotenv providers;
//! * no `store-table-full`/`access-denied` errors; no size/quota limits;
//! * keys must be 1..=127 bytes (the hex file name has to fit a 255-byte file name) -
//!   other keys get `error::other`, never a panic;
//! * `wasi:keyvalue/store@0.2.0-draft2` and `wasi:keyvalue/atomics@0.2.0-draft2` over the
//!   same directories (Spin serves both interfaces over the same stores): a bucket is the
//!   key-value store of that label. Compare-and-swap and increment hold the store's lock
//!   file `.work/lock` (created exclusively; taken over when older than 5 s) around their
//!   read-compare-write, so they are atomic across the concurrent instances of one
//!   `wasmtime serve`; a `swap` whose key changed since its `cas` was made fails with
//!   `cas-failed`. Increments are stored as 8 little-endian bytes.
//! * no transactions (key-value@2.0.0 has none): concurrent read-modify-write through it
//!   from parallel requests can lose updates, as on real Spin.

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

wit_bindgen::generate!({
    path: "../../wit",
    world: "spin-test-host",
});

use exports::fermyon::spin::key_value::{self as kv, Error as KvError};
use exports::fermyon::spin::variables::{self as vars, Error as VarError};
use exports::wasi::keyvalue::atomics::{self, CasError};
use exports::wasi::keyvalue::store::{self as wasi_kv, Error as WasiKvError};

/// Guest path under which the host directory holding all stores is preopened.
const KV_ROOT: &str = "/kv";
/// Longest key whose hex encoding still fits in a 255-byte file name.
const MAX_KEY_BYTES: usize = 127;
/// A store's working directory, inside it: in-flight temp files and the lock file live there,
/// so that the store's own directory changes only when a key is written or deleted (a listing
/// meets few entries that vanish under it, see `get_keys`). Never a valid hex name.
const WORK_DIR: &str = ".work";

struct Host;

/// One open store: the directory it lives in, and its working directory.
#[derive(Clone)]
pub struct FileStore {
    dir: PathBuf,
    work: PathBuf,
}

fn other(what: &str, path: &Path, err: std::io::Error) -> KvError {
    KvError::Other(format!("spin-test-host: {what} {}: {err}", path.display()))
}

fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    out
}

/// Decodes a lowercase-hex file name back into a key; `None` for anything else.
fn hex_decode(name: &str) -> Option<String> {
    if name.is_empty() || !name.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes =
        name.as_bytes().chunks(2).map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 255
        && label != "."
        && label != ".."
        && label.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Random-ish suffix for temp files: std's RandomState (seeded from
/// wasi:random/insecure-seed, different per call) mixed with the wall clock.
fn random_suffix() -> String {
    let mut h = RandomState::new().build_hasher();
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    format!("{:016x}", h.finish())
}

impl FileStore {
    fn key_path(&self, key: &str) -> Result<PathBuf, KvError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(KvError::Other(format!(
                "spin-test-host: key length {} not supported (must be 1..={MAX_KEY_BYTES} bytes)",
                key.len()
            )));
        }
        Ok(self.dir.join(hex_encode(key.as_bytes())))
    }
}

impl kv::Guest for Host {
    type Store = FileStore;
}

impl kv::GuestStore for FileStore {
    fn open(label: String) -> Result<kv::Store, KvError> {
        if !valid_label(&label) {
            return Err(KvError::NoSuchStore);
        }
        let dir = Path::new(KV_ROOT).join(&label);
        let work = dir.join(WORK_DIR);
        // Every request opens its store: a stat, not a failing mkdir, when it exists.
        if let Err(err) = if work.is_dir() { Ok(()) } else { fs::create_dir_all(&work) } {
            return Err(KvError::Other(format!(
                "spin-test-host: cannot open store {label:?} at {}: {err} \
                 (is a host directory preopened as {KV_ROOT}, e.g. `wasmtime serve --dir <dir>::{KV_ROOT}`?)",
                dir.display()
            )));
        }
        Ok(kv::Store::new(FileStore { dir, work }))
    }

    fn get(&self, key: String) -> Result<Option<Vec<u8>>, KvError> {
        let path = self.key_path(&key)?;
        match fs::read(&path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(other("cannot read", &path, e)),
        }
    }

    fn set(&self, key: String, value: Vec<u8>) -> Result<(), KvError> {
        let path = self.key_path(&key)?;
        // create_new: a concurrent writer (another instance serving a parallel request)
        // can never share our temp file; on the unlikely name clash, pick another name.
        let mut attempt = 0;
        let (tmp, mut file) = loop {
            let tmp = self.work.join(format!("tmp-{}", random_suffix()));
            match fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(f) => break (tmp, f),
                Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt < 8 => attempt += 1,
                Err(e) => return Err(other("cannot create temp file for", &path, e)),
            }
        };
        let write = || -> std::io::Result<()> {
            file.write_all(&value)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            other("cannot write", &path, e)
        })
    }

    fn delete(&self, key: String) -> Result<(), KvError> {
        let path = self.key_path(&key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(other("cannot delete", &path, e)),
        }
    }

    fn exists(&self, key: String) -> Result<bool, KvError> {
        let path = self.key_path(&key)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(other("cannot stat", &path, e)),
        }
    }

    fn get_keys(&self) -> Result<Vec<String>, KvError> {
        // An entry replaced or deleted by a concurrent write while the directory is read (a
        // key written again or deleted) is an error for that entry (wasmtime stats each one),
        // and std's directory iterator ends at its first error: the rest of the listing would
        // be lost. So a listing that met one is read again, as a store with a consistent
        // listing (Spin's SQLite) would answer. (Temp and lock files live in `WORK_DIR`, so
        // they never make a listing fail.)
        let mut attempt = 0;
        loop {
            match self.list_once() {
                Ok(keys) => return Ok(keys),
                Err(e) if attempt + 1 >= LIST_ATTEMPTS => return Err(other("cannot list", &self.dir, e)),
                Err(_) => attempt += 1,
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// Directory reads a listing may take before it reports the store as unlistable.
const LIST_ATTEMPTS: u32 = 50;

impl FileStore {
    /// One read of the directory: every key in it, sorted, or the first error met.
    fn list_once(&self) -> std::io::Result<Vec<String>> {
        let mut keys = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            // The working directory, stray files and non-UTF-8 names simply are not keys.
            if let Some(key) = entry?.file_name().to_str().and_then(hex_decode) {
                keys.push(key);
            }
        }
        keys.sort();
        Ok(keys)
    }
}

// --- wasi:keyvalue: the same stores, and compare-and-swap ----------------------------------

/// How long the lock file may be held before another instance takes it over (its holder died).
const LOCK_STALE: std::time::Duration = std::time::Duration::from_secs(5);
/// How long an atomic operation waits for the lock before failing.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn wasi_error(e: KvError) -> WasiKvError {
    match e {
        KvError::NoSuchStore => WasiKvError::NoSuchStore,
        KvError::AccessDenied => WasiKvError::AccessDenied,
        KvError::StoreTableFull => WasiKvError::Other("spin-test-host: store table full".into()),
        KvError::Other(text) => WasiKvError::Other(text),
    }
}

/// A wasi:keyvalue bucket: the Spin store of the same label.
pub struct Bucket(FileStore);

impl wasi_kv::Guest for Host {
    type Bucket = Bucket;

    fn open(identifier: String) -> Result<wasi_kv::Bucket, WasiKvError> {
        let store = <FileStore as kv::GuestStore>::open(identifier).map_err(wasi_error)?;
        Ok(wasi_kv::Bucket::new(Bucket(store.into_inner::<FileStore>())))
    }
}

impl wasi_kv::GuestBucket for Bucket {
    fn get(&self, key: String) -> Result<Option<Vec<u8>>, WasiKvError> {
        kv::GuestStore::get(&self.0, key).map_err(wasi_error)
    }

    fn set(&self, key: String, value: Vec<u8>) -> Result<(), WasiKvError> {
        kv::GuestStore::set(&self.0, key, value).map_err(wasi_error)
    }

    fn delete(&self, key: String) -> Result<(), WasiKvError> {
        kv::GuestStore::delete(&self.0, key).map_err(wasi_error)
    }

    fn exists(&self, key: String) -> Result<bool, WasiKvError> {
        kv::GuestStore::exists(&self.0, key).map_err(wasi_error)
    }

    fn list_keys(&self, _cursor: Option<String>) -> Result<wasi_kv::KeyResponse, WasiKvError> {
        let keys = kv::GuestStore::get_keys(&self.0).map_err(wasi_error)?;
        Ok(wasi_kv::KeyResponse { keys, cursor: None })
    }
}

/// The store's lock file (`.work/lock`), held while alive: atomic operations of concurrent
/// instances on one store take turns.
struct StoreLock(PathBuf);

impl StoreLock {
    fn take(store: &FileStore) -> Result<StoreLock, WasiKvError> {
        let path = store.work.join("lock");
        let started = std::time::Instant::now();
        loop {
            match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return Ok(StoreLock(path)),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(wasi_error(other("cannot lock", &path, e))),
            }
            let age = fs::metadata(&path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            if age.is_some_and(|age| age > LOCK_STALE) {
                let _ = fs::remove_file(&path);
                continue;
            }
            if started.elapsed() > LOCK_WAIT {
                return Err(WasiKvError::Other(format!("spin-test-host: {} stayed locked", path.display())));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A compare-and-swap handle: the key's value when it was made.
pub struct Cas {
    store: FileStore,
    key: String,
    seen: Option<Vec<u8>>,
}

impl atomics::Guest for Host {
    type Cas = Cas;

    fn increment(bucket: wasi_kv::BucketBorrow<'_>, key: String, delta: i64) -> Result<i64, WasiKvError> {
        let store = &bucket.get::<Bucket>().0;
        let _lock = StoreLock::take(store)?;
        let current = match kv::GuestStore::get(store, key.clone()).map_err(wasi_error)? {
            None => 0,
            Some(bytes) => i64::from_le_bytes(
                bytes
                    .try_into()
                    .map_err(|_| WasiKvError::Other("spin-test-host: the value is not an 8-byte counter".into()))?,
            ),
        };
        let next = current.wrapping_add(delta);
        kv::GuestStore::set(store, key, next.to_le_bytes().to_vec()).map_err(wasi_error)?;
        Ok(next)
    }

    fn swap(cas: atomics::Cas, value: Vec<u8>) -> Result<(), CasError> {
        let cas = cas.into_inner::<Cas>();
        let _lock = StoreLock::take(&cas.store).map_err(CasError::StoreError)?;
        let now = kv::GuestStore::get(&cas.store, cas.key.clone()).map_err(|e| CasError::StoreError(wasi_error(e)))?;
        if now != cas.seen {
            return Err(CasError::CasFailed(atomics::Cas::new(Cas { seen: now, ..cas })));
        }
        kv::GuestStore::set(&cas.store, cas.key, value).map_err(|e| CasError::StoreError(wasi_error(e)))
    }
}

impl atomics::GuestCas for Cas {
    fn new(bucket: wasi_kv::BucketBorrow<'_>, key: String) -> Result<atomics::Cas, WasiKvError> {
        let store = bucket.get::<Bucket>().0.clone();
        let seen = kv::GuestStore::get(&store, key.clone()).map_err(wasi_error)?;
        Ok(atomics::Cas::new(Cas { store, key, seen }))
    }

    fn current(&self) -> Result<Option<Vec<u8>>, WasiKvError> {
        Ok(self.seen.clone())
    }
}

/// Spin's variable-name rules (spin-expressions `Key::validate`).
fn validate_variable_name(name: &str) -> Result<(), String> {
    let reason = if name.is_empty() {
        "must not be empty".to_string()
    } else if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')) {
        format!(
            "invalid character {c:?}. Variable names may contain only lower-case letters, numbers, and underscores."
        )
    } else if !name.as_bytes()[0].is_ascii_lowercase() {
        "must start with a lowercase ASCII letter".to_string()
    } else if !name.as_bytes()[name.len() - 1].is_ascii_alphanumeric() {
        "must end with a lowercase ASCII letter or digit".to_string()
    } else if name.contains("__") {
        "must not contain multiple consecutive underscores".to_string()
    } else {
        return Ok(());
    };
    Err(format!("{name:?}: {reason}"))
}

impl vars::Guest for Host {
    fn get(name: String) -> Result<String, VarError> {
        validate_variable_name(&name).map_err(VarError::InvalidName)?;
        let env_name = format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase());
        match std::env::var(&env_name) {
            Ok(value) => Ok(value),
            Err(std::env::VarError::NotPresent) => Err(VarError::Undefined(format!(
                "no variable for {name:?}: environment variable {env_name} is not set \
                 (pass `--env {env_name}=...` to wasmtime serve)"
            ))),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(VarError::Provider(format!("environment variable {env_name} is not valid UTF-8")))
            }
        }
    }
}

export!(Host);
