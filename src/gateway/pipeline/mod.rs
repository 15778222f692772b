//! The request lifecycle, top to bottom (DESIGN.md §2). Each phase is a plain function call
//! on data; the host only supplies ports and moves bytes in and out.

pub mod stream;

use std::cell::RefCell;
use std::rc::Rc;

use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::gateway::auth::{self, AuthMemo};
use crate::gateway::config::{Config, Endpoint, EndpointType, ACTIVE_KEY};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::guard::{self, GuardReport};
use crate::gateway::features::limits::{self, Limiter, RateHeaders};
use crate::gateway::features::normalize::{self};
use crate::gateway::features::usage::{Accounting, Outcome, UsageBook, UsageLog};
use crate::gateway::features::{cache, template};
use crate::gateway::forward::{self, Attempt, Breaker};
use crate::gateway::pipeline::stream::{StreamPump, StreamSummary};
use crate::gateway::ports::Ports;
use crate::gateway::providers::{anthropic, openai, Reply, StreamMode, StreamTranslator};
use crate::gateway::routing::{self, ApiRoute};
use crate::gateway::types::{Operation, Usage};
use crate::gateway::util::text::hex;
use crate::gateway::{admin, catalog};

/// A response body: bytes the gateway produced, or the origin's body streamed through a
/// `StreamPump` the host drives chunk by chunk (never buffered whole).
pub enum ResponseBody<B> {
    Full(Vec<u8>),
    Stream(B, StreamPump),
}

/// The pipeline's answer: the response to send now, and work for after it is sent.
pub struct Exchange<B> {
    pub response: Response<ResponseBody<B>>,
    pub deferred: Deferred,
}

/// After-response work (the Background port as data): accounting and the log line.
pub struct Deferred {
    pub log: LogRecord,
    pub pending: Pending,
    pub audit: Option<String>,
}

/// Work a request leaves for after its response: filled in by the phases as they run.
#[derive(Default)]
pub struct Pending {
    pub accounting: Option<Accounting>,
    /// A deterministic answer to store: (KV key, encoded entry, TTL seconds).
    pub cache_fill: Option<(String, Vec<u8>, u64)>,
}

impl Deferred {
    /// Runs the work once the response is out and returns the structured log line for the
    /// host to emit. `stream` is the pump's summary when the body was streamed — taken when the
    /// stream ended or the client went away, so partial usage is still counted.
    pub async fn complete<P: Ports>(mut self, ports: &P, stream: Option<StreamSummary>) -> String {
        if let Some(audit) = self.audit {
            return audit;
        }
        if let Some(summary) = stream {
            self.log.set_usage(summary.usage);
            self.log.stream_completed = Some(summary.completed);
        }
        if let Some((key, entry, ttl)) = self.pending.cache_fill.take() {
            if let Err(e) = ports.put(&key, &entry, Some(ttl)).await {
                self.log.cache_error = Some(e.code);
            }
        }
        if let Some(accounting) = self.pending.accounting {
            let usage = match (self.log.prompt_tokens, self.log.completion_tokens) {
                (None, None) => None,
                (p, c) => Some(Usage { prompt_tokens: p.unwrap_or(0), completion_tokens: c.unwrap_or(0) }),
            };
            let cache_hit = self.log.cache == Some(cache::Status::Hit.as_str());
            let outcome = Outcome { usage, status: self.log.status, latency_ms: self.log.latency_ms, cache_hit };
            let mut fields = accounting.complete(ports, outcome).await;
            self.log.tenant = fields.tenant.take();
            fields.key_id = None;
            self.log.accounting = Some(fields);
        }
        serde_json::to_string(&self.log).unwrap_or_default()
    }
}

