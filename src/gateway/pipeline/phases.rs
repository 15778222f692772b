//! The phases of a model call, in order (DESIGN.md §2). Each is a plain function over the
//! request context and the call; `pipeline::Gateway::invoke` reads as their list.

use std::rc::Rc;
use std::sync::Arc;

use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use crate::gateway::auth;
use crate::gateway::config::{Config, Endpoint, Origin};
use crate::gateway::dialect::{responses, ClientRequest};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::coalesce::{InFlight, Joined};
use crate::gateway::features::keys::KeyRecord;
use crate::gateway::features::normalize::{Canonical, Verbatim};
use crate::gateway::features::usage::{self, Accounting, Price};
use crate::gateway::features::{cache, guard, limits, normalize, telemetry, template};
use crate::gateway::forward::{self, Attempt, Retarget};
use crate::gateway::pipeline::context::{ClientInfo, ModelCall, RequestContext};
use crate::gateway::pipeline::repeat::{self, Found, Seed, SeedSlot};
use crate::gateway::pipeline::respond::{json_bytes, retry_after, sse_response, ResponseBody};
use crate::gateway::pipeline::stream::{Captured, Stage, StreamCap, StreamPump};
use crate::gateway::ports::Ports;
use crate::gateway::providers::adapter::{Reply, StreamMode, Translated};
use crate::gateway::providers::StreamDecoder;
use crate::gateway::routing;
use crate::gateway::types::Operation;
use crate::gateway::wire::json::json_body;
use crate::gateway::wire::openai::{
    completion_to_sse, embeddings_to_base64, wants_base64, write_error_chunk, StreamAnswer, StreamWatch,
};

/// Resolve: which endpoint serves the request. The request's hash (a SHA-256 of its canonical
/// form) picks a traffic route's destination; most requests need none.
pub fn resolve(
    ctx: &mut RequestContext<'_>,
    config: Rc<Config>,
    headers: HeaderMap,
    request: ClientRequest,
) -> Result<ModelCall> {
    let ClientRequest { name, body, credential, verbatim } = request;
    let canonical = config.routes.contains_key(&name).then(|| Canonical::of(&body));
    let route_hash = canonical.as_ref().map(Canonical::hash);
    let wanted = ctx.dialect.operation().map(routing::endpoint_type_for);
    let resolved = routing::resolve(&config, &name, wanted, route_hash.unwrap_or(0)).inspect_err(|_| {
        // An endpoint of the stored config found invalid on its first use: why, for the log.
        if let Some(issue) = config.endpoint_issue(&name) {
            let issue = crate::gateway::util::text::truncate(issue, 500);
            ctx.log.detail = Some(format!("endpoint \"{name}\" is invalid: {issue}"));
        }
    })?;
    let endpoint = resolved.endpoint;
    let op = resolved_to(ctx, &endpoint, resolved.route);
    Ok(ModelCall {
        op,
        config,
        headers,
        credential,
        endpoint,
        body,
        route_hash,
        canonical,
        verbatim,
        key: None,
        template_version: None,
        stream: false,
        cache_key: None,
        pin: None,
        prompt_estimate: 0,
        reservation: limits::Reservation::default(),
        client_wants_usage: false,
        lead: None,
    })
}

/// What the log line and the span say of the endpoint a request resolved to; its operation.
fn resolved_to(ctx: &mut RequestContext<'_>, endpoint: &Endpoint, route: Option<String>) -> Operation {
    ctx.log.endpoint = Some(endpoint.name.clone());
    ctx.log.route = route;
    ctx.log.provider = Some(endpoint.provider.name());
    let op = routing::operation_for(endpoint.endpoint_type);
    ctx.observed.model = Some(endpoint.model.clone());
    ctx.observed.operation = Some(op);
    op
}

