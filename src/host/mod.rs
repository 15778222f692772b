//! Thin adapters from each runtime to the core's ports. No business rule lives here.

#[cfg(feature = "cloudflare")]
pub mod cloudflare;
#[cfg(feature = "cloudflare")]
pub mod cloudflare_counter;
#[cfg(feature = "spin")]
pub mod spin;