/// One structured log line per request. Holds no secret: no key, no credential, and the
/// origin only as scheme://host:port (query strings may carry provider keys).
#[derive(Debug, Default, Serialize)]
pub struct LogRecord {
    pub ts: u64,
    pub request_id: String,
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The origin that answered (or the last one tried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Every origin tried, in order, with its outcome.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptLog>,
    pub status: u16,
    pub latency_ms: u64,
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// For streams: false when the client went away before the origin's stream ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_completed: Option<bool>,
    /// `name@version` of the rendered prompt template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Input guardrail effects (rule ids and counts, never the matched text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard_output: Option<GuardReport>,
    /// HIT, MISS or BYPASS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_error: Option<ErrorCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub accounting: Option<UsageLog>,
    #[serde(skip)]
    pub rate_headers: RateHeaders,
}

impl LogRecord {
    fn set_usage(&mut self, usage: Option<Usage>) {
        self.prompt_tokens = usage.map(|u| u.prompt_tokens);
        self.completion_tokens = usage.map(|u| u.completion_tokens);
    }
}

#[derive(Debug, Serialize)]
pub struct AttemptLog {
    pub origin: String,
    /// `ok`, `http_<status>`, `connect_error`, `timeout`.
    pub outcome: String,
}

/// Where the client is, as far as the host knows.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// ISO country code (Cloudflare `request.cf.country`).
    pub country: Option<String>,
    /// Continent code (Cloudflare `request.cf.continent`).
    pub continent: Option<String>,
    /// A region name fixed by the deployment (e.g. a Spin variable), when there is no geo data.
    pub region: Option<String>,
}

/// The API dialect a client speaks: how its request is read and its answer written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// OpenAI-compatible: `model` in the body names the endpoint.
    OpenAi(Operation),
    /// MLflow invocations: the path names the endpoint, whose type decides the operation.
    Mlflow,
    /// Anthropic Messages (`/v1/messages`), served by chat endpoints.
    Anthropic,
}

struct ConfigMemo {
    raw: Vec<u8>,
    config: Rc<Config>,
    fetched_at: u64,
}

/// Per-isolate state: a short-lived memo of the parsed config. Everything else is in KV.
#[derive(Default)]
pub struct Gateway {
    config: RefCell<Option<ConfigMemo>>,
    breaker: Breaker,
    auth: AuthMemo,
    limiter: Rc<Limiter>,
    usage: Rc<UsageBook>,
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
        let request_id = match normalize::client_request_id(request.headers()) {
            Some(id) => id.to_string(),
            None => {
                let mut bytes = [0u8; 12];
                ports.random_bytes(&mut bytes);
                hex(&bytes)
            }
        };
        let mut log = LogRecord {
            ts: started,
            request_id,
            method: request.method().to_string(),
            path: request.uri().path().to_string(),
            ..LogRecord::default()
        };

