//! The raw boundary between the wasm and the JS shim (`shim.mjs`): no generated glue, one
//! call per step in each direction.
//!
//! In (JS → wasm): buffers the shim allocated in wasm memory with `egw_alloc` and filled;
//! the export that receives one owns it from then on. Out (wasm → JS): every export that
//! answers returns the address of the out buffer, `[u32 length][payload]`, valid until the
//! next call into the wasm. For the task exports the payload is a list of commands:
//!
//! ```text
//! command = u8 kind, u32 op, u8 field count, fields
//! field   = u32 length, bytes          (all integers little-endian)
//! ```
//!
//! `op` names the result the task waits for (0: nothing is awaited). The shim performs the
//! command and calls `egw_resume(task, op, code, ptr, len, ptr2, len2)` with the outcome (the
//! second buffer only for a fetch whose body came with its head). Kinds and their
//! fields are listed in [`Cmd`]; the shim's `CMD` table mirrors them.

use std::cell::RefCell;

use crate::gateway::pipeline::Geo;

/// Command kinds (wasm → JS). Fields in order; `u32` fields are 4 bytes little-endian, text
/// is UTF-8, header lists are `name\0value\0…` (every item `\0`-terminated).
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum Cmd {
    /// The task finished; no fields.
    Done = 0,
    /// status u32, headers, body: the whole response.
    Respond = 1,
    /// status u32, headers, body handle u32: the response streams that origin body through the
    /// task's pump; `op` resolves when the stream ended (code 1) or the client left (code 0).
    RespondStream = 2,
    /// line: one log line for the console.
    Log = 3,
    /// key → code 0 + value, 1 missing, < 0 failed.
    KvGet = 4,
    /// key, value, ttl seconds u32 (0: none) → code 0, < 0 failed.
    KvPut = 5,
    /// key → code 0, < 0 failed.
    KvDelete = 6,
    /// prefix → code 0 + `key\0key\0…` (every page), < 0 failed.
    KvList = 7,
    /// method, url, headers, body, timeout ms u32 → code = HTTP status and `name\0value\0…`
    /// (the body stays in JS under handle = `op`); or code = HTTP status + [`BODY_INCLUDED`]
    /// with the body as the outcome's second buffer, when the shim already read a body of
    /// declared length that is not an event stream (the core reads those whole anyway: one
    /// round trip fewer); -1 connect error, -2 timeout.
    Fetch = 8,
    /// handle u32, limit u32 → code 0 + the whole body, 2 over the limit, < 0 failed.
    ReadBody = 9,
    /// handle u32: the task no longer needs that origin body (cancel it).
    DropBody = 10,
    /// ms u32 → code 0 after that long.
    Sleep = 11,
    /// scope, request JSON → code 0 + reply JSON from the scope's Durable Object, < 0 failed.
    Count = 12,
    /// (Durable Object) names `a\0b\0…` → code 0 + one value per name, `\0`-separated, empty
    /// where missing.
    StorageGet = 13,
    /// (Durable Object) `name\0value\0…` → code 0.
    StoragePut = 14,
    /// (Durable Object) names `a\0b\0…` → code 0.
    StorageDelete = 15,
    /// (Durable Object) code u32 (0 ok), body: the answer to the RPC call.
    Reply = 16,
    /// key → code 0 + value from this location's Cache API, 1 missing, < 0 failed.
    CacheGet = 17,
    /// key, value, ttl seconds u32 → code 0, < 0 failed (stored in this location's Cache API).
    CachePut = 18,
    /// key → code 0, < 0 failed (this location's Cache API).
    CacheDelete = 19,
    /// public key as a JWK, message, signature → code 0 valid (WebCrypto: RS256 for an RSA
    /// key, ES256 for a P-256 one), 1 not valid, < 0 the key cannot be used.
    Verify = 20,
    /// RSA private key (PKCS#8 DER), message → code 0 + the RS256 signature, < 0 failed.
    SignRs256 = 21,
}

/// Added to a `Fetch` outcome's status when the body came with the head.
pub const BODY_INCLUDED: i32 = 1000;

/// Result codes shared by the ports.
pub const CODE_OK: i32 = 0;
pub const CODE_MISSING: i32 = 1;
pub const CODE_TOO_LARGE: i32 = 2;
// -1: the operation threw (after the shim's retry, for KV); any code < 0 is a failure.
pub const CODE_TIMEOUT: i32 = -2;
/// The binding (KV namespace, Durable Object namespace) is not configured.
pub const CODE_UNBOUND: i32 = -9;

#[link(wasm_import_module = "egw")]
extern "C" {
    /// `Date.now()`.
    fn now_ms() -> f64;
    /// `crypto.getRandomValues` over `len` bytes at `ptr`.
    fn random_fill(ptr: *mut u8, len: usize);
    /// `console.error` of `len` bytes of UTF-8 at `ptr` (panics only).
    fn error_log(ptr: *const u8, len: usize);
    /// How many requests this instance's fetch handler took that have no response yet.
    fn unanswered() -> u32;
    /// The geo data of `task`'s request (`request.cf`: `country\ncontinent`), written at `ptr`
    /// (at most `cap` bytes): the number of bytes written.
    fn client_geo(task: u32, ptr: *mut u8, cap: usize) -> usize;
}

