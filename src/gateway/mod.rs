//! The host-agnostic core. It knows HTTP semantics and JSON and talks to the world only
//! through the traits in `ports`; `src/host/` adapts each runtime to them.

pub mod admin;
pub mod auth;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod error;
pub mod forward;
pub mod guard;
pub mod keys;
pub mod limits;
pub mod normalize;
pub mod pipeline;
pub mod ports;
pub mod providers;
pub mod routing;
pub mod stream;
pub mod template;
pub mod testing;
pub mod usage;

pub use error::GatewayError;
pub use pipeline::{Deferred, Exchange, Gateway, ResponseBody};