        let path = request.uri().path();
        if path == "/admin" || path.starts_with("/admin/") {
            let answer = admin::handle(ports, &self.auth, &request).await;
            log.status = answer.status.as_u16();
            let audit = Some(answer.audit.clone());
            let deferred = Deferred { log, pending: Pending::default(), audit };
            return Exchange { response: answer.into_response(), deferred };
        }
        let mut pending = Pending::default();
        // Anthropic SDKs read errors in Anthropic's shape; everyone else gets the OpenAI shape.
        let anthropic_client = routing::is_anthropic_path(request.uri().path());
        let mut response = match self.process(ports, request, client, &mut log, &mut pending).await {
            Ok(response) => response,
            Err(error) => {
                log.error = Some(error.code);
                let mut response = error_response(&error);
                if anthropic_client {
                    *response.body_mut() = ResponseBody::Full(anthropic::messages_error_body(&error));
                }
                response
            }
        };
        let headers = response.headers_mut();
        log.rate_headers.apply(headers);
        if let Ok(id) = HeaderValue::from_str(&log.request_id) {
            headers.insert("x-request-id", id);
        }
        if let Some(origin) = log.origin.as_deref().and_then(|o| HeaderValue::from_str(o).ok()) {
            headers.insert("x-gateway-origin", origin);
        }
        if !log.attempts.is_empty() {
            headers.insert("x-gateway-attempts", HeaderValue::from(log.attempts.len()));
        }
        if let Some(endpoint) = log.endpoint.as_deref().and_then(|e| HeaderValue::from_str(e).ok()) {
            headers.insert("x-gateway-endpoint", endpoint);
        }
        if let Some(version) = log.template.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
            headers.insert("x-gateway-template-version", version);
        }
        if let Some(status) = log.cache {
            headers.insert(cache::STATUS_HEADER, HeaderValue::from_static(status));
        }
        if log.guard.as_ref().is_some_and(|g| g.flagged) {
            headers.insert("x-gateway-guard", HeaderValue::from_static("flagged"));
        }
        log.status = response.status().as_u16();
        log.latency_ms = ports.now_ms().saturating_sub(started);
        Exchange { response, deferred: Deferred { log, pending, audit: None } }
    }

    async fn process<P: Ports>(
        &self,
        ports: &P,
        request: Request<Vec<u8>>,
        client: &ClientInfo,
        log: &mut LogRecord,
        pending: &mut Pending,
    ) -> Result<Response<ResponseBody<P::Body>>> {
        let route = routing::match_route(request.method(), request.uri().path())?;
        if route == ApiRoute::Health {
            return Ok(json_response(StatusCode::OK, &json!({"status": "OK"})));
        }
        let config = self.config(ports).await?;
        let query = request.uri().query().unwrap_or("");
        let (name, dialect) = match route {
            ApiRoute::Health => unreachable!("answered above"),
            ApiRoute::ListModels => return Ok(json_response(StatusCode::OK, &catalog::models(&config))),
            ApiRoute::ListEndpoints => return catalog::endpoints(&config, query).map(ok_json),
            ApiRoute::GetEndpoint(name) => return catalog::endpoint(&config, &name).map(ok_json),
            ApiRoute::ListLegacyRoutes => return catalog::legacy_routes(&config, query).map(ok_json),
            ApiRoute::GetLegacyRoute(name) => return catalog::legacy_route(&config, &name).map(ok_json),
            ApiRoute::OpenAi(op) => (None, Dialect::OpenAi(op)),
            ApiRoute::Invocations(name) => (Some(name), Dialect::Mlflow),
            ApiRoute::AnthropicMessages => (None, Dialect::Anthropic),
        };
        let (parts, body) = request.into_parts();
        self.invoke(ports, &config, dialect, name, &body, &parts.headers, client, log, pending).await
    }

    /// One model call: read → resolve → normalize → choose origins → forward → answer.
    #[allow(clippy::too_many_arguments)] // the phases' inputs, passed plainly
    async fn invoke<P: Ports>(
        &self,
        ports: &P,
        config: &Config,
        dialect: Dialect,
        path_name: Option<String>,
        body: &[u8],
        headers: &HeaderMap,
        client: &ClientInfo,
        log: &mut LogRecord,
        pending: &mut Pending,
    ) -> Result<Response<ResponseBody<P::Body>>> {
        // Read the request in the client's dialect into the internal (OpenAI) shape.
        let mut body = normalize::parse_json_object(body, config.settings.max_body_bytes)?;
        if dialect == Dialect::Anthropic {
            body = anthropic::messages_request_to_openai(body)?;
        }
        let name = match path_name {
            Some(name) => {
                body.remove("model"); // MLflow ignores it; the path names the endpoint
                name
            }
            None => take_model(&mut body)?,
        };

        // Resolve the endpoint. The request's hash (a SHA-256 of its canonical form) picks a
        // traffic route's destination and a weighted origin; most requests need neither.
        let route_hash = config.routes.contains_key(&name).then(|| normalize::request_hash(&body));
        let wanted = match dialect {
            Dialect::OpenAi(op) => Some(routing::endpoint_type_for(op)),
            Dialect::Anthropic => Some(EndpointType::Chat),
            Dialect::Mlflow => None,
        };
        let resolved = routing::resolve(config, &name, wanted, route_hash.unwrap_or(0))?;
        let endpoint = resolved.endpoint;
        log.endpoint = Some(endpoint.name.clone());
        log.route = resolved.route;
        log.provider = Some(endpoint.provider.name());
        let op = routing::operation_for(endpoint.endpoint_type);

        // Authenticate, authorize, limit.
        let key = auth::authenticate(ports, &self.auth, headers, &name, endpoint.public).await?;
        log.key_id = key.as_ref().map(|k| k.id.clone());
        let admission = match limits::admit(
            ports,
            &self.limiter,
            &config.limits,
            key.as_deref(),
            &endpoint.name,
            endpoint.call_limit.as_ref(),
        )
        .await
        {
            Ok(admission) => admission,
            Err(refused) => {
                log.rate_headers = refused.headers.clone();
                return Err(refused.error);
            }
        };
        log.rate_headers = admission.headers().clone();
        let price = config.prices.get(endpoint.provider.name(), &endpoint.model);
        pending.accounting = Some(Accounting::new(&self.usage, key.as_deref(), price, log.ts, Some(admission)));

        // Render the prompt template, normalize, guard the input.
        let template_version = match &endpoint.template {
            Some(t) => {
                let variables = template::extract_variables(&mut body);
                let rendered = template::render(t, &variables)?;
                let label = rendered.label();
                template::apply(rendered, op, &mut body)?;
                Some(label)
            }
            None => None,
        };
        log.template = template_version.clone();
        normalize::apply_endpoint_rules(&mut body, &endpoint.parameters, &endpoint.clamps, &endpoint.overrides);
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        log.stream = stream;
        log.guard = Some(guard::apply_input(&endpoint.guardrails, &mut body)?).filter(|r| !r.is_empty());

        // Answer deterministic requests from the cache.
        let tenant = key.as_ref().map_or(PUBLIC_TENANT, |k| k.tenant.as_str());
        let cache_key =
            match cache_phase(ports, &endpoint, op, &body, headers, tenant, template_version.as_deref(), log).await? {
                CacheLookup::Hit(entry) => return answer_from_cache(&entry, stream, dialect, &endpoint.model),
                CacheLookup::Fill(key) => Some(key),
                CacheLookup::Skip => None,
            };

        // Choose origins.
        let region = client_region(config, client, headers);
        log.region = region.clone();
        let hash = match route_hash {
            Some(hash) => hash,
            None if endpoint.origins.len() > 1 => normalize::request_hash(&body),
            None => 0,
        };
        let origins = routing::order_origins(&endpoint, region.as_deref(), hash);

        // Forward, failing over.
        let now_ms = ports.now_ms();
        let mode =
            if stream { endpoint.provider.stream_mode(op, &endpoint.model, now_ms) } else { StreamMode::Buffered };
        let upstream_stream = stream && !matches!(mode, StreamMode::Buffered);
        let attempt = Attempt { endpoint: &endpoint, op, stream: upstream_stream };
        let forwarded = forward::forward(ports, config, &self.breaker, &origins, attempt, body, log).await?;
        log.origin = Some(forwarded.origin);

        // Answer in the client's dialect.
        let (parts, upstream_body) = forwarded.response.into_parts();
        let is_sse = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let to_client =
            (dialect == Dialect::Anthropic).then(|| anthropic::OpenAiStreamToMessages::new(&endpoint.model));
        if parts.status.is_success() && is_sse && upstream_stream {
            let first = match mode {
                StreamMode::Translate(translator) => translator,
                _ => StreamTranslator::OpenAiWatch(openai::StreamWatch::new()),
            };
            let stages = std::iter::once(first).chain(to_client.map(StreamTranslator::OpenAiToAnthropic)).collect();
            return Ok(sse_response(ResponseBody::Stream(upstream_body, StreamPump::new(stages))));
        }

        let bytes = ports.read_body(upstream_body, config.settings.max_response_bytes).await.map_err(|e| {
            GatewayError::bad_gateway(
                ErrorCode::OriginBadResponse,
                format!("reading the origin's response failed: {e:?}"),
            )
        })?;
        let reply = Reply { op, status: parts.status, body: &bytes, model: &endpoint.model, now_ms };
        let translated =
            endpoint.provider.translate_response(reply).map_err(|e| match retry_after(&parts.headers) {
                Some(seconds) if e.status == StatusCode::TOO_MANY_REQUESTS => e.with_retry_after(seconds),
                _ => e,
            })?;
        log.set_usage(translated.usage);
        let mut out = translated.body;
        if endpoint.guardrails.output {
            out = guard_output(&endpoint.guardrails, out, log)?;
        }
        if let Some(key) = cache_key {
            let entry = cache::Entry {
                created_ms: now_ms,
                ttl_secs: endpoint.cache.ttl_secs,
                endpoint: endpoint.name.clone(),
                op,
                body: out.clone(),
                usage: translated.usage,
            };
            pending.cache_fill = Some((key, entry.encode(), endpoint.cache.ttl_secs));
        }
        if stream && matches!(op, Operation::Chat | Operation::Completions) {
            // The origin could not stream: replay the whole answer as the stream the client expects.
            let replay = openai::completion_to_sse(op, &out)?;
            let replay = match to_client {
                Some(t) => StreamPump::new(vec![StreamTranslator::OpenAiToAnthropic(t)]).run(&replay),
                None => replay,
            };
            return Ok(sse_response(ResponseBody::Full(replay)));
        }
        let out = match dialect {
            Dialect::Anthropic => anthropic::openai_response_to_messages(&out)?,
            _ => out,
        };
        let mut response = Response::new(ResponseBody::Full(out));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(response)
    }

    /// The active config, memoized per isolate for `settings.config_ttl_ms`.
    async fn config<P: Ports>(&self, ports: &P) -> Result<Rc<Config>> {
        let now = ports.now_ms();
        if let Some(memo) = &*self.config.borrow() {
            if now.saturating_sub(memo.fetched_at) < memo.config.settings.config_ttl_ms {
                return Ok(memo.config.clone());
            }
        }
        let Some(raw) = ports.get(ACTIVE_KEY).await? else {
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
        let config = Config::from_json(&raw).map_err(|issues| {
            let first = issues.first().map(ToString::to_string).unwrap_or_default();
            GatewayError::not_configured(
                ErrorCode::ConfigInvalid,
                format!("KV entry \"{ACTIVE_KEY}\" is invalid ({} issue(s)); first: {first}", issues.len()),
            )
        })?;
        let config = Rc::new(config);
        *memo = Some(ConfigMemo { raw, config: config.clone(), fetched_at: now });
        Ok(config)
    }
}

