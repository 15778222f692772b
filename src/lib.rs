//! Edge AI gateway: a host-agnostic core (`gateway`) driven by thin runtime adapters (`host`).

pub mod gateway;
pub mod host;

/// The pipeline fuzzer and the adversarial corpus (native tooling: `fuzz` bin, `slowest` bench).
#[cfg(feature = "cli")]
pub mod fuzz;
