//! The request lifecycle (DESIGN.md §2) as named phases over one per-request context — the
//! shape of pingora's `ProxyHttp`, as plain functions. `Gateway::handle` routes a request;
//! `Gateway::invoke` is a model call, and reads as its phase list:
//!
//! resolve → authenticate → recall → prepare → admit → cache_lookup → coalesce → choose_origins
//! → forward → respond → (account)
//!
//! (`recall` is the Responses API's stored-response step: a no-op for other dialects. `admit`
//! runs after `prepare`, so it reserves what the request will really ask for. Where no
//! endpoint is public, `Gateway::serve` identifies the caller before the body is even parsed,
//! and `authenticate` then only authorizes it for the endpoint. That caller's byte-for-byte
//! repeat of a request just answered from the isolate's memory takes `phases::replay`
//! instead: authenticate → admit → the hit, on what the first hit's phases found.)
//!
//! The host only supplies ports and moves bytes in and out; `account` runs after the response
//! is sent, when the host says (`Deferred::complete`).

pub mod access;
pub mod account;
pub mod context;
pub mod log;
pub mod phases;
pub mod repeat;
pub mod respond;
pub mod stored;
pub mod stream;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use serde_json::json;

use crate::gateway::admin;
use crate::gateway::auth;
use crate::gateway::catalog;
use crate::gateway::config::{Config, ACTIVE_KEY};
use crate::gateway::dialect::{gemini, mlflow, ClientRequest, Dialect};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::keys::KeyRecord;
use crate::gateway::features::normalize::{self, Verbatim};
use crate::gateway::features::telemetry::{SpanContext, TraceParent};
use crate::gateway::features::usage::Accounting;
use crate::gateway::mcp::{self, McpBody, McpEnv, McpRequest};
use crate::gateway::ports::Ports;
use crate::gateway::routing::{self, ApiRoute};
use crate::gateway::types::Operation;
use crate::gateway::util::join::join;
use crate::gateway::util::text::hex;
use crate::gateway::util::time;

pub use account::{Deferred, Observed, Pending};
pub use context::{ClientInfo, Geo, IsolateState, ModelCall, RequestContext};
pub use log::LogRecord;
use repeat::SeedSlot;
pub use respond::{error_response, json_response, ResponseBody};
use stream::{Stage, StreamPump};

/// The pipeline's answer: the response to send now, and work for after it is sent.
pub struct Exchange<B> {
    pub response: Response<ResponseBody<B>>,
    pub deferred: Deferred,
}

struct ConfigMemo {
    raw: Vec<u8>,
    config: Rc<Config>,
    fetched_at: u64,
}

impl ConfigMemo {
    /// Whether it is due to be read again at `now` ([`time::refresh_due`]).
    fn due(&self, now: u64) -> bool {
        time::refresh_due(now.saturating_sub(self.fetched_at), self.config.settings.config_ttl_ms)
    }
}

/// The gateway of one isolate: a short-lived memo of the parsed config and the state the
/// phases share. Everything else is in KV.
#[derive(Default)]
pub struct Gateway {
    config: RefCell<Option<ConfigMemo>>,
    /// A request is reading the config again: the others keep the memo meanwhile.
    refreshing: Cell<bool>,
    /// The memo is due for a refresh ([`ConfigMemo::due`]): [`Gateway::refresh_due`] reads it
    /// again.
    config_due: Cell<bool>,
    state: IsolateState,
}