/// A repeat of a request this isolate answered from its memory-level cache ([`repeat`]), byte
/// for byte, answered with that level's `answer` without reading its body: the phases run on
/// what the first one found (endpoint, stream, reservation) — the caller is authorized and the
/// request admitted as always, and its log line and accounting are those of a hit.
pub async fn replay<P: Ports, B>(
    ports: &P,
    ctx: &mut RequestContext<'_>,
    config: Rc<Config>,
    headers: HeaderMap,
    Found { repeat, answer, dialect }: Found,
    identified: Rc<KeyRecord>,
) -> Result<Response<ResponseBody<B>>> {
    let seed = &repeat.seed;
    ctx.dialect = dialect;
    let endpoint = Arc::clone(&seed.endpoint);
    let op = resolved_to(ctx, &endpoint, seed.route.clone());
    let mut call = ModelCall {
        op,
        config,
        headers,
        credential: None,
        endpoint,
        body: serde_json::Map::new(),
        route_hash: None,
        canonical: None,
        verbatim: None,
        key: None,
        template_version: seed.template_version.clone(),
        stream: seed.stream,
        cache_key: None,
        pin: None,
        prompt_estimate: seed.prompt_estimate,
        reservation: seed.reservation,
        client_wants_usage: seed.client_wants_usage,
        lead: None,
    };
    authenticate(ports, ctx, &mut call, Some(identified)).await?;
    ctx.log.template = call.template_version.clone();
    ctx.log.stream = call.stream;
    admit_reserved(ports, ctx, &mut call, seed.price).await?;
    hit(ctx, &call, &answer, cache::Level::Memory)
}

/// Authenticate: the key or JWT, authorized for the endpoint (allow-list, approval grant),
/// before any work on the request body beyond parsing it. `identified`: the caller, when it
/// was settled before the body was read (`Gateway::serve`).
pub async fn authenticate<P: Ports>(
    ports: &P,
    ctx: &mut RequestContext<'_>,
    call: &mut ModelCall,
    identified: Option<Rc<KeyRecord>>,
) -> Result<()> {
    let endpoint = &call.endpoint;
    let target = auth::Target {
        name: &endpoint.name,
        public: endpoint.public,
        approval: endpoint.access == crate::gateway::features::access::Access::Approval,
    };
    let key = match identified {
        Some(record) => Some(auth::authorize(ports, &ctx.state.auth, record, target).await?),
        None => {
            let presented = auth::presented(&call.headers, call.credential.as_deref());
            auth::authenticate(ports, &ctx.state.auth, presented, &call.config.auth.jwt, target).await?
        }
    };
    ctx.log.key_id = key.as_ref().map(|k| k.id.clone());
    ctx.log.tenant = key.as_ref().map(|k| k.tenant.clone());
    call.key = key;
    Ok(())
}

/// Admit: check the limits that apply and reserve the request's worst case (prompt estimate +
/// `max_tokens`, at the endpoint's price) on its token and USD counters. Runs after `prepare`,
/// on the request as it will be sent. An admitted request carries its accounting (settled
/// after the response).
pub async fn admit<P: Ports>(ports: &P, ctx: &mut RequestContext<'_>, call: &mut ModelCall) -> Result<()> {
    let price = call.config.prices.get(call.endpoint.provider.name(), &call.endpoint.model);
    call.prompt_estimate = usage::estimate_prompt_tokens(&call.body);
    call.reservation = usage::reservation(
        call.op,
        &call.body,
        call.stream,
        price,
        call.prompt_estimate,
        call.config.limits.default_max_tokens,
    );
    admit_reserved(ports, ctx, call, price).await
}

