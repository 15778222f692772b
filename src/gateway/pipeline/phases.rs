//! The phases of a model call, in order (DESIGN.md §2). Each is a plain function over the
//! request context and the call; `pipeline::Gateway::invoke` reads as their list.

use std::rc::Rc;

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::gateway::auth;
use crate::gateway::config::{Config, Endpoint, Origin};
use crate::gateway::dialect::ClientRequest;
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::usage::Accounting;
use crate::gateway::features::{cache, guard, limits, normalize, telemetry, template};
use crate::gateway::forward::{self, Attempt, Forwarded};
use crate::gateway::pipeline::context::{ClientInfo, ModelCall, RequestContext};
use crate::gateway::pipeline::respond::{json_bytes, retry_after, sse_response, ResponseBody};
use crate::gateway::pipeline::stream::{Stage, StreamPump};
use crate::gateway::ports::Ports;
use crate::gateway::providers::adapter::{Reply, StreamMode};
use crate::gateway::routing;
use crate::gateway::types::Operation;
use crate::gateway::wire::openai::{completion_to_sse, StreamWatch};

/// Resolve: which endpoint serves the request. The request's hash (a SHA-256 of its canonical
/// form) picks a traffic route's destination; most requests need none.
pub fn resolve(
    ctx: &mut RequestContext<'_>,
    config: Rc<Config>,
    headers: HeaderMap,
    request: ClientRequest,
) -> Result<ModelCall> {
    let ClientRequest { name, body } = request;
    let route_hash = config.routes.contains_key(&name).then(|| normalize::request_hash(&body));
    let wanted = ctx.dialect.operation().map(routing::endpoint_type_for);
    let resolved = routing::resolve(&config, &name, wanted, route_hash.unwrap_or(0))?;
    let endpoint = resolved.endpoint;
    ctx.log.endpoint = Some(endpoint.name.clone());
    ctx.log.route = resolved.route;
    ctx.log.provider = Some(endpoint.provider.name());
    let op = routing::operation_for(endpoint.endpoint_type);
    ctx.observed.model = Some(endpoint.model.clone());
    ctx.observed.operation = Some(op);
    Ok(ModelCall {
        op,
        config,
        headers,
        endpoint,
        body,
        route_hash,
        key: None,
        template_version: None,
        stream: false,
        cache_key: None,
    })
}

/// Admit: authenticate the key, authorize the endpoint, and check the limits that apply.
/// An admitted request carries its accounting (settled after the response).
pub async fn admit<P: Ports>(ports: &P, ctx: &mut RequestContext<'_>, call: &mut ModelCall) -> Result<()> {
    let endpoint = &call.endpoint;
    let key = auth::authenticate(ports, &ctx.state.auth, &call.headers, &endpoint.name, endpoint.public).await?;
    ctx.log.key_id = key.as_ref().map(|k| k.id.clone());
    ctx.log.tenant = key.as_ref().map(|k| k.tenant.clone());
    let admitted = limits::admit(
        ports,
        &ctx.state.limiter,
        &call.config.limits,
        key.as_deref(),
        &endpoint.name,
        endpoint.call_limit.as_ref(),
    )
    .await;
    let admission = match admitted {
        Ok(admission) => admission,
        Err(refused) => {
            ctx.log.rate_headers = refused.headers.clone();
            return Err(refused.error);
        }
    };
    ctx.log.rate_headers = admission.headers().clone();
    let price = call.config.prices.get(endpoint.provider.name(), &endpoint.model);
    ctx.pending.accounting =
        Some(Accounting::new(&ctx.state.usage, key.as_deref(), price, ctx.log.ts, Some(admission)));
    call.key = key;
    Ok(())
}

/// Prepare: render the prompt template, apply the endpoint's defaults, ceilings and
/// overrides, and guard the input.
pub fn prepare(ctx: &mut RequestContext<'_>, call: &mut ModelCall) -> Result<()> {
    let endpoint = &call.endpoint;
    if let Some(t) = &endpoint.template {
        let variables = template::extract_variables(&mut call.body);
        let rendered = template::render(t, &variables)?;
        let label = rendered.label();
        template::apply(rendered, call.op, &mut call.body)?;
        call.template_version = Some(label);
    }
    ctx.log.template = call.template_version.clone();
    normalize::apply_endpoint_rules(&mut call.body, &endpoint.parameters, &endpoint.clamps, &endpoint.overrides);
    call.stream = call.body.get("stream").and_then(serde_json::Value::as_bool).unwrap_or(false);
    ctx.log.stream = call.stream;
    let report = guard::apply_input(&endpoint.guardrails, &mut call.body)?;
    ctx.log.guard = Some(report).filter(|r| !r.is_empty());
    Ok(())
}

