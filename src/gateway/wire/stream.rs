//! Incremental translation of one event stream into another: the trait every stream
//! translator (provider side and client side) implements.

use crate::gateway::types::Usage;
use crate::gateway::wire::sse::SseEvent;

/// Incremental translation of one event stream into another. Fed one parsed origin event at
/// a time; appends client-format SSE bytes to `out` (use `sse::write_data` / `write_event`).
pub trait StreamTranslate {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>);
    /// The origin stream ended, cleanly or not: close the client stream properly
    /// (OpenAI: `data: [DONE]`; an error event first if the origin stopped mid-answer).
    fn finish(&mut self, out: &mut Vec<u8>);
    /// Usage seen so far (final once `finish` ran).
    fn usage(&self) -> Option<Usage>;
}