/// Admit with the reservation already worked out (`call.reservation`), at the endpoint's
/// `price`.
async fn admit_reserved<P: Ports>(
    ports: &P,
    ctx: &mut RequestContext<'_>,
    call: &mut ModelCall,
    price: Option<Price>,
) -> Result<()> {
    let endpoint = &call.endpoint;
    let key = call.key.clone();
    let budgeted =
        key.as_ref().is_some_and(|k| k.budget_usd.is_some() || call.config.limits.tenants.contains_key(&k.tenant));
    if budgeted && price.is_none() && call.op != Operation::Predict {
        return Err(usage::unpriced(&endpoint.name, &endpoint.model));
    }
    let admitted = limits::admit(
        ports,
        &ctx.state.limiter,
        &call.config.limits,
        key.as_deref(),
        &endpoint.name,
        endpoint.call_limit.as_ref(),
        call.reservation,
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
    ctx.pending.accounting =
        Some(Accounting::new(&ctx.state.usage, key.as_deref(), price, ctx.log.ts, Some(admission)));
    Ok(())
}

/// Prepare: render the prompt template, apply the endpoint's defaults, ceilings and
/// overrides, and guard the input.
pub fn prepare(ctx: &mut RequestContext<'_>, call: &mut ModelCall) -> Result<()> {
    let endpoint = &call.endpoint;
    // The injection heuristic reads the client's own request, every role and the template
    // variables included; the template's messages added next are the operator's.
    let texts_are_final = endpoint.template.is_none()
        && !guard::sets_text(&endpoint.parameters)
        && !guard::sets_text(&endpoint.overrides);
    // When they are the texts sent, every input guardrail applies in one walk, here (what
    // follows changes no text).
    let early = if texts_are_final {
        guard::apply_final(&endpoint.guardrails, &mut call.body)?
    } else {
        guard::check_injection(&endpoint.guardrails, &mut call.body)?
    };
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
    call.client_wants_usage =
        call.body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(serde_json::Value::as_bool)
            == Some(true);
    let report = if texts_are_final {
        early
    } else {
        let mut report = guard::apply_content_rules(&endpoint.guardrails, &mut call.body)?;
        report.flagged = early.flagged;
        report.injection = early.injection;
        report
    };
    // The route's canonical form (else the client's own bytes) stays good where only the
    // endpoint's rules changed the body (a redaction is the guardrails' only change): their
    // fields are written anew.
    let kept = endpoint.template.is_none() && report.redacted.is_empty();
    let ruled = |k: &str| normalize::may_set(k, &endpoint.parameters, &endpoint.clamps, &endpoint.overrides);
    let (canonical, verbatim) = (call.canonical.take(), call.verbatim.take());
    if kept {
        match canonical {
            Some(canonical) => call.canonical = Some(canonical.rewrite(&call.body, ruled)),
            None => {
                call.verbatim = verbatim.map(|mut verbatim| {
                    verbatim.forget(normalize::settable(&endpoint.parameters, &endpoint.clamps, &endpoint.overrides));
                    verbatim
                })
            }
        }
    }
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
    // A passthrough origin's answers are not in the internal shape: never cached.
    let cacheable = cache::cacheable(call.op, &call.body, &call.endpoint.cache) && !ctx.dialect.passthrough();
    if !cacheable || !directive.lookup() {
        ctx.log.cache = Some(cache::Status::Bypass.as_str());
        call.cache_key = (cacheable && directive.fill()).then(|| cache_input(call).finish());
        return Ok(None);
    }
    let input = cache_input(call);
    let now = ports.now_ms();
    if let Some(entry) = ctx.state.recent.get(input.bytes(), now) {
        if let (SeedSlot::Wanted, Some(seed)) = (&ctx.repeat_seed, repeat_seed(ctx, call, input.bytes())) {
            ctx.repeat_seed = SeedSlot::Filled(seed);
        }
        return hit(ctx, call, &entry, cache::Level::Memory).map(Some);
    }
    let key = input.finish();
    let fresh = |bytes: &[u8]| cache::Entry::decode(bytes).filter(|e| e.fresh(now));
    // This location's copy before KV; a KV hit refills it after the response.
    let mut level = cache::Level::Edge;
    let mut entry = ports.edge_get(&key.name).await.and_then(|bytes| fresh(&bytes));
    if entry.is_none() {
        level = cache::Level::Kv;
        if let Some(bytes) = ports.get(&key.name).await.ok().flatten() {
            entry = fresh(&bytes);
            if let Some(e) = &entry {
                ctx.pending.edge_fill = Some((key.name.clone(), bytes, e.edge_ttl_secs(now)));
            }
        }
    }
    if let Some(entry) = entry {
        let entry = Rc::new(entry);
        if ports.keeps_state() {
            ctx.state.recent.put(&key.input, entry.clone(), now);
        }
        return hit(ctx, call, &entry, level).map(Some);
    }
    ctx.log.cache = Some(cache::Status::Miss.as_str());
    call.cache_key = directive.fill().then_some(key);
    Ok(None)
}

/// What a memory-level hit found, for its repeats ([`replay`]): not where the guardrails
/// report something (each such request is theirs to see), nor for a caller without a key or
/// the Responses API.
fn repeat_seed(ctx: &RequestContext<'_>, call: &ModelCall, input: &[u8]) -> Option<Seed> {
    if ctx.log.guard.is_some() || call.key.is_none() {
        return None;
    }
    let endpoint = &call.endpoint;
    Some(Seed {
        dialect: repeat::replayable(&ctx.dialect)?,
        endpoint: Arc::clone(endpoint),
        route: ctx.log.route.clone(),
        template_version: call.template_version.clone(),
        stream: call.stream,
        client_wants_usage: call.client_wants_usage,
        prompt_estimate: call.prompt_estimate,
        reservation: call.reservation,
        price: call.config.prices.get(endpoint.provider.name(), &endpoint.model),
        input: input.to_vec(),
    })
}

/// A cache hit from `level`: the log says so, and nothing was generated for this request.
fn hit<B>(
    ctx: &mut RequestContext<'_>,
    call: &ModelCall,
    entry: &cache::Entry,
    level: cache::Level,
) -> Result<Response<ResponseBody<B>>> {
    ctx.log.cache = Some(cache::Status::Hit.as_str());
    ctx.log.cache_level = Some(level.as_str());
    ctx.log.set_usage(None);
    answer_from_cache(ctx, call, entry)
}

/// Coalesce: a deterministic call identical to one in flight in this isolate waits for that
/// call's answer (`Some`: answered like a cache hit, `x-gateway-cache: COALESCED`, and
/// accounted as its own request with the answer's usage); otherwise it leads, and its answer
/// is shared when it comes. Streams neither wait nor lead.
pub async fn coalesce<P: Ports, B>(
    ports: &P,
    ctx: &mut RequestContext<'_>,
    call: &mut ModelCall,
) -> Result<Option<Response<ResponseBody<B>>>> {
    let Some(key) = call.cache_key.as_ref().map(|k| k.name.as_str()).filter(|_| !call.stream) else { return Ok(None) };
    let flight = match InFlight::join(&ctx.state.in_flight, key) {
        Joined::Lead(leader) => {
            call.lead = Some(leader);
            return Ok(None);
        }
        Joined::Follow(flight) => flight,
    };
    let Some(entry) = flight.wait(ports, call.config.settings.origin_timeout_ms).await else { return Ok(None) };
    ctx.log.cache = Some(cache::Status::Coalesced.as_str());
    ctx.log.set_usage(entry.usage);
    call.cache_key = None; // the leader fills the cache
    answer_from_cache(ctx, call, &entry).map(Some)
}

fn cache_input(call: &mut ModelCall) -> cache::KeyInput {
    let body = cache::key_body(call.canonical());
    let endpoint = &call.endpoint;
    cache::key_input(
        endpoint.cache.scope(call.tenant()),
        &endpoint.name,
        endpoint.provider.name(),
        &endpoint.model,
        call.template_version.as_deref(),
        &body,
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
        return Ok(client_stream(ctx, ResponseBody::Full(client_replay(ctx, call, body))));
    }
    Ok(json_bytes(StatusCode::OK, ctx.dialect.render(body, None)?))
}

/// A streamed answer with the content type the client's API streams in.
fn client_stream<B>(ctx: &RequestContext<'_>, body: ResponseBody<B>) -> Response<ResponseBody<B>> {
    let mut response = sse_response(body);
    let content_type = ctx.dialect.stream_content_type();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// An OpenAI event stream replayed in the client's dialect.
fn client_replay(ctx: &RequestContext<'_>, call: &ModelCall, openai_sse: Vec<u8>) -> Vec<u8> {
    match ctx.dialect.stream_stage(&call.endpoint.model) {
        Some(stage) => StreamPump::new(vec![Stage::Client(stage)]).run(&openai_sse),
        None => openai_sse,
    }
}

/// Choose origins: the client's region first, the residency pin (the endpoint's and the API
/// key's) enforced, weights applied. (`endpoint` is the call's, held apart so the call can
/// move on while its origins are used.) Sets `call.pin` for the forward phase.
pub fn choose_origins<'e>(
    ctx: &mut RequestContext<'_>,
    call: &mut ModelCall,
    endpoint: &'e Endpoint,
) -> Result<Vec<&'e Origin>> {
    let hash = match call.route_hash {
        Some(hash) => hash,
        None if endpoint.origins.len() > 1 => call.canonical().hash(),
        None => 0,
    };
    let region = client_region(&call.config, ctx.client, &call.headers);
    let key_pin = call.key.as_ref().and_then(|k| k.region.as_deref());
    let pin = routing::residency_pin(endpoint.residency.as_deref(), key_pin)?;
    let origins = routing::order_origins(endpoint, region.as_deref(), hash, pin);
    ctx.log.region = region;
    if let (Some(pin), true) = (pin, origins.is_empty()) {
        return Err(GatewayError::not_configured(
            ErrorCode::RegionUnavailable,
            format!("this API key is pinned to region \"{pin}\", and the endpoint has no origin there"),
        ));
    }
    call.pin = pin.map(str::to_owned);
    Ok(origins)
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
    // Geo data only when the config maps locations to regions: the host reads it lazily.
    let by_geo = config
        .maps_locations()
        .then(|| client.geo())
        .and_then(|geo| config.region_of(geo.country.as_deref(), geo.continent.as_deref()).map(str::to_owned));
    by_geo.or_else(|| config.default_region.clone())
}

