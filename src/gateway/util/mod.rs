//! Small helpers with no gateway dependency: text, time, the hash map of per-isolate state, one
//! shared sort, awaiting two futures together, and the DER of RSA private keys.

pub mod der;
pub mod join;
pub mod map;
pub mod order;
pub mod text;
pub mod time;
