//! The default backend: every store label lives in the directory `/kv/<label>/` of a
//! preopened directory (`wasmtime serve --dir <host-dir>::/kv`). One file per key; the file
//! name is the lowercase hex of the key's UTF-8 bytes, the file content is the raw value.
//! Writes go to a temp file in the store's working directory and are then renamed over the
//! target, so readers never see a half-written value. State therefore persists across
//! requests and across wasmtime restarts, and `scripts/spin-kv-put` can seed it from outside.
//! Compare-and-swap and increment hold the store's lock file `.work/lock` (created
//! exclusively; taken over when older than 5 s) around their read-compare-write, so they are
//! atomic across the concurrent instances of one `wasmtime serve`.

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::{KvError, WasiKvError};

/// Guest path under which the host directory holding all stores is preopened.
const KV_ROOT: &str = "/kv";
/// Longest key whose hex encoding still fits in a 255-byte file name.
const MAX_KEY_BYTES: usize = 127;
/// A store's working directory, inside it: in-flight temp files and the lock file live there,
/// so that the store's own directory changes only when a key is written or deleted (a listing
/// meets few entries that vanish under it, see `keys`). Never a valid hex name.
const WORK_DIR: &str = ".work";
/// Directory reads a listing may take before it reports the store as unlistable.
const LIST_ATTEMPTS: u32 = 50;
/// How long the lock file may be held before another instance takes it over (its holder died).
const LOCK_STALE: std::time::Duration = std::time::Duration::from_secs(5);
/// How long an atomic operation waits for the lock before failing.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// One open store: the directory it lives in, and its working directory.
#[derive(Clone)]
pub struct FileStore {
    dir: PathBuf,
    work: PathBuf,
}

/// A store label that is also a safe directory name.
fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 255
        && label != "."
        && label != ".."
        && label.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
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
    pub fn open(label: &str) -> Result<FileStore, KvError> {
        if !valid_label(label) {
            return Err(KvError::NoSuchStore);
        }
        let dir = Path::new(KV_ROOT).join(label);
        let work = dir.join(WORK_DIR);
        // Every request opens its store: a stat, not a failing mkdir, when it exists.
        if let Err(err) = if work.is_dir() { Ok(()) } else { fs::create_dir_all(&work) } {
            return Err(KvError::Other(format!(
                "spin-test-host: cannot open store {label:?} at {}: {err} \
                 (is a host directory preopened as {KV_ROOT}, e.g. `wasmtime serve --dir <dir>::{KV_ROOT}`?)",
                dir.display()
            )));
        }
        Ok(FileStore { dir, work })
    }

    fn key_path(&self, key: &str) -> Result<PathBuf, KvError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(KvError::Other(format!(
                "spin-test-host: key length {} not supported (must be 1..={MAX_KEY_BYTES} bytes)",
                key.len()
            )));
        }
        Ok(self.dir.join(hex_encode(key.as_bytes())))
    }

    pub fn read(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let path = self.key_path(key)?;
        match fs::read(&path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(other("cannot read", &path, e)),
        }
    }

    pub fn write(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        let path = self.key_path(key)?;
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
            file.write_all(value)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            other("cannot write", &path, e)
        })
    }

    pub fn remove(&self, key: &str) -> Result<(), KvError> {
        let path = self.key_path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(other("cannot delete", &path, e)),
        }
    }

    pub fn contains(&self, key: &str) -> Result<bool, KvError> {
        let path = self.key_path(key)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(other("cannot stat", &path, e)),
        }
    }

    pub fn keys(&self) -> Result<Vec<String>, KvError> {
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

    /// The store's lock, held while the guard lives: atomic operations of concurrent
    /// instances on one store take turns.
    pub fn lock(&self) -> Result<StoreLock, WasiKvError> {
        let path = self.work.join("lock");
        let started = std::time::Instant::now();
        loop {
            match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return Ok(StoreLock(path)),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(crate::wasi_error(other("cannot lock", &path, e))),
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

/// The store's lock file (`.work/lock`), removed when dropped.
pub struct StoreLock(PathBuf);

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}