/// The origin's answer, and how it is to be read.
pub struct Upstream<B> {
    pub response: Response<B>,
    /// The adapter's stream mode when the origin was asked to stream.
    pub mode: Option<StreamMode<crate::gateway::providers::ProviderStream>>,
    pub now_ms: u64,
    /// The client asked for embeddings in base64 (`encoding_format: "base64"`).
    pub base64: bool,
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
    // A Responses passthrough: the provider's chat request, re-aimed at `/responses` with the
    // prepared request in Responses form.
    let retarget = match ctx.dialect.turn().filter(|t| t.passthrough) {
        Some(turn) => Some(Retarget {
            path: "responses",
            body: json_body(&responses::passthrough_request(turn, &call.body, &endpoint.model)),
        }),
        None => None,
    };
    // The canonical bytes, when an earlier phase wrote them (else the client's own), are most
    // of the origin's body.
    let (canonical, verbatim) = (call.canonical.take(), call.verbatim.take());
    let written = canonical.as_ref().map(Canonical::written).or(verbatim.as_ref().map(Verbatim::written));
    let attempt = Attempt {
        endpoint,
        op: call.op,
        stream: upstream_stream,
        retarget: retarget.as_ref(),
        pin: call.pin.as_deref(),
        trace: &trace,
        written,
    };
    let base64 = call.op == Operation::Embeddings && wants_base64(&call.body);
    endpoint.provider.authorize(ports, call.config.settings.origin_timeout_ms).await?;
    let body = std::mem::take(&mut call.body);
    let result =
        forward::forward(ports, &call.config, &ctx.state.breaker, origins, attempt, body, &mut ctx.log.attempts).await;
    // The last attempt is the origin that answered (or the one to blame).
    ctx.log.origin = ctx.log.attempts.last().map(|a| a.origin.clone());
    ctx.log.origin_id = ctx.log.attempts.last().map(|a| a.id.clone());
    Ok(Upstream { response: result?, mode: mode.filter(|_| upstream_stream), now_ms, base64 })
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
    let (parts, upstream_body) = upstream.response.into_parts();
    let is_sse = content_type(&parts.headers).is_some_and(|v| v.starts_with("text/event-stream"));
    // Origins whose streams are not SSE (Bedrock's event stream) come with a decoder.
    let decoder = match &upstream.mode {
        Some(StreamMode::Translate(translator)) => translator.decoder(),
        _ => None,
    };
    let is_stream = match &decoder {
        Some(decoder) => content_type(&parts.headers).is_some_and(|v| v.starts_with(decoder.content_type())),
        None => is_sse,
    };
    if let (Some(mode), true, true) = (upstream.mode, parts.status.is_success(), is_stream) {
        if let Some(own) = ctx.dialect.origin_stage() {
            // The origin speaks the client's API (a Responses passthrough): its own events,
            // watched. Not metered (the meter reads OpenAI chunks): the events' usage is charged.
            let pump =
                StreamPump::new(vec![Stage::Client(own)]).with_idle_timeout(call.config.settings.origin_timeout_ms);
            return Ok(client_stream(ctx, ResponseBody::Stream(upstream_body, pump)));
        }
        let client_stage = ctx.dialect.stream_stage(&endpoint.model);
        let first = match mode {
            StreamMode::Translate(translator) => Stage::Provider(translator),
            // The origin was asked for usage whatever the client said; a client that did not
            // ask does not get the usage-only chunk.
            _ => Stage::Watch(StreamWatch::new().hide_usage_chunk(client_stage.is_none() && !call.client_wants_usage)),
        };
        if guard::guards_output(&endpoint.guardrails) {
            return guarded_stream(ports, ctx, call, first, decoder, upstream_body).await;
        }
        let client = client_stage.map(Stage::Client);
        let mut pump = StreamPump::new(std::iter::once(first).chain(client).collect())
            .with_decoder(decoder)
            .metered(call.prompt_estimate)
            .with_cap(stream_cap(ctx))
            .with_idle_timeout(call.config.settings.origin_timeout_ms);
        if let Some(key) = &call.cache_key {
            // A deterministic stream fills the cache once it completes (see `account`).
            let captured: Captured = std::rc::Rc::new(std::cell::RefCell::new(Some(StreamAnswer::default())));
            pump = pump.capturing(captured.clone(), call.config.settings.max_response_bytes);
            let entry = cache::Entry {
                created_ms: upstream.now_ms,
                ttl_secs: endpoint.cache.ttl_secs,
                endpoint: endpoint.name.clone(),
                op: call.op,
                body: Vec::new(),
                usage: None,
            };
            ctx.pending.cache_stream = Some((key.name.clone(), entry, captured));
        }
        return Ok(client_stream(ctx, ResponseBody::Stream(upstream_body, pump)));
    }

