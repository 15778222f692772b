//! The hash map of per-isolate state whose keys come from the config or from KV records (usage
//! shard names, tally series, endpoint and route names, origin URLs, limiter windows), never
//! from a client as such: foldhash instead of std's SipHash-1-3 (a lookup of a 50-byte usage
//! shard name: ~240 instructions instead of ~530; a native forward makes ~20 such lookups).
//! Maps a client's input fills (memos keyed by presented credentials, coalescing by request)
//! stay on std's hasher.
//!
//! std's hasher is keyed by the host's randomness where there is any (Spin) and by constants on
//! wasm32-unknown-unknown; foldhash's seed comes from addresses and, where std has a clock,
//! the time. Neither matters for keys a client cannot choose.

pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
