//! The host-agnostic core. It knows HTTP semantics and JSON and talks to the world only
//! through the traits in `ports`; `src/host/` adapts each runtime to them.

pub mod catalog;
pub mod config;
pub mod error;
pub mod normalize;
pub mod pipeline;
pub mod ports;
pub mod providers;
pub mod routing;
pub mod stream;
pub mod testing;

pub use error::GatewayError;
pub use pipeline::{Deferred, Exchange, Gateway, ResponseBody};