    let bytes = ports.read_body(upstream_body, call.config.settings.max_response_bytes).await.map_err(read_failed)?;
    let reply = Reply {
        op: call.op,
        status: parts.status,
        body: &bytes,
        model: &endpoint.model,
        now_ms: upstream.now_ms,
        wanted: ctx.dialect.answer_fields(),
    };
    let translated = endpoint.provider.translate_response(reply).map_err(|e| match retry_after(&parts.headers) {
        Some(seconds) if e.status == StatusCode::TOO_MANY_REQUESTS => e.with_retry_after(seconds),
        _ => e,
    })?;
    // `fields` are read from the answer as translated: a change to it below drops them.
    let Translated { body, usage, mut fields } = translated;
    let passthrough = ctx.dialect.passthrough();
    let (mut answer, usage) = if passthrough { responses::passthrough_answer(&body)? } else { (body, usage) };
    ctx.log.set_usage(usage);
    if upstream.base64 {
        answer = embeddings_to_base64(&answer)?;
        fields = None;
    }
    // Output guardrails read the internal (chat) shape; a passthrough answer is not in it.
    if endpoint.guardrails.output && !passthrough {
        answer = guard_output(ctx, &endpoint.guardrails, answer)?;
        fields = None;
    }
    if let Some(key) = &call.cache_key {
        let entry = cache::Entry {
            created_ms: upstream.now_ms,
            ttl_secs: endpoint.cache.ttl_secs,
            endpoint: endpoint.name.clone(),
            op: call.op,
            body: answer.clone(),
            usage,
        };
        ctx.pending.cache_fill = Some((key.name.clone(), entry.encode(), endpoint.cache.ttl_secs));
        let entry = Rc::new(entry);
        if ports.keeps_state() {
            ctx.state.recent.put(&key.input, entry.clone(), upstream.now_ms);
        }
        if let Some(leader) = &call.lead {
            leader.publish(entry);
        }
    }
    if call.stream && matches!(call.op, Operation::Chat | Operation::Completions) && !passthrough {
        // The origin could not stream: replay the whole answer as the stream the client expects.
        let replay = completion_to_sse(call.op, &answer)?;
        return Ok(client_stream(ctx, ResponseBody::Full(client_replay(ctx, call, replay))));
    }
    Ok(json_bytes(StatusCode::OK, ctx.dialect.render(answer, fields)?))
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
}

