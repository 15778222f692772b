//! Wire-format pieces that client dialects and provider adapters share.

pub mod sse;