/// Cache lookup (DESIGN §4): a deterministic request is answered from the cache when it can
/// be (`Some`: the answer); otherwise `call.cache_key` says where to store the answer.
/// A failing cache read is a miss, never an error: the origin can still answer.
pub async fn cache_lookup<P: Ports, B>(
    ports: &P,
    ctx: &mut RequestContext<'_>,
    call: &mut ModelCall,
) -> Result<Option<Response<ResponseBody<B>>>> {
    let directive = cache::directive(&call.headers);
    let cacheable = cache::cacheable(call.op, &call.body, &call.endpoint.cache);
    if !cacheable || !directive.lookup() {
        ctx.log.cache = Some(cache::Status::Bypass.as_str());
        call.cache_key = (cacheable && directive.fill()).then(|| cache_key(call));
        return Ok(None);
    }
    let key = cache_key(call);
    let entry = ports.get(&key).await.ok().flatten().and_then(|bytes| cache::Entry::decode(&bytes));
    if let Some(entry) = entry.filter(|e| e.fresh(ports.now_ms())) {
        ctx.log.cache = Some(cache::Status::Hit.as_str());
        ctx.log.set_usage(None); // nothing was generated for this request
        return answer_from_cache(ctx, call, &entry).map(Some);
    }
    ctx.log.cache = Some(cache::Status::Miss.as_str());
    call.cache_key = directive.fill().then_some(key);
    Ok(None)
}

fn cache_key(call: &ModelCall) -> String {
    let endpoint = &call.endpoint;
    cache::key(
        endpoint.cache.scope(call.tenant()),
        &endpoint.name,
        endpoint.provider.name(),
        &endpoint.model,
        call.template_version.as_deref(),
        &cache::key_body(&call.body),
    )
}

/// A cached answer in the client's dialect; a streaming client gets it replayed as SSE.
fn answer_from_cache<B>(
    ctx: &RequestContext<'_>,
    call: &ModelCall,
    entry: &cache::Entry,
) -> Result<Response<ResponseBody<B>>> {
    let stream = call.stream && matches!(entry.op, Operation::Chat | Operation::Completions);
    let body = cache::replay(entry, stream)?;
    if stream {
        return Ok(sse_response(ResponseBody::Full(client_replay(ctx, call, body))));
    }
    Ok(json_bytes(StatusCode::OK, ctx.dialect.render(body)?))
}

/// An OpenAI event stream replayed in the client's dialect.
fn client_replay(ctx: &RequestContext<'_>, call: &ModelCall, openai_sse: Vec<u8>) -> Vec<u8> {
    match ctx.dialect.stream_stage(&call.endpoint.model) {
        Some(stage) => StreamPump::new(vec![Stage::Client(stage)]).run(&openai_sse),
        None => openai_sse,
    }
}