/// The caps a live stream is stopped at: the room its request had under the key's token and
/// USD limits when admitted.
fn stream_cap(ctx: &RequestContext<'_>) -> Option<StreamCap> {
    let accounting = ctx.pending.accounting.as_ref()?;
    let room = accounting.room()?;
    if room.tokens.is_none() && room.cost_nusd.is_none() {
        return None;
    }
    let stopped = |what: &str| format!("the stream was stopped at {what}");
    Some(StreamCap {
        tokens: room.tokens.as_ref().map(|(n, what)| (*n, stopped(what))),
        cost_nusd: room.cost_nusd.as_ref().map(|(n, what)| (*n, stopped(what))),
        price: accounting.price(),
    })
}

/// A streamed answer on an endpoint with output guardrails: read whole (within
/// `max_response_bytes`), assembled into the answer it streams, guarded like a buffered answer
/// (a deny hit is a 422 before any byte is sent), then replayed as the client's stream. The
/// client gets its first byte only once the origin finished: the price of guarding what it
/// reads.
async fn guarded_stream<P: Ports>(
    ports: &P,
    ctx: &mut RequestContext<'_>,
    call: &ModelCall,
    first: Stage,
    decoder: Option<StreamDecoder>,
    body: P::Body,
) -> Result<Response<ResponseBody<P::Body>>> {
    let endpoint = &call.endpoint;
    let bytes = ports.read_body(body, call.config.settings.max_response_bytes).await.map_err(read_failed)?;
    // The answer is assembled as the pump reads the chunks (each read once); the whole of it
    // is needed to guard it, so it is kept whatever its size (the body's is bounded).
    let captured: Captured = std::rc::Rc::new(std::cell::RefCell::new(Some(StreamAnswer::default())));
    let mut pump = StreamPump::new(vec![first])
        .with_decoder(decoder)
        .metered(call.prompt_estimate)
        .capturing(captured.clone(), usize::MAX);
    pump.chunk(&bytes);
    pump.end();
    let summary = pump.summary();
    ctx.log.set_usage(summary.usage);
    let (answer, complete) = captured.take().unwrap_or_default().finish(call.op);
    // A stream the pump ended itself (an oversized event) did not complete either.
    let complete = complete && summary.stopped.is_none();
    let answer = crate::gateway::wire::json::json_body(&answer);
    let answer = guard_output(ctx, &endpoint.guardrails, answer)?;
    let mut replay = completion_to_sse(call.op, &answer)?;
    if !complete {
        // The origin's stream was cut: the replay ends the same way a live one would.
        let done = b"data: [DONE]\n\n";
        if replay.ends_with(done) {
            replay.truncate(replay.len() - done.len());
        }
        write_error_chunk(&mut replay, "origin stream ended before the answer was complete", "origin_stream_cut");
        crate::gateway::wire::sse::write_done(&mut replay);
    }
    Ok(client_stream(ctx, ResponseBody::Full(client_replay(ctx, call, replay))))
}

