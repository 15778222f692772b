//! The gateway's per-byte hot path, kept apart so release builds optimize it for speed while
//! the rest is optimized for size: the SSE parser every stream goes through, the facts the
//! gateway reads from each OpenAI stream chunk and Anthropic text delta, the prompt-injection
//! scan and PII detectors over request text, the guard's literal search, an exact matcher for
//! guard regexes that are plain sequences of classes, the windows of a text the other guard
//! regexes can match in, the spans a redaction replaces and its rewrite, and walks over parsed
//! JSON (freeing it, counting its text). Pure functions over bytes and JSON values; nothing
//! here knows about requests, configs or hosts.

pub mod anthropic;
pub mod chunk;
pub mod find;
pub mod gemini;
pub mod injection;
pub mod json;
mod lenient;
mod like_last;
pub mod pii;
mod reader;
pub mod shift_and;
pub mod spans;
pub mod sse;
mod syntax;
pub mod tree;
pub mod windows;

/// A small seeded random source for the differential tests: `next(n)` is in `0..n` (xorshift).
#[cfg(test)]
fn test_rng(mut state: u64) -> impl FnMut(usize) -> usize {
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    }
}
