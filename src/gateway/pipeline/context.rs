//! The state the phases work on: what an isolate keeps between requests, what one request
//! accumulates (its log line and after-response work), and the model call being served.

use std::cell::OnceCell;
use std::rc::Rc;
use std::sync::Arc;

use http::HeaderMap;
use serde_json::{Map, Value};

use crate::gateway::auth::AuthMemo;
use crate::gateway::config::{Config, Endpoint};
use crate::gateway::dialect::responses::JustStored;
use crate::gateway::dialect::Dialect;
use crate::gateway::features::cache;
use crate::gateway::features::coalesce::{InFlight, Leader};
use crate::gateway::features::keys::KeyRecord;
use crate::gateway::features::limits::{Limiter, Reservation};
use crate::gateway::features::normalize::{Canonical, Verbatim};
use crate::gateway::features::telemetry::{TallyBook, Telemetry};
use crate::gateway::features::usage::UsageBook;
use crate::gateway::forward::Breaker;
use crate::gateway::mcp::McpState;
use crate::gateway::pipeline::account::{Observed, Pending};
use crate::gateway::pipeline::log::LogRecord;
use crate::gateway::pipeline::repeat::{Repeats, SeedSlot};
use crate::gateway::types::Operation;

/// Where the client is, as far as the host knows: a region fixed by the deployment, or geo
/// data the host reads when routing first asks for it (on bare workerd, reading `request.cf`
/// on every request cost ~2-3% of a request's CPU; only a config with a region map needs it).
#[derive(Default)]
pub struct ClientInfo {
    /// A region name fixed by the deployment (e.g. a Spin variable), when there is no geo data.
    pub region: Option<String>,
    geo: OnceCell<Geo>,
    lookup: Option<Box<dyn Fn() -> Geo>>,
}

/// The client's location as the host's geo data gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Geo {
    /// ISO country code (Cloudflare `request.cf.country`).
    pub country: Option<String>,
    /// Continent code (Cloudflare `request.cf.continent`).
    pub continent: Option<String>,
}

impl ClientInfo {
    /// Geo data known up front.
    pub fn with_geo(geo: Geo) -> Self {
        ClientInfo { geo: OnceCell::from(geo), ..ClientInfo::default() }
    }

    /// Geo data read by `lookup`, at most once, when routing first needs it.
    pub fn with_lookup(lookup: impl Fn() -> Geo + 'static) -> Self {
        ClientInfo { lookup: Some(Box::new(lookup)), ..ClientInfo::default() }
    }

    /// The client's geo data (none when the host has no lookup).
    pub fn geo(&self) -> &Geo {
        self.geo.get_or_init(|| self.lookup.as_ref().map(|lookup| lookup()).unwrap_or_default())
    }
}

impl std::fmt::Debug for ClientInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientInfo").field("region", &self.region).field("geo", &self.geo.get()).finish_non_exhaustive()
    }
}

/// What an isolate keeps between requests: short-lived memos and counters. Everything
/// durable is in KV.
#[derive(Default)]
pub struct IsolateState {
    pub breaker: Breaker,
    pub auth: AuthMemo,
    pub limiter: Rc<Limiter>,
    pub usage: Rc<UsageBook>,
    /// Request tallies for `/admin/metrics` and the OpenTelemetry batch.
    pub tally: Rc<TallyBook>,
    pub telemetry: Rc<Telemetry>,
    pub mcp: McpState,
    /// Deterministic requests on their way to an origin (`features::coalesce`).
    pub in_flight: Rc<InFlight>,
    /// Cached answers stored or found here in the last seconds (the cache's first level).
    pub recent: cache::Recent,
    /// Requests answered from `recent`, kept to answer their byte-for-byte repeats.
    pub repeats: Repeats,
    /// Responses API responses stored here in the last minute, before their KV write lands.
    pub just_stored: Rc<JustStored>,
}

/// One request on its way through the phases.
pub struct RequestContext<'a> {
    pub state: &'a IsolateState,
    pub client: &'a ClientInfo,
    /// The API the client speaks: how its answer and errors are written.
    pub dialect: Dialect,
    /// The log line, filled in by each phase.
    pub log: LogRecord,
    /// Work for after the response, filled in by each phase.
    pub pending: Pending,
    /// Trace context and what the span needs beyond the log line.
    pub observed: Observed,
    /// What a memory-level cache hit found, for `Gateway::serve` to keep for its repeats.
    pub repeat_seed: SeedSlot,
}

/// One model call, built by the `resolve` phase and carried through the later ones.
pub struct ModelCall {
    pub config: Rc<Config>,
    /// The client's request headers (credentials, cache directives, region preference).
    pub headers: HeaderMap,
    /// A key the client's dialect found outside the standard headers (Gemini's).
    pub credential: Option<String>,
    pub endpoint: Arc<Endpoint>,
    pub op: Operation,
    /// The request in OpenAI's shape, without `model`.
    pub body: Map<String, Value>,
    /// SHA-256 of the canonical request, when a traffic route picked the endpoint by it.
    pub route_hash: Option<u64>,
    /// The canonical form of `body`, written once for all that read it: by `resolve` for a
    /// traffic route, else by the first phase after `prepare` that needs it
    /// ([`ModelCall::canonical`]). A phase that changes `body` drops it (none does after
    /// `prepare`).
    pub canonical: Option<Canonical>,
    /// The client's own bytes of `body` (an OpenAI client's request, `ClientRequest::verbatim`),
    /// kept up to date by `prepare` like `canonical`: the forwarded body is copied from them
    /// when no canonical form was written. Dropped where `body` changes otherwise.
    pub verbatim: Option<Verbatim>,
    pub key: Option<Rc<KeyRecord>>,
    /// `name@version` of the rendered prompt template.
    pub template_version: Option<String>,
    /// The client asked for a stream.
    pub stream: bool,
    /// Where a deterministic answer is stored after the response (the `cache_lookup` phase).
    pub cache_key: Option<cache::Key>,
    /// The residency pin the request obeys (the endpoint's and the key's; `choose_origins`).
    pub pin: Option<String>,
    /// Prompt tokens the gateway estimates for the request (`admit`): reservations, and what
    /// a stream is charged when the origin reports no usage.
    pub prompt_estimate: u64,
    /// What `admit` reserved for the request.
    pub reservation: Reservation,
    /// The client asked for the stream's usage chunk (`stream_options.include_usage`); the
    /// origin is always asked.
    pub client_wants_usage: bool,
    /// This call leads an origin call identical ones wait for (`coalesce`): its answer is
    /// shared when it comes; dropping the call ends the flight.
    pub lead: Option<Leader>,
}

impl ModelCall {
    /// The tenant that owns the request's cached answers and usage.
    pub fn tenant(&self) -> &str {
        self.key.as_ref().map_or(PUBLIC_TENANT, |k| k.tenant.as_str())
    }

    /// The prepared body's canonical form, written on first use.
    pub fn canonical(&mut self) -> &Canonical {
        self.canonical.get_or_insert_with(|| Canonical::of(&self.body))
    }
}

pub use crate::gateway::features::limits::PUBLIC_TENANT;