fn read_failed(e: crate::gateway::ports::UpstreamError) -> GatewayError {
    let reason = match e {
        crate::gateway::ports::UpstreamError::Timeout => "timed out".to_string(),
        crate::gateway::ports::UpstreamError::Connect(r) | crate::gateway::ports::UpstreamError::Body(r) => {
            crate::gateway::util::text::scrub(crate::gateway::util::text::truncate(&r, 200))
        }
    };
    GatewayError::bad_gateway(ErrorCode::OriginBadResponse, format!("reading the origin's response failed: {reason}"))
}

/// Output guardrails on a buffered answer (redaction and deny rules on the completion).
fn guard_output(ctx: &mut RequestContext<'_>, guardrails: &guard::Guardrails, body: Vec<u8>) -> Result<Vec<u8>> {
    let mut value = crate::gateway::wire::json::value_from_slice(&body)
        .map_err(|e| GatewayError::bad_gateway(ErrorCode::OriginBadResponse, format!("answer is not JSON: {e}")))?;
    let report = guard::apply_output(guardrails, &mut value)?;
    if report.is_empty() {
        return Ok(body);
    }
    ctx.log.guard_output = Some(report);
    Ok(crate::gateway::wire::json::json_body(&value))
}

/// The headers every answer carries: request id, endpoint, origin, attempts, template
/// version, cache status, guard flag and the rate-limit headers.
pub fn annotate<B>(ctx: &RequestContext<'_>, response: &mut Response<ResponseBody<B>>) {
    let log = &ctx.log;
    let headers = response.headers_mut();
    log.rate_headers.apply(headers);
    // Names made at compile time: a `&str` name is parsed again on every insert (~1k
    // instructions each, ~5% of a cache hit natively).
    const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    const ORIGIN: HeaderName = HeaderName::from_static("x-gateway-origin");
    const ENDPOINT: HeaderName = HeaderName::from_static("x-gateway-endpoint");
    const TEMPLATE_VERSION: HeaderName = HeaderName::from_static("x-gateway-template-version");
    const CACHE_STATUS: HeaderName = HeaderName::from_static(cache::STATUS_HEADER);
    const GUARD: HeaderName = HeaderName::from_static("x-gateway-guard");
    const ATTEMPTS: HeaderName = HeaderName::from_static("x-gateway-attempts");
    let mut put = |name: HeaderName, value: Option<&str>| {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, value);
        }
    };
    put(REQUEST_ID, Some(&log.request_id));
    put(ORIGIN, log.origin_id.as_deref());
    put(ENDPOINT, log.endpoint.as_deref());
    put(TEMPLATE_VERSION, log.template.as_deref());
    if let Some(status) = log.cache {
        headers.insert(CACHE_STATUS, HeaderValue::from_static(status));
    }
    if log.guard.as_ref().is_some_and(|g| g.flagged) {
        headers.insert(GUARD, HeaderValue::from_static("flagged"));
    }
    if !log.attempts.is_empty() {
        headers.insert(ATTEMPTS, HeaderValue::from(log.attempts.len()));
    }
}
