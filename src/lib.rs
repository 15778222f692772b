//! Edge AI gateway: a host-agnostic core (`gateway`) driven by thin runtime adapters (`host`).

pub mod gateway;
pub mod host;
