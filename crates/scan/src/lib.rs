//! The gateway's per-byte hot path, kept apart so release builds optimize it for speed while
//! the rest is optimized for size: the SSE parser every stream goes through, the facts the
//! gateway reads from each OpenAI stream chunk, and the prompt-injection scan over request
//! text. Pure functions over bytes; nothing here knows about requests, configs or hosts.

pub mod chunk;
pub mod injection;
pub mod sse;
