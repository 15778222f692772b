//! The `host-kv` backend: every store is wasmtime's own in-memory wasi:keyvalue bucket
//! (`wasmtime serve -S keyvalue`), so a KV operation is one call into the host, as with
//! Spin's native store, instead of the file backend's several wasi filesystem calls. For
//! measuring (scripts/bench), not for running a gateway: wasmtime gives each request a fresh
//! copy of the data preset with `-S keyvalue-in-memory-data=KEY=VALUE` (a copy per open, so
//! a request's Spin and wasi:keyvalue handles on `default` do not see each other's writes),
//! and what a request writes is gone after it (accounting, admin changes). Only the label
//! `default` opens.
//!
//! wasmtime splits an `-S` argument at commas, so values are kept escaped: `%` as `%25` and
//! `,` as `%2C`, on every write and read alike (scripts/bench presets them the same way).

use std::rc::Rc;

use crate::wasi::keyvalue0_2_0_draft::store::{self as host, Bucket};
use crate::{KvError, WasiKvError};

/// One open store: the host's bucket.
#[derive(Clone)]
pub struct HostStore(Rc<Bucket>);

fn host_error(e: host::Error) -> KvError {
    match e {
        host::Error::NoSuchStore => KvError::NoSuchStore,
        host::Error::AccessDenied => KvError::AccessDenied,
        host::Error::Other(text) => KvError::Other(text),
    }
}

fn escape(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for &b in value {
        match b {
            b'%' => out.extend_from_slice(b"%25"),
            b',' => out.extend_from_slice(b"%2C"),
            _ => out.push(b),
        }
    }
    out
}

fn unescape(value: &[u8]) -> Result<Vec<u8>, KvError> {
    let mut out = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some((&b, tail)) = rest.split_first() {
        if b != b'%' {
            out.push(b);
            rest = tail;
            continue;
        }
        out.push(match tail {
            [b'2', b'5', ..] => b'%',
            [b'2', b'C', ..] => b',',
            _ => return Err(KvError::Other("spin-test-host: a value with a bad % escape".into())),
        });
        rest = &tail[2..];
    }
    Ok(out)
}

impl HostStore {
    pub fn open(label: &str) -> Result<HostStore, KvError> {
        if label != "default" {
            return Err(KvError::NoSuchStore);
        }
        // The empty identifier is wasmtime's in-memory provider.
        host::open("").map(|bucket| HostStore(Rc::new(bucket))).map_err(host_error)
    }

    pub fn read(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.0.get(key).map_err(host_error)?.map(|v| unescape(&v)).transpose()
    }

    pub fn write(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.0.set(key, &escape(value)).map_err(host_error)
    }

    pub fn remove(&self, key: &str) -> Result<(), KvError> {
        self.0.delete(key).map_err(host_error)
    }

    pub fn contains(&self, key: &str) -> Result<bool, KvError> {
        self.0.exists(key).map_err(host_error)
    }

    pub fn keys(&self) -> Result<Vec<String>, KvError> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.0.list_keys(cursor).map_err(host_error)?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Nothing to take: the bucket is this request's own copy.
    pub fn lock(&self) -> Result<NoLock, WasiKvError> {
        Ok(NoLock)
    }
}

/// What `lock` holds: nothing.
pub struct NoLock;