/// The tenant of requests to public endpoints made without a key (for cache scoping).
const PUBLIC_TENANT: &str = "public";

enum CacheLookup {
    Hit(cache::Entry),
    /// Not cached yet: store the answer under this key.
    Fill(String),
    /// Not cacheable, or the client said `no-store`.
    Skip,
}

/// Looks a deterministic request up in the cache (DESIGN §4); records HIT/MISS/BYPASS.
#[allow(clippy::too_many_arguments)] // the phase's inputs, passed plainly
async fn cache_phase<P: Ports>(
    ports: &P,
    endpoint: &Endpoint,
    op: Operation,
    body: &Map<String, Value>,
    headers: &HeaderMap,
    tenant: &str,
    template_version: Option<&str>,
    log: &mut LogRecord,
) -> Result<CacheLookup> {
    let directive = cache::directive(headers);
    let cacheable = cache::cacheable(op, body, &endpoint.cache);
    if !cacheable || !directive.lookup() {
        log.cache = Some(cache::Status::Bypass.as_str());
        let fill = directive.fill() && cacheable;
        return Ok(if fill {
            CacheLookup::Fill(cache_key(endpoint, tenant, template_version, body))
        } else {
            CacheLookup::Skip
        });
    }
    let key = cache_key(endpoint, tenant, template_version, body);
    // A failing cache read is a miss, never an error: the origin can still answer.
    let entry = ports.get(&key).await.ok().flatten().and_then(|bytes| cache::Entry::decode(&bytes));
    if let Some(entry) = entry.filter(|e| e.fresh(ports.now_ms())) {
        log.cache = Some(cache::Status::Hit.as_str());
        log.set_usage(None); // nothing was generated for this request
        return Ok(CacheLookup::Hit(entry));
    }
    log.cache = Some(cache::Status::Miss.as_str());
    Ok(if directive.fill() { CacheLookup::Fill(key) } else { CacheLookup::Skip })
}