/// Requests of this instance still waiting for their answer, the caller's own included until
/// its respond command is performed (after the call into the wasm returns).
pub fn requests_unanswered() -> u32 {
    // SAFETY: a plain import without arguments.
    unsafe { unanswered() }
}

/// The country and continent codes of `task`'s request (`request.cf`), read when routing
/// first needs them.
pub fn client_geo_of(task: u32) -> Geo {
    // Two-letter codes; a longer value is cut, so it matches no region (the default applies).
    let mut buf = [0u8; 32];
    // SAFETY: the shim writes at most `buf.len()` bytes at `buf`'s address, synchronously.
    let len = unsafe { client_geo(task, buf.as_mut_ptr(), buf.len()) }.min(buf.len());
    let text = String::from_utf8_lossy(&buf[..len]);
    let mut lines = text.split('\n').map(|s| (!s.is_empty()).then(|| s.to_string()));
    Geo { country: lines.next().flatten(), continent: lines.next().flatten() }
}

pub fn now() -> u64 {
    // SAFETY: a plain import without arguments.
    let ms = unsafe { now_ms() };
    ms.max(0.0) as u64
}

pub fn random(buf: &mut [u8]) {
    // SAFETY: the shim writes exactly `buf.len()` bytes at `buf`'s address.
    unsafe { random_fill(buf.as_mut_ptr(), buf.len()) }
}

fn error(text: &str) {
    // SAFETY: the shim reads `text.len()` bytes at `text`'s address, synchronously.
    unsafe { error_log(text.as_ptr(), text.len()) }
}

/// A panic aborts the instance (`panic = "abort"`); the message reaches the console first so
/// the shim's "instance failed" has a cause next to it.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| error(&format!("edge-gateway panicked: {info}"))));
}

/// Memory for the shim to fill; ownership passes back with [`take`].
#[no_mangle]
pub extern "C" fn egw_alloc(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    // `with_capacity` allocates exactly `len` bytes (documented), which `take` relies on.
    let mut buf = std::mem::ManuallyDrop::new(Vec::<u8>::with_capacity(len));
    buf.as_mut_ptr() as usize
}

/// Takes back a buffer from [`egw_alloc`] that the shim filled completely.
pub fn take(ptr: usize, len: usize) -> Vec<u8> {
    take_filled(ptr, len, len)
}

/// Takes back a buffer from `egw_alloc(cap)` whose first `len` bytes the shim filled.
pub fn take_filled(ptr: usize, len: usize, cap: usize) -> Vec<u8> {
    if cap == 0 || ptr == 0 {
        return Vec::new();
    }
    // SAFETY: `ptr` came from `egw_alloc(cap)` (capacity exactly `cap`), the shim wrote the
    // first `len <= cap` bytes and hands it over exactly once.
    unsafe { Vec::from_raw_parts(ptr as *mut u8, len.min(cap), cap) }
}

thread_local! {
    static OUT: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
}

/// Starts a fresh out buffer (each export begins with this).
pub fn begin() {
    OUT.with(|out| {
        let mut out = out.borrow_mut();
        out.clear();
        out.extend_from_slice(&[0; 4]);
    });
}

/// Seals the out buffer and returns its address for the shim.
pub fn finish() -> usize {
    OUT.with(|out| {
        let mut out = out.borrow_mut();
        let len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&len.to_le_bytes());
        out.as_ptr() as usize
    })
}

/// The out buffer holding just `bytes` (stream chunks).
pub fn finish_with(bytes: &[u8]) -> usize {
    begin();
    OUT.with(|out| out.borrow_mut().extend_from_slice(bytes));
    finish()
}

/// One field of a command.
pub enum Field<'a> {
    Bytes(&'a [u8]),
    U32(u32),
}

impl<'a> From<&'a str> for Field<'a> {
    fn from(s: &'a str) -> Self {
        Field::Bytes(s.as_bytes())
    }
}

impl<'a> From<&'a [u8]> for Field<'a> {
    fn from(b: &'a [u8]) -> Self {
        Field::Bytes(b)
    }
}

impl From<u32> for Field<'_> {
    fn from(n: u32) -> Self {
        Field::U32(n)
    }
}

/// Appends one command to the out buffer.
pub fn command(kind: Cmd, op: u32, fields: &[Field]) {
    OUT.with(|out| {
        let mut out = out.borrow_mut();
        out.push(kind as u8);
        out.extend_from_slice(&op.to_le_bytes());
        out.push(fields.len() as u8);
        for field in fields {
            match field {
                Field::Bytes(b) => {
                    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    out.extend_from_slice(b);
                }
                Field::U32(n) => {
                    out.extend_from_slice(&4u32.to_le_bytes());
                    out.extend_from_slice(&n.to_le_bytes());
                }
            }
        }
    });
}

/// Items each terminated by `\0` (`a\0\0c\0` is "a", "", "c"), split back into their parts.
pub fn split_nul(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let end = rest.iter().position(|b| *b == 0)?;
        let item = &rest[..end];
        rest = &rest[end + 1..];
        Some(item)
    })
}

/// Appends `item\0` (the encoding [`split_nul`] reads).
pub fn push_nul(out: &mut Vec<u8>, item: &[u8]) {
    out.extend_from_slice(item);
    out.push(0);
}
