//! Where a render writes: buffers and writers that refuse to grow past the output cap, and
//! Python's `repr` of values written item by item into them.

use std::fmt::{self, Write as _};
use std::io;

use minijinja::value::{Value as JinjaValue, ValueKind};

/// Budget of one render, all messages together, in minijinja fuel: one per instruction
/// executed (a `{{ x }}` is two, a loop iteration three more), one per 64 bytes of data a
/// template outputs, creates or feeds to a filter, and one per item a filter visits. The old
/// engine's steps were of the same size, so the budget stayed: a plain prompt with a few
/// variables uses under 20; a loop printing an item and its `loop.index` ~11 per item (11,000
/// for 1,000 items). It also bounds what a render may allocate: about `MAX_FUEL * 64` bytes
/// (6.4 MB).
pub const MAX_FUEL: u64 = 100_000;
/// Largest rendered prompt, all messages together. Going over it is an error, not a
/// truncation.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// Bytes that refuse to grow past a limit: the rendered messages back to back (limit
/// `MAX_OUTPUT_BYTES`), or a filter's output (what the fuel left can pay for).
pub struct Capped {
    pub bytes: Vec<u8>,
    limit: usize,
}

impl Capped {
    pub fn new(limit: usize) -> Self {
        Capped { bytes: Vec::new(), limit }
    }
}

impl io::Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.bytes.len().saturating_add(bytes.len()) > self.limit {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.bytes.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer that fails once `left` bytes are spent, before writing more.
pub struct Bounded<W> {
    pub out: W,
    pub left: usize,
}

impl<W: fmt::Write> fmt::Write for Bounded<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.left = self.left.checked_sub(s.len()).ok_or(fmt::Error)?;
        self.out.write_str(s)
    }
}

/// Python's `repr` of a value (`['a', 1]`, `{'k': None}`), containers item by item.
pub fn repr<W: fmt::Write>(w: &mut Bounded<W>, value: &JinjaValue, depth: usize) -> fmt::Result {
    let map = match value.kind() {
        ValueKind::Map => true,
        ValueKind::Seq | ValueKind::Iterable => false,
        _ => return write!(w, "{value:?}"),
    };
    if depth > 32 {
        return w.write_str("...");
    }
    w.write_str(if map { "{" } else { "[" })?;
    for (i, item) in value.try_iter().map_err(|_| fmt::Error)?.enumerate() {
        if i > 0 {
            w.write_str(", ")?;
        }
        repr(w, &item, depth + 1)?;
        if map {
            w.write_str(": ")?;
            repr(w, &value.get_item(&item).unwrap_or_default(), depth + 1)?;
        }
    }
    w.write_str(if map { "}" } else { "]" })
}
