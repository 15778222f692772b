//! Small helpers with no gateway dependency: text and time.

pub mod text;
pub mod time;
