//! Spin test host: a tiny WASI 0.2 component that EXPORTS the two Spin host interfaces
//! the gateway's Spin build imports, so the gateway can run under plain `wasmtime serve`
//! (which does not provide them) after `wac plug <gateway> --plug <this>`:
//!
//! * `fermyon:spin/key-value@2.0.0` - by default every store is a directory of files, one
//!   per key, in a preopened directory (`wasmtime serve --dir <host-dir>::/kv`; see
//!   `files.rs`): state persists across requests and wasmtime restarts, and
//!   `scripts/spin-kv-put` can seed it from outside. Built with the feature `host-kv`, the
//!   store is wasmtime's own in-memory wasi:keyvalue instead (`host_kv.rs`): one host call
//!   per operation, as with Spin's native store, but nothing a request writes is kept - a
//!   bench row, not a way to run the gateway.
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
//!   `[A-Za-z0-9_.-]+` opens, with `host-kv` only `default`; anything else is
//!   `no-such-store`), no `[variables]` declarations, defaults, `required`/`secret` flags
//!   or templates (any valid name that is set in the environment resolves), no
//!   Vault/Azure/dotenv providers;
//! * no `store-table-full`/`access-denied` errors; no size/quota limits;
//! * in the file store, keys must be 1..=127 bytes (the hex file name has to fit a 255-byte
//!   file name) - other keys get `error::other`, never a panic;
//! * `wasi:keyvalue/store@0.2.0-draft2` and `wasi:keyvalue/atomics@0.2.0-draft2` over the
//!   same stores (Spin serves both interfaces over the same stores): a bucket is the
//!   key-value store of that label. Compare-and-swap and increment hold the store's lock
//!   around their read-compare-write; a `swap` whose key changed since its `cas` was made
//!   fails with `cas-failed`. Increments are stored as 8 little-endian bytes.
//! * no transactions (key-value@2.0.0 has none): concurrent read-modify-write through it
//!   from parallel requests can lose updates, as on real Spin.

#[cfg(not(feature = "host-kv"))]
wit_bindgen::generate!({
    path: "../../wit",
    world: "spin-test-host",
});
#[cfg(feature = "host-kv")]
wit_bindgen::generate!({
    path: "../../wit",
    world: "spin-test-host-host-kv",
    generate_all,
});

#[cfg(not(feature = "host-kv"))]
mod files;
#[cfg(feature = "host-kv")]
mod host_kv;

use exports::fermyon::spin::key_value::{self as kv, Error as KvError};
use exports::fermyon::spin::variables::{self as vars, Error as VarError};
use exports::wasi::keyvalue0_2_0_draft2::atomics::{self, CasError};
use exports::wasi::keyvalue0_2_0_draft2::store::{self as wasi_kv, Error as WasiKvError};

/// The store behind every exported interface.
#[cfg(not(feature = "host-kv"))]
use files::FileStore as Backend;
#[cfg(feature = "host-kv")]
use host_kv::HostStore as Backend;

struct Host;

impl kv::Guest for Host {
    type Store = Backend;
}

impl kv::GuestStore for Backend {
    fn open(label: String) -> Result<kv::Store, KvError> {
        Backend::open(&label).map(kv::Store::new)
    }

    fn get(&self, key: String) -> Result<Option<Vec<u8>>, KvError> {
        self.read(&key)
    }

    fn set(&self, key: String, value: Vec<u8>) -> Result<(), KvError> {
        self.write(&key, &value)
    }

    fn delete(&self, key: String) -> Result<(), KvError> {
        self.remove(&key)
    }

    fn exists(&self, key: String) -> Result<bool, KvError> {
        self.contains(&key)
    }

    fn get_keys(&self) -> Result<Vec<String>, KvError> {
        self.keys()
    }
}

// --- wasi:keyvalue: the same stores, and compare-and-swap ----------------------------------

fn wasi_error(e: KvError) -> WasiKvError {
    match e {
        KvError::NoSuchStore => WasiKvError::NoSuchStore,
        KvError::AccessDenied => WasiKvError::AccessDenied,
        KvError::StoreTableFull => WasiKvError::Other("spin-test-host: store table full".into()),
        KvError::Other(text) => WasiKvError::Other(text),
    }
}

/// A wasi:keyvalue bucket: the Spin store of the same label.
pub struct Bucket(Backend);

impl wasi_kv::Guest for Host {
    type Bucket = Bucket;

    fn open(identifier: String) -> Result<wasi_kv::Bucket, WasiKvError> {
        let store = Backend::open(&identifier).map_err(wasi_error)?;
        Ok(wasi_kv::Bucket::new(Bucket(store)))
    }
}

impl wasi_kv::GuestBucket for Bucket {
    fn get(&self, key: String) -> Result<Option<Vec<u8>>, WasiKvError> {
        self.0.read(&key).map_err(wasi_error)
    }

    fn set(&self, key: String, value: Vec<u8>) -> Result<(), WasiKvError> {
        self.0.write(&key, &value).map_err(wasi_error)
    }

    fn delete(&self, key: String) -> Result<(), WasiKvError> {
        self.0.remove(&key).map_err(wasi_error)
    }

    fn exists(&self, key: String) -> Result<bool, WasiKvError> {
        self.0.contains(&key).map_err(wasi_error)
    }

    fn list_keys(&self, _cursor: Option<String>) -> Result<wasi_kv::KeyResponse, WasiKvError> {
        let keys = self.0.keys().map_err(wasi_error)?;
        Ok(wasi_kv::KeyResponse { keys, cursor: None })
    }
}

/// A compare-and-swap handle: the key's value when it was made.
pub struct Cas {
    store: Backend,
    key: String,
    seen: Option<Vec<u8>>,
}

impl atomics::Guest for Host {
    type Cas = Cas;

    fn increment(bucket: wasi_kv::BucketBorrow<'_>, key: String, delta: i64) -> Result<i64, WasiKvError> {
        let store = &bucket.get::<Bucket>().0;
        let _lock = store.lock()?;
        let current = match store.read(&key).map_err(wasi_error)? {
            None => 0,
            Some(bytes) => i64::from_le_bytes(
                bytes
                    .try_into()
                    .map_err(|_| WasiKvError::Other("spin-test-host: the value is not an 8-byte counter".into()))?,
            ),
        };
        let next = current.wrapping_add(delta);
        store.write(&key, &next.to_le_bytes()).map_err(wasi_error)?;
        Ok(next)
    }

    fn swap(cas: atomics::Cas, value: Vec<u8>) -> Result<(), CasError> {
        let cas = cas.into_inner::<Cas>();
        let _lock = cas.store.lock().map_err(CasError::StoreError)?;
        let now = cas.store.read(&cas.key).map_err(|e| CasError::StoreError(wasi_error(e)))?;
        if now != cas.seen {
            return Err(CasError::CasFailed(atomics::Cas::new(Cas { seen: now, ..cas })));
        }
        cas.store.write(&cas.key, &value).map_err(|e| CasError::StoreError(wasi_error(e)))
    }
}

impl atomics::GuestCas for Cas {
    fn new(bucket: wasi_kv::BucketBorrow<'_>, key: String) -> Result<atomics::Cas, WasiKvError> {
        let store = bucket.get::<Bucket>().0.clone();
        let seen = store.read(&key).map_err(wasi_error)?;
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
