//! Small helpers with no gateway dependency: text, time, the hash map of per-isolate state, and
//! awaiting two futures together.

pub mod join;
pub mod map;
pub mod text;
pub mod time;
