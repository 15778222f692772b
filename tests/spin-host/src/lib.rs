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
//! * no transactions or compare-and-swap (neither has key-value@2.0.0): concurrent
//!   read-modify-write from parallel requests can lose updates, as on real Spin.

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

/// Guest path under which the host directory holding all stores is preopened.
const KV_ROOT: &str = "/kv";
/// Longest key whose hex encoding still fits in a 255-byte file name.
const MAX_KEY_BYTES: usize = 127;
/// Prefix of in-flight temp files; never a valid hex name, so `get-keys` skips them.
const TMP_PREFIX: &str = ".tmp-";

struct Host;

/// One open store: just the directory it lives in.
pub struct FileStore {
    dir: PathBuf,
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
        // Every request opens its store: a stat, not a failing mkdir, when it exists.
        if let Err(err) = if dir.is_dir() { Ok(()) } else { fs::create_dir_all(&dir) } {
            return Err(KvError::Other(format!(
                "spin-test-host: cannot open store {label:?} at {}: {err} \
                 (is a host directory preopened as {KV_ROOT}, e.g. `wasmtime serve --dir <dir>::{KV_ROOT}`?)",
                dir.display()
            )));
        }
        Ok(kv::Store::new(FileStore { dir }))
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
            let tmp = self.dir.join(format!("{TMP_PREFIX}{}", random_suffix()));
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
        let entries = fs::read_dir(&self.dir).map_err(|e| other("cannot list", &self.dir, e))?;
        let mut keys = Vec::new();
        for entry in entries {
            // An entry renamed or deleted by a concurrent write while listing is no key.
            let Ok(entry) = entry else { continue };
            // Temp files, stray files and non-UTF-8 names simply are not keys.
            if let Some(key) = entry.file_name().to_str().and_then(hex_decode) {
                keys.push(key);
            }
        }
        keys.sort();
        Ok(keys)
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