fn cache_key(endpoint: &Endpoint, tenant: &str, template_version: Option<&str>, body: &Map<String, Value>) -> String {
    let scope = endpoint.cache.scope(tenant);
    cache::key(
        scope,
        &endpoint.name,
        endpoint.provider.name(),
        &endpoint.model,
        template_version,
        &cache::key_body(body),
    )
}

/// A cached answer in the client's dialect; a streaming client gets it replayed as SSE.
fn answer_from_cache<B>(
    entry: &cache::Entry,
    stream: bool,
    dialect: Dialect,
    model: &str,
) -> Result<Response<ResponseBody<B>>> {
    let stream = stream && matches!(entry.op, Operation::Chat | Operation::Completions);
    let body = cache::replay(entry, stream)?;
    if stream {
        let body = match dialect {
            Dialect::Anthropic => {
                let to_client = anthropic::OpenAiStreamToMessages::new(model);
                StreamPump::new(vec![StreamTranslator::OpenAiToAnthropic(to_client)]).run(&body)
            }
            _ => body,
        };
        return Ok(sse_response(ResponseBody::Full(body)));
    }
    let body = match dialect {
        Dialect::Anthropic => anthropic::openai_response_to_messages(&body)?,
        _ => body,
    };
    let mut response = Response::new(ResponseBody::Full(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// Output guardrails on a buffered answer (redaction and deny rules on the completion).
fn guard_output(guardrails: &guard::Guardrails, body: Vec<u8>, log: &mut LogRecord) -> Result<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::bad_gateway(ErrorCode::OriginBadResponse, format!("answer is not JSON: {e}")))?;
    let report = guard::apply_output(guardrails, &mut value)?;
    if report.is_empty() {
        return Ok(body);
    }
    log.guard_output = Some(report);
    serde_json::to_vec(&value).map_err(|e| GatewayError::internal(ErrorCode::EncodeFailed, e.to_string()))
}

/// Takes the OpenAI `model` field out of the body: it names our endpoint, not the provider's model.
fn take_model(body: &mut Map<String, Value>) -> Result<String> {
    match body.remove("model") {
        Some(Value::String(name)) => Ok(name),
        Some(_) => {
            Err(GatewayError::bad_request(ErrorCode::InvalidModel, "`model` must be a string naming an endpoint"))
        }
        None => {
            Err(GatewayError::bad_request(ErrorCode::MissingModel, "`model` is required: name a configured endpoint"))
        }
    }
}

/// The client's region: fixed by the deployment, else the configured request header (the
/// client's own preference; it only orders allowed origins, never lifts a residency pin),
/// else geo data through the config's region map, else the config's default.
fn client_region(config: &Config, client: &ClientInfo, headers: &HeaderMap) -> Option<String> {
    if let Some(region) = &client.region {
        return Some(region.clone());
    }
    let header = &config.settings.region_header;
    let from_header = (!header.is_empty())
        .then(|| headers.get(header.as_str())?.to_str().ok())
        .flatten()
        .filter(|r| config.regions.iter().any(|known| known.name == *r));
    if let Some(region) = from_header {
        return Some(region.to_string());
    }
    config
        .region_of(client.country.as_deref(), client.continent.as_deref())
        .map(str::to_owned)
        .or_else(|| config.default_region.clone())
}

fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()
}

fn sse_response<B>(body: ResponseBody<B>) -> Response<ResponseBody<B>> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn ok_json<B>(value: Value) -> Response<ResponseBody<B>> {
    json_response(StatusCode::OK, &value)
}

pub fn json_response<B>(status: StatusCode, value: &Value) -> Response<ResponseBody<B>> {
    let body = serde_json::to_vec(value).expect("a Value always serializes");
    let mut response = Response::new(ResponseBody::Full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn error_response<B>(error: &GatewayError) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::Full(error.body()));
    *response.status_mut() = error.status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(seconds) = error.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

#[cfg(test)]
mod tests;