/// Choose origins: the client's region first, the residency pin enforced, weights applied.
/// (`endpoint` is the call's, held apart so the call can move on while its origins are used.)
pub fn choose_origins<'e>(ctx: &mut RequestContext<'_>, call: &ModelCall, endpoint: &'e Endpoint) -> Vec<&'e Origin> {
    let region = client_region(&call.config, ctx.client, &call.headers);
    let hash = match call.route_hash {
        Some(hash) => hash,
        None if endpoint.origins.len() > 1 => normalize::request_hash(&call.body),
        None => 0,
    };
    let origins = routing::order_origins(endpoint, region.as_deref(), hash);
    ctx.log.region = region;
    origins
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

/// The origin's answer, and how it is to be read.
pub struct Upstream<B> {
    pub forwarded: Forwarded<B>,
    /// The adapter's stream mode when the origin was asked to stream.
    pub mode: Option<StreamMode<crate::gateway::providers::ProviderStream>>,
    pub now_ms: u64,
}

/// Forward: build the provider's request and send it, failing over across `origins`.
pub async fn forward<P: Ports>(
    ports: &P,
    ctx: &mut RequestContext<'_>,
    call: &mut ModelCall,
    origins: &[&Origin],
) -> Result<Upstream<P::Body>> {
    let now_ms = ports.now_ms();
    let endpoint = &call.endpoint;
    let mode = call.stream.then(|| endpoint.provider.stream_mode(call.op, &endpoint.model, now_ms));
    let upstream_stream = mode.as_ref().is_some_and(|m| !matches!(m, StreamMode::Buffered));
    let trace = telemetry::propagation(ctx.observed.span.as_ref(), ctx.observed.parent.as_ref());
    let attempt = Attempt { endpoint, op: call.op, stream: upstream_stream, trace: &trace };
    let body = std::mem::take(&mut call.body);
    let result =
        forward::forward(ports, &call.config, &ctx.state.breaker, origins, attempt, body, &mut ctx.log.attempts).await;
    ctx.log.origin = ctx.log.attempts.last().map(|a| a.origin.clone());
    let forwarded = result?;
    ctx.log.origin = Some(forwarded.origin.clone());
    Ok(Upstream { forwarded, mode: mode.filter(|_| upstream_stream), now_ms })
}

/// Respond: the origin's answer in the client's dialect — a live stream through the pump, or
/// a buffered answer translated, guarded, queued for the cache and, for a streaming client of
/// an origin that could not stream, replayed as SSE.
pub async fn respond<P: Ports>(
    ports: &P,
    ctx: &mut RequestContext<'_>,
    call: &ModelCall,
    upstream: Upstream<P::Body>,
) -> Result<Response<ResponseBody<P::Body>>> {
    let endpoint = &call.endpoint;
    let (parts, upstream_body) = upstream.forwarded.response.into_parts();
    let is_sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if let (Some(mode), true, true) = (upstream.mode, parts.status.is_success(), is_sse) {
        let first = match mode {
            StreamMode::Translate(translator) => Stage::Provider(translator),
            _ => Stage::Watch(StreamWatch::new()),
        };
        let client = ctx.dialect.stream_stage(&endpoint.model).map(Stage::Client);
        let pump = StreamPump::new(std::iter::once(first).chain(client).collect());
        return Ok(sse_response(ResponseBody::Stream(upstream_body, pump)));
    }

    let bytes = ports.read_body(upstream_body, call.config.settings.max_response_bytes).await.map_err(|e| {
        GatewayError::bad_gateway(ErrorCode::OriginBadResponse, format!("reading the origin's response failed: {e:?}"))
    })?;
    let reply =
        Reply { op: call.op, status: parts.status, body: &bytes, model: &endpoint.model, now_ms: upstream.now_ms };
    let translated = endpoint.provider.translate_response(reply).map_err(|e| match retry_after(&parts.headers) {
        Some(seconds) if e.status == StatusCode::TOO_MANY_REQUESTS => e.with_retry_after(seconds),
        _ => e,
    })?;
    ctx.log.set_usage(translated.usage);
    let mut answer = translated.body;
    if endpoint.guardrails.output {
        answer = guard_output(ctx, &endpoint.guardrails, answer)?;
    }
    if let Some(key) = &call.cache_key {
        let entry = cache::Entry {
            created_ms: upstream.now_ms,
            ttl_secs: endpoint.cache.ttl_secs,
            endpoint: endpoint.name.clone(),
            op: call.op,
            body: answer.clone(),
            usage: translated.usage,
        };
        ctx.pending.cache_fill = Some((key.clone(), entry.encode(), endpoint.cache.ttl_secs));
    }
    if call.stream && matches!(call.op, Operation::Chat | Operation::Completions) {
        // The origin could not stream: replay the whole answer as the stream the client expects.
        let replay = completion_to_sse(call.op, &answer)?;
        return Ok(sse_response(ResponseBody::Full(client_replay(ctx, call, replay))));
    }
    Ok(json_bytes(StatusCode::OK, ctx.dialect.render(answer)?))
}

/// Output guardrails on a buffered answer (redaction and deny rules on the completion).
fn guard_output(ctx: &mut RequestContext<'_>, guardrails: &guard::Guardrails, body: Vec<u8>) -> Result<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::bad_gateway(ErrorCode::OriginBadResponse, format!("answer is not JSON: {e}")))?;
    let report = guard::apply_output(guardrails, &mut value)?;
    if report.is_empty() {
        return Ok(body);
    }
    ctx.log.guard_output = Some(report);
    serde_json::to_vec(&value).map_err(|e| GatewayError::internal(ErrorCode::EncodeFailed, e.to_string()))
}

/// The headers every answer carries: request id, endpoint, origin, attempts, template
/// version, cache status, guard flag and the rate-limit headers.
pub fn annotate<B>(ctx: &RequestContext<'_>, response: &mut Response<ResponseBody<B>>) {
    let log = &ctx.log;
    let headers = response.headers_mut();
    log.rate_headers.apply(headers);
    let mut put = |name: &'static str, value: Option<&str>| {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, value);
        }
    };
    put("x-request-id", Some(&log.request_id));
    put("x-gateway-origin", log.origin.as_deref());
    put("x-gateway-endpoint", log.endpoint.as_deref());
    put("x-gateway-template-version", log.template.as_deref());
    put(cache::STATUS_HEADER, log.cache);
    if log.guard.as_ref().is_some_and(|g| g.flagged) {
        put("x-gateway-guard", Some("flagged"));
    }
    if !log.attempts.is_empty() {
        headers.insert("x-gateway-attempts", HeaderValue::from(log.attempts.len()));
    }
}