/// Clears `Gateway::refreshing` however the refreshing request's future ends (finished, or
/// dropped by the host).
struct Refreshing<'a>(&'a Cell<bool>);

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl Gateway {
    pub fn new() -> Self {
        Self::default()
    }

    pub async fn handle<P: Ports>(
        &self,
        ports: &P,
        request: Request<Vec<u8>>,
        client: &ClientInfo,
    ) -> Exchange<P::Body> {
        let started = ports.now_ms();
        let log = LogRecord {
            ts: started,
            request_id: request_id(ports, &request),
            method: request.method().to_string(),
            path: request.uri().path().to_string(),
            ..LogRecord::default()
        };
        let path = request.uri().path();
        if path == "/admin" || path.starts_with("/admin/") {
            return self.admin(ports, request, log).await;
        }
        if routing::is_access_requests_path(path) {
            let mut log = log;
            let config = self.config(ports, &mut log).await;
            let (response, deferred) = access::serve(ports, &self.state, config, request, log).await;
            return Exchange { response, deferred };
        }
        // Every SDK reads errors in its API's shape: until routing says more, the path decides.
        let dialect = routing::path_dialect(path);
        let observed = Observed {
            parent: TraceParent::from_headers(request.headers()),
            books: Some((self.state.tally.clone(), self.state.telemetry.clone())),
            ..Observed::default()
        };
        let mut ctx = RequestContext {
            state: &self.state,
            client,
            dialect,
            log,
            pending: Pending::default(),
            observed,
            repeat_seed: SeedSlot::Unwanted,
        };
        let mut response = match self.serve(ports, &mut ctx, request).await {
            Ok(response) => response,
            Err(error) => {
                ctx.log.error = Some(error.code);
                respond::error_with_body(&error, ctx.dialect.error_body(&error))
            }
        };
        phases::annotate(&ctx, &mut response);
        ctx.log.status = response.status().as_u16();
        ctx.log.latency_ms = ports.now_ms().saturating_sub(started);
        let deferred = Deferred { log: ctx.log, pending: ctx.pending, audit: None, observed: ctx.observed };
        Exchange { response, deferred }
    }

    /// Routes a request: health, catalog listings, or a model call in the client's dialect.
    async fn serve<P: Ports>(
        &self,
        ports: &P,
        ctx: &mut RequestContext<'_>,
        request: Request<Vec<u8>>,
    ) -> Result<Response<ResponseBody<P::Body>>> {
        let route = routing::match_route(request.method(), request.uri().path())?;
        if route == ApiRoute::Health {
            return Ok(json_response(StatusCode::OK, &json!({"status": "OK"})));
        }
        let query = request.uri().query().unwrap_or("");
        // Gemini clients may send their key as `x-goog-api-key` or `?key=` (never logged: the
        // log line holds the path only).
        let credential = match route {
            ApiRoute::Gemini { .. } => gemini::api_key(request.headers(), query),
            _ => None,
        };
        let (config, prefetched) = match self.memoized_config(ports.now_ms()) {
            Some(config) => (config, None),
            // The config must be read (a new isolate, or a quiet one whose memos lapsed): the
            // caller's key is read beside it instead of after it, one KV round trip less before
            // the origin call. Every route but /health looks up a presented key.
            None => {
                let presented = auth::presented(request.headers(), credential.as_deref());
                let reads =
                    join(self.read_config(ports, &mut ctx.log), auth::prefetch(ports, &self.state.auth, presented));
                let (config, prefetched) = reads.await;
                (config?, prefetched)
            }
        };
        if let Some(telemetry) = &config.telemetry {
            let span = SpanContext::start(ctx.observed.parent.as_ref(), telemetry.sample, ports);
            ctx.observed.span = Some(span);
            ctx.observed.config = Some(telemetry.clone());
        }
        if let ApiRoute::Mcp(server) = route {
            return Ok(mcp_call(ports, ctx, &config, server.as_deref(), request).await);
        }
        let unified = matches!(route, ApiRoute::UnifiedInvocations(_));
        if route.is_listing() {
            // Listings show what the caller may call; any key problem means the public view.
            let key = auth::viewer(ports, &self.state.auth, request.headers(), &config.auth.jwt).await;
            let viewer = catalog::Viewer { key: key.as_deref() };
            return match route {
                ApiRoute::ListModels => Ok(respond::ok_json(catalog::models(&config, viewer))),
                ApiRoute::MlflowModels => Ok(respond::ok_json(catalog::mlflow_models(&config, viewer))),
                ApiRoute::ListEndpoints => catalog::endpoints(&config, query, viewer).map(respond::ok_json),
                ApiRoute::GetEndpoint(name) => catalog::endpoint(&config, &name, viewer).map(respond::ok_json),
                ApiRoute::ListLegacyRoutes => catalog::legacy_routes(&config, query, viewer).map(respond::ok_json),
                ApiRoute::GetLegacyRoute(name) => catalog::legacy_route(&config, &name, viewer).map(respond::ok_json),
                _ => Err(GatewayError::not_found(ErrorCode::RouteNotFound, "no such listing")),
            };
        }
        let (path_name, dialect) = match route {
            ApiRoute::ListModels
            | ApiRoute::MlflowModels
            | ApiRoute::ListEndpoints
            | ApiRoute::GetEndpoint(_)
            | ApiRoute::ListLegacyRoutes
            | ApiRoute::GetLegacyRoute(_) => {
                return Err(GatewayError::not_found(ErrorCode::RouteNotFound, "no such listing"))
            }
            ApiRoute::Health => return Ok(json_response(StatusCode::OK, &json!({"status": "OK"}))),
            ApiRoute::GetResponse(id) => {
                return stored::retrieve(ports, ctx, request.headers(), &config.auth.jwt, &id).await
            }
            ApiRoute::DeleteResponse(id) => {
                return stored::delete(ports, ctx, request.headers(), &config.auth.jwt, &id).await
            }
            ApiRoute::OpenAi(op) => (None, Dialect::OpenAi(op)),
            ApiRoute::Invocations(name) => (Some(name), Dialect::Mlflow),
            // Chat or embeddings: the body decides, below.
            ApiRoute::UnifiedInvocations(name) => (Some(name), Dialect::OpenAi(Operation::Chat)),
            ApiRoute::AnthropicMessages => (None, Dialect::Anthropic),
            ApiRoute::CreateResponse => (None, Dialect::responses()),
            ApiRoute::Gemini { name, stream } => {
                let mode = gemini::mode(if stream { "streamGenerateContent" } else { "generateContent" }, query);
                (Some(name), Dialect::Gemini(mode.unwrap_or(gemini::Mode::Generate)))
            }
            ApiRoute::Mcp(_) => return Err(GatewayError::not_found(ErrorCode::RouteNotFound, "no MCP route")),
        };
        ctx.dialect = dialect;
        // Who calls is settled before the body is read wherever it can be: when no endpoint is
        // public every model call needs a valid caller, so a client without one is refused
        // here and its body costs nothing (up to `max_body_bytes`, parsed into a tree of up to
        // `settings.max_body_*` values: ~2 ms of native CPU at the defaults, in
        // `benches/slowest`). Where an endpoint is public, an anonymous body must be read to
        // find its endpoint (and anyone may send it one).
        let identified = if config.any_public() {
            None
        } else if prefetched.is_some() {
            prefetched
        } else {
            let presented = auth::presented(request.headers(), credential.as_deref());
            auth::caller(ports, &self.state.auth, presented, &config.auth.jwt, false).await?.map(|c| c.record)
        };
        let (parts, mut raw) = request.into_parts();
        // A caller's repeat of a request just answered from memory: answered again as it was.
        let incoming = identified.as_ref().filter(|_| ports.keeps_state()).map(|key| repeat::Incoming {
            key,
            method: &parts.method,
            path_and_query: parts.uri.path_and_query().map_or("", |pq| pq.as_str()),
            config: &config,
        });
        if let Some(incoming) = &incoming {
            if let Some(found) =
                self.state.repeats.find(incoming, &raw, &parts.headers, &self.state.recent, ports.now_ms())
            {
                let key = Rc::clone(incoming.key);
                return phases::replay(ports, ctx, config.clone(), parts.headers, found, key).await;
            }
            ctx.repeat_seed = SeedSlot::Wanted;
        }
        let (limit, bounds) = (config.settings.max_body_bytes, config.settings.body_bounds());
        // An OpenAI client's object is the request but for `model`: its own bytes are kept,
        // placed field by field, to be forwarded without writing the body anew.
        let (body, verbatim) = if matches!(ctx.dialect, Dialect::OpenAi(_)) && path_name.is_none() {
            let (body, places) = normalize::parse_json_object_placed(&raw, limit, bounds)?;
            // The bytes are needed again only to keep a repeat (a copy; else they move).
            let bytes = if incoming.is_some() { raw.clone() } else { std::mem::take(&mut raw) };
            let verbatim = Verbatim::of(bytes, places, &body);
            (body, verbatim)
        } else {
            (normalize::parse_json_object(&raw, limit, bounds)?, None)
        };
        if unified {
            ctx.dialect = Dialect::OpenAi(mlflow::unified_operation(&body)?);
        }
        let mut request = ctx.dialect.read(body, path_name)?;
        request.credential = credential;
        request.verbatim = verbatim;
        let answered = invoke(ports, ctx, config.clone(), parts.headers, request, identified.clone()).await;
        if let (Some(incoming), SeedSlot::Filled(seed)) = (incoming, std::mem::take(&mut ctx.repeat_seed)) {
            self.state.repeats.keep(incoming, raw, seed);
        }
        answered
    }

    /// `/admin/*`: the admin API answers with its own audit line instead of a request log.
    async fn admin<P: Ports>(&self, ports: &P, request: Request<Vec<u8>>, mut log: LogRecord) -> Exchange<P::Body> {
        let answer = admin::handle(ports, &self.state.auth, &self.state.recent, &request).await;
        log.status = answer.status.as_u16();
        let mut response = match answer.raw {
            Some(raw) => {
                let mut response = Response::new(ResponseBody::Full(raw.bytes));
                *response.status_mut() = answer.status;
                let headers = response.headers_mut();
                headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(raw.content_type));
                for (name, value) in raw.headers {
                    headers.insert(*name, HeaderValue::from_static(value));
                }
                response
            }
            None => json_response(answer.status, &answer.body),
        };
        response.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let deferred =
            Deferred { log, pending: Pending::default(), audit: Some(answer.audit), observed: Observed::default() };
        Exchange { response, deferred }
    }

    /// The memos found due for a refresh by the requests so far (the config's, keys'), read
    /// again now: a host runs this after a response, so no request waits for those reads. A
    /// failed read leaves the memo as it was (the next request finds it due again).
    pub async fn refresh_due<P: Ports>(&self, ports: &P) {
        if self.config_due.replace(false)
            && !self.refreshing.get()
            && self.config.borrow().as_ref().is_some_and(|memo| memo.due(ports.now_ms()))
        {
            let _ = self.read_config(ports, &mut LogRecord::default()).await;
        }
        crate::gateway::auth::refresh_due(ports, &self.state.auth).await;
    }

    /// The active config, memoized per isolate for `settings.config_ttl_ms`. From half its
    /// life on the memo is read again after a response ([`Gateway::refresh_due`]); once it has
    /// expired, one request reads it again while the others in flight keep the memo (one KV
    /// read per refresh, not one per request: 16 concurrent requests made 16). An invalid
    /// config is a 503 whose message names no detail (clients must not learn config paths or
    /// names); the issues go to the request's log line.
    async fn config<P: Ports>(&self, ports: &P, log: &mut LogRecord) -> Result<Rc<Config>> {
        match self.memoized_config(ports.now_ms()) {
            Some(config) => Ok(config),
            None => self.read_config(ports, log).await,
        }
    }

    /// The memoized config while it may be served: fresh, or stale while another request reads
    /// it again. One due for a refresh is marked for [`Gateway::refresh_due`].
    fn memoized_config(&self, now: u64) -> Option<Rc<Config>> {
        let memo = self.config.borrow();
        let memo = memo.as_ref()?;
        let fresh = now.saturating_sub(memo.fetched_at) < memo.config.settings.config_ttl_ms;
        if !fresh && !self.refreshing.get() {
            return None;
        }
        if fresh && memo.due(now) {
            self.config_due.set(true);
        }
        Some(memo.config.clone())
    }

    /// Reads the active config from KV into the memo (one reader at a time; see `memoized_config`).
    async fn read_config<P: Ports>(&self, ports: &P, log: &mut LogRecord) -> Result<Rc<Config>> {
        let now = ports.now_ms();
        self.refreshing.set(true);
        let _refreshing = Refreshing(&self.refreshing);
        let raw = match ports.get(ACTIVE_KEY).await {
            Ok(raw) => raw,
            // A store failure: an isolate that has a config keeps serving it; others fail
            // closed, retryably.
            Err(e) => {
                log.detail = Some(format!("reading {ACTIVE_KEY} failed: {}", e.message));
                return match &*self.config.borrow() {
                    Some(memo) => Ok(memo.config.clone()),
                    None => Err(GatewayError::kv_unavailable("the gateway's configuration")),
                };
            }
        };
        let Some(raw) = raw else {
            *self.config.borrow_mut() = None;
            return Err(GatewayError::not_configured(
                ErrorCode::ConfigMissing,
                format!("the gateway has no configuration: KV entry \"{ACTIVE_KEY}\" is missing"),
            ));
        };
        let mut memo = self.config.borrow_mut();
        if let Some(memo) = memo.as_mut().filter(|m| m.raw == raw) {
            memo.fetched_at = now;
            return Ok(memo.config.clone());
        }
        let config = Config::from_stored(&raw).map_err(|issues| {
            let first = issues.first().map(ToString::to_string).unwrap_or_default();
            log.detail = Some(format!(
                "KV entry \"{ACTIVE_KEY}\" is invalid ({} issue(s)); first: {}",
                issues.len(),
                crate::gateway::util::text::truncate(&first, 500)
            ));
            GatewayError::not_configured(
                ErrorCode::ConfigInvalid,
                "the gateway's configuration is invalid; its operator can see why in the gateway log \
                 or with `gatewayctl validate`",
            )
        })?;
        let config = Rc::new(config);
        *memo = Some(ConfigMemo { raw, config: config.clone(), fetched_at: now });
        Ok(config)
    }
}

