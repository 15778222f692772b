//! Repeats: a request this isolate answered from its memory-level cache, kept with what its
//! phases found, so that the same bytes again (same caller, path and body) are answered
//! without parsing the body, writing its canonical form or dropping its tree: 38% of a cache
//! hit's instructions (`benches/pipeline.rs`, "cache hit, plain endpoint": 136k → 85k).
//!
//! Only what the phases would find the same again is kept: the body is the same, and so is the
//! config (the same parsed config, by pointer; templates have no functions, so a rendering
//! depends on nothing else); a request the guardrails report on (a redaction, a flag) is not
//! kept, so every such request is seen by them. The caller is still authorized
//! and the request admitted on every repeat; the answer is still the memory level's entry
//! (`cache::Recent`), so its TTL, a purge or a refresh are seen as they are for any hit.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::gateway::config::{Config, Endpoint};
use crate::gateway::dialect::Dialect;
use crate::gateway::features::cache::{self, Entry, Recent};
use crate::gateway::features::keys::KeyRecord;
use crate::gateway::features::limits::Reservation;
use crate::gateway::features::usage::Price;

/// At most this many repeats are kept per isolate (the oldest go first)...
const MAX_ENTRIES: usize = 32;
/// ...of bodies of at most this many bytes each: a repeat costs its body's bytes in memory.
const MAX_BODY_BYTES: usize = 16 << 10;

/// What a cache hit's phases found, for its repeats (set by `cache_lookup`).
pub struct Seed {
    pub(super) dialect: Dialect,
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) route: Option<String>,
    pub(super) template_version: Option<String>,
    pub(super) stream: bool,
    pub(super) client_wants_usage: bool,
    pub(super) prompt_estimate: u64,
    pub(super) reservation: Reservation,
    pub(super) price: Option<Price>,
    /// The memory level's key for the answer (`cache::KeyInput::bytes`).
    pub(super) input: Vec<u8>,
}

/// A request's seed: `Wanted` where `Gateway::serve` would keep one (a caller known before
/// the body was read, a host that keeps state), `Filled` once a memory-level hit made it.
#[derive(Default)]
pub enum SeedSlot {
    #[default]
    Unwanted,
    Wanted,
    Filled(Seed),
}

/// One kept request: its identity (caller, method, path and query, body, config) and its seed.
pub struct Repeat {
    key_id: String,
    tenant: String,
    method: Method,
    path_and_query: String,
    body: Vec<u8>,
    config: Rc<Config>,
    pub seed: Seed,
}

/// A copy of `dialect` for a repeat; `None` for the Responses API's, which carries the
/// request's own state (its id, the stored conversation) and is never replayed.
pub fn replayable(dialect: &Dialect) -> Option<Dialect> {
    match dialect {
        Dialect::OpenAi(op) => Some(Dialect::OpenAi(*op)),
        Dialect::Mlflow => Some(Dialect::Mlflow),
        Dialect::Anthropic => Some(Dialect::Anthropic),
        Dialect::Gemini(mode) => Some(Dialect::Gemini(*mode)),
        Dialect::Responses(_) => None,
    }
}

/// A repeat found: what its first hit found, the answer now, and the client's dialect.
pub struct Found {
    pub repeat: Rc<Repeat>,
    pub answer: Rc<Entry>,
    pub dialect: Dialect,
}

/// The request being served, but its body, as a repeat is matched against it.
pub struct Incoming<'a> {
    pub key: &'a Rc<KeyRecord>,
    pub method: &'a Method,
    pub path_and_query: &'a str,
    pub config: &'a Rc<Config>,
}

impl Incoming<'_> {
    /// Whether this request with `body` is `kept`'s.
    fn is(&self, body: &[u8], kept: &Repeat) -> bool {
        kept.body.len() == body.len()
            && kept.key_id == self.key.id
            && kept.tenant == self.key.tenant
            && kept.method == *self.method
            && kept.path_and_query == self.path_and_query
            && Rc::ptr_eq(&kept.config, self.config)
            && kept.body == body
    }
}

/// An isolate's repeats, newest last.
#[derive(Default)]
pub struct Repeats {
    kept: RefCell<VecDeque<Rc<Repeat>>>,
}

impl Repeats {
    /// The repeat `incoming` with `body` is, with the memory level's answer for it — when the client's
    /// cache directive lets the cache answer, and the answer is fresh and due for no refresh
    /// (`Recent::get_settled`). Otherwise `None`: the request takes the phases' way.
    pub fn find(
        &self,
        incoming: &Incoming<'_>,
        body: &[u8],
        headers: &HeaderMap,
        recent: &Recent,
        now_ms: u64,
    ) -> Option<Found> {
        let repeat = {
            let mut kept = self.kept.borrow_mut();
            if kept.front().is_some_and(|oldest| !Rc::ptr_eq(&oldest.config, incoming.config)) {
                // A new config: what was found under the old one may no longer hold.
                kept.retain(|repeat| Rc::ptr_eq(&repeat.config, incoming.config));
            }
            kept.iter().rev().find(|kept| incoming.is(body, kept))?.clone()
        };
        if !cache::directive(headers).lookup() {
            return None;
        }
        let answer = recent.get_settled(&repeat.seed.input, now_ms)?;
        let dialect = replayable(&repeat.seed.dialect)?;
        Some(Found { repeat, answer, dialect })
    }

    /// Keeps `seed` for repeats of the request `incoming` with `body` (its bytes; a body over
    /// [`MAX_BODY_BYTES`] is not kept).
    pub fn keep(&self, incoming: Incoming<'_>, body: Vec<u8>, seed: Seed) {
        if body.len() > MAX_BODY_BYTES {
            return;
        }
        let mut kept = self.kept.borrow_mut();
        kept.retain(|repeat| !incoming.is(&body, repeat));
        if kept.len() >= MAX_ENTRIES {
            kept.pop_front();
        }
        kept.push_back(Rc::new(Repeat {
            key_id: incoming.key.id.clone(),
            tenant: incoming.key.tenant.clone(),
            method: incoming.method.clone(),
            path_and_query: incoming.path_and_query.to_string(),
            body,
            config: incoming.config.clone(),
            seed,
        }));
    }

    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.kept.borrow().len()
    }
}
