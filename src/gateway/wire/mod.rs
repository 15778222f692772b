//! Wire-format pieces that client dialects and provider adapters share: SSE framing, the
//! stream-translator trait, and OpenAI's shapes (the internal lingua franca).

pub mod json;
pub mod openai;
pub mod sse;
pub mod stream;