/// One model call, phase by phase.
async fn invoke<P: Ports>(
    ports: &P,
    ctx: &mut RequestContext<'_>,
    config: Rc<Config>,
    headers: HeaderMap,
    request: ClientRequest,
    identified: Option<Rc<KeyRecord>>,
) -> Result<Response<ResponseBody<P::Body>>> {
    let mut call = phases::resolve(ctx, config, headers, request)?;
    phases::authenticate(ports, ctx, &mut call, identified).await?;
    stored::recall(ports, ctx, &mut call).await?;
    phases::prepare(ctx, &mut call)?;
    phases::admit(ports, ctx, &mut call).await?;
    if let Some(hit) = phases::cache_lookup(ports, ctx, &mut call).await? {
        return Ok(hit);
    }
    if let Some(shared) = phases::coalesce(ports, ctx, &mut call).await? {
        return Ok(shared);
    }
    let endpoint = Arc::clone(&call.endpoint);
    let origins = phases::choose_origins(ctx, &mut call, &endpoint)?;
    let upstream = phases::forward(ports, ctx, &mut call, &origins).await?;
    phases::respond(ports, ctx, &call, upstream).await
}

/// `/mcp`, `/mcp/{server}`: the caller authenticated here, everything else in `mcp::handle`
/// (errors are JSON-RPC errors); a tool call is accounted after the response like a model call.
async fn mcp_call<P: Ports>(
    ports: &P,
    ctx: &mut RequestContext<'_>,
    config: &Config,
    server: Option<&str>,
    request: Request<Vec<u8>>,
) -> Response<ResponseBody<P::Body>> {
    let (parts, body) = request.into_parts();
    // A key or a JWT; no endpoint check: `/mcp` authorizes with the caller's MCP grant.
    let presented = auth::presented(&parts.headers, None);
    let key = auth::caller(ports, &ctx.state.auth, presented, &config.auth.jwt, false)
        .await
        .and_then(|caller| caller.map(|c| c.record).ok_or_else(auth::missing_key));
    let key_for_usage = key.as_ref().ok().cloned();
    ctx.log.key_id = key_for_usage.as_ref().map(|k| k.id.clone());
    let env = McpEnv {
        config: &config.mcp,
        limits: &config.limits,
        limiter: &ctx.state.limiter,
        state: &ctx.state.mcp,
        max_body_bytes: config.settings.max_body_bytes,
        body_bounds: config.settings.body_bounds(),
        max_response_bytes: config.settings.max_response_bytes,
    };
    let call = McpRequest { method: &parts.method, server, headers: &parts.headers, body: &body };
    let answer = mcp::handle(ports, &env, key, call).await;
    if answer.tool_call {
        let book = &ctx.state.usage;
        ctx.pending.accounting =
            Some(Accounting::new(book, key_for_usage.as_deref(), None, ctx.log.ts, answer.admission));
    }
    ctx.log.stream = answer.log.streamed;
    ctx.log.mcp = Some(answer.log);
    let body = match answer.body {
        McpBody::Full(bytes) => ResponseBody::Full(bytes),
        McpBody::Stream(upstream, stage) => {
            let idle_ms = stage.idle_timeout_ms();
            ResponseBody::Stream(upstream, StreamPump::new(vec![Stage::Mcp(stage)]).with_idle_timeout(idle_ms))
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    response
}

/// The client's `x-request-id` when it is sane, else a fresh random one.
fn request_id<P: Ports>(ports: &P, request: &Request<Vec<u8>>) -> String {
    match normalize::client_request_id(request.headers()) {
        Some(id) => id.to_string(),
        None => {
            let mut bytes = [0u8; 12];
            ports.random_bytes(&mut bytes);
            hex(&bytes)
        }
    }
}

#[cfg(test)]
mod dialect_tests;
#[cfg(test)]
mod observe_tests;
#[cfg(test)]
mod phase_tests;
#[cfg(test)]
mod repeat_tests;
#[cfg(test)]
mod tests;
