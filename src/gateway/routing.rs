//! Which API a request speaks (method + path), which configured endpoint serves it (through a
//! traffic route, deterministically), and in which order its origins are tried.

use std::sync::Arc;

use http::Method;

use crate::gateway::check::did_you_mean;
use crate::gateway::config::{Config, Endpoint, EndpointType, Origin};
use crate::gateway::dialect::{gemini, Dialect};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::types::Operation;
use crate::gateway::util::text::{percent_decode, truncate};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRoute {
    Health,
    /// `GET /v1/models`
    ListModels,
    /// `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`: `model` names the endpoint.
    OpenAi(Operation),
    /// `POST /v1/messages`: Anthropic Messages API, served by any chat endpoint.
    AnthropicMessages,
    /// `POST /v1/responses`: OpenAI Responses API, served by any chat endpoint.
    CreateResponse,
    /// `GET /v1/responses/{id}`: a stored response of the caller's tenant.
    GetResponse(String),
    /// `DELETE /v1/responses/{id}`
    DeleteResponse(String),
    /// `POST /v1beta/models/{endpoint}:generateContent|streamGenerateContent` (Gemini).
    Gemini {
        name: String,
        stream: bool,
    },
    /// `POST /endpoints/{name}/invocations`, `POST /gateway/{name}/invocations` (MLflow).
    Invocations(String),
    /// `POST /gateway/{name}/mlflow/invocations` (MLflow 3.x): chat or embeddings, by the body.
    UnifiedInvocations(String),
    /// `GET /gateway/mlflow/v1/models` (MLflow 3.x's OpenAI-style listing).
    MlflowModels,
    /// `GET /api/2.0/endpoints/` (MLflow; paginated).
    ListEndpoints,
    /// `GET /api/2.0/endpoints/{name}`
    GetEndpoint(String),
    /// `GET /api/2.0/gateway/routes/` (MLflow's legacy spelling).
    ListLegacyRoutes,
    /// `GET /api/2.0/gateway/routes/{name}`
    GetLegacyRoute(String),
    /// `/mcp` (every allowed MCP server) or `/mcp/{server}` (one): any method, the MCP handler
    /// answers the ones it does not take.
    Mcp(Option<String>),
}

/// MLflow 3.x serves each client API under `/gateway/<api>/...` as well: the same routes.
const GATEWAY_PREFIXES: &[(&str, &str)] = &[
    ("/gateway/openai/v1/", "/v1/"),
    ("/gateway/mlflow/v1/", "/v1/"),
    ("/gateway/anthropic/v1/", "/v1/"),
    ("/gateway/gemini/v1beta/", "/v1beta/"),
    ("/gateway/gemini/v1/", "/v1beta/"),
];
impl ApiRoute {
    /// A read-only view of the config (models, endpoints, legacy routes).
    pub fn is_listing(&self) -> bool {
        matches!(
            self,
            ApiRoute::ListModels
                | ApiRoute::MlflowModels
                | ApiRoute::ListEndpoints
                | ApiRoute::GetEndpoint(_)
                | ApiRoute::ListLegacyRoutes
                | ApiRoute::GetLegacyRoute(_)
        )
    }
}

pub fn match_route(method: &Method, path: &str) -> Result<ApiRoute> {
    let trimmed = path.trim_end_matches('/');
    let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
    let (route, allowed) = match segments.as_slice() {
        ["mcp"] => return Ok(ApiRoute::Mcp(None)),
        ["mcp", server] if !server.is_empty() => return Ok(ApiRoute::Mcp(Some(percent_decode(server, false)))),
        ["health"] => (ApiRoute::Health, Method::GET),
        ["v1", "models"] => (ApiRoute::ListModels, Method::GET),
        ["v1", "chat", "completions"] | ["gateway", "mlflow" | "openai", "v1", "chat", "completions"] => {
            (ApiRoute::OpenAi(Operation::Chat), Method::POST)
        }
        ["v1", "completions"] => (ApiRoute::OpenAi(Operation::Completions), Method::POST),
        ["v1", "embeddings"] | ["gateway", "openai", "v1", "embeddings"] => {
            (ApiRoute::OpenAi(Operation::Embeddings), Method::POST)
        }
        ["v1", "messages"] | ["gateway", "anthropic", "v1", "messages"] => (ApiRoute::AnthropicMessages, Method::POST),
        ["v1", "responses"] | ["gateway", "openai", "v1", "responses"] => (ApiRoute::CreateResponse, Method::POST),
        ["v1", "responses", id] | ["gateway", "openai", "v1", "responses", id] if !id.is_empty() => {
            let id = percent_decode(id, false);
            match *method {
                Method::DELETE => (ApiRoute::DeleteResponse(id), Method::DELETE),
                _ => (ApiRoute::GetResponse(id), Method::GET),
            }
        }
        ["v1beta" | "v1", "models", model] | ["gateway", "gemini", "v1beta" | "v1", "models", model]
            if model.contains(':') || model.to_ascii_lowercase().contains("%3a") =>
        {
            let decoded = percent_decode(model, false);
            let route = gemini::endpoint_and_method(&decoded).and_then(|(name, method)| {
                let stream = match method {
                    "generateContent" => false,
                    "streamGenerateContent" => true,
                    _ => return None,
                };
                Some(ApiRoute::Gemini { name: name.strip_prefix("models/").unwrap_or(name).to_string(), stream })
            });
            match route {
                Some(route) => (route, Method::POST),
                None => return Err(not_found(method, path)),
            }
        }
        ["gateway", "mlflow", "v1", "models"] => (ApiRoute::MlflowModels, Method::GET),
        ["gateway", name, "mlflow", "invocations"] if !name.is_empty() => {
            (ApiRoute::UnifiedInvocations(percent_decode(name, false)), Method::POST)
        }
        ["endpoints" | "gateway", name, "invocations"] if !name.is_empty() => {
            (ApiRoute::Invocations(percent_decode(name, false)), Method::POST)
        }
        ["api", "2.0", "endpoints"] => (ApiRoute::ListEndpoints, Method::GET),
        ["api", "2.0", "endpoints", name] => (ApiRoute::GetEndpoint(percent_decode(name, false)), Method::GET),
        ["api", "2.0", "gateway", "routes"] => (ApiRoute::ListLegacyRoutes, Method::GET),
        ["api", "2.0", "gateway", "routes", name] => {
            (ApiRoute::GetLegacyRoute(percent_decode(name, false)), Method::GET)
        }
        _ => return Err(not_found(method, path)),
    };
    if *method != allowed {
        return Err(GatewayError::method_not_allowed(format!("{path} accepts {allowed}, not {method}")));
    }
    Ok(route)
}

fn not_found(method: &Method, path: &str) -> GatewayError {
    GatewayError::not_found(ErrorCode::RouteNotFound, format!("no route for {method} {path}"))
}

/// The dialect whose error shape a request to `path` gets before routing knows more (a
/// wrong path or method under an API's prefix is still answered in that API's shape).
pub fn path_dialect(path: &str) -> Dialect {
    let path = GATEWAY_PREFIXES
        .iter()
        .find_map(|(prefix, plain)| path.strip_prefix(prefix).map(|rest| format!("{plain}{rest}")))
        .unwrap_or_else(|| path.to_string());
    let path = path.trim_end_matches('/');
    if path == "/v1/messages" {
        Dialect::Anthropic
    } else if path == "/v1/responses" || path.starts_with("/v1/responses/") {
        Dialect::responses()
    } else if path.starts_with("/v1beta/") || (path.starts_with("/v1/models/") && path.contains(':')) {
        Dialect::Gemini(gemini::Mode::Generate)
    } else {
        Dialect::OpenAi(Operation::Chat)
    }
}

/// `POST /v1/access-requests`: a caller asks for access to an `access: approval` endpoint
/// (served by `pipeline::access`, which answers with an audit line).
pub fn is_access_requests_path(path: &str) -> bool {
    path.trim_end_matches('/') == "/v1/access-requests"
}

pub fn operation_for(endpoint_type: EndpointType) -> Operation {
    match endpoint_type {
        EndpointType::Chat => Operation::Chat,
        EndpointType::Completions => Operation::Completions,
        EndpointType::Embeddings => Operation::Embeddings,
        EndpointType::Predict => Operation::Predict,
    }
}

pub fn endpoint_type_for(op: Operation) -> EndpointType {
    match op {
        Operation::Chat => EndpointType::Chat,
        Operation::Completions => EndpointType::Completions,
        Operation::Embeddings => EndpointType::Embeddings,
        Operation::Predict => EndpointType::Predict,
    }
}

/// The endpoint a request goes to: `name` is an endpoint, or a traffic route whose
/// destination is picked from `request_hash` (same request, same destination).
pub struct Resolved {
    pub endpoint: Arc<Endpoint>,
    /// The traffic route the name referred to, if any.
    pub route: Option<String>,
}

/// Finds what `name` refers to; `wanted` is the type the client's API needs (None: any, as
/// for MLflow invocations, where the endpoint decides the operation).
pub fn resolve(config: &Config, name: &str, wanted: Option<EndpointType>, request_hash: u64) -> Result<Resolved> {
    if name.len() > MAX_NAME_LEN {
        return Err(unknown_name(config, name));
    }
    let (endpoint, route) = if let Some(endpoint) = config.endpoint(name) {
        (endpoint.clone(), None)
    } else if let Some(route) = config.routes.get(name) {
        // Percentages sum to 100 (checked at load); buckets are [0, 100).
        let mut bucket = (request_hash % 100) as u32;
        let mut chosen = &route.destinations[0].0;
        for (destination, percentage) in &route.destinations {
            if bucket < *percentage {
                chosen = destination;
                break;
            }
            bucket -= percentage;
        }
        let endpoint = config.endpoint(chosen).ok_or_else(|| {
            GatewayError::not_configured(ErrorCode::ConfigInvalid, format!("route \"{name}\" names a missing endpoint"))
        })?;
        (endpoint.clone(), Some(route.name.clone()))
    } else if config.endpoint_issue(name).is_some() {
        return Err(GatewayError::not_configured(
            ErrorCode::ConfigInvalid,
            format!(
                "endpoint \"{name}\" is misconfigured; its operator can see why in the gateway log or with \
                 `gatewayctl validate`"
            ),
        ));
    } else {
        return Err(unknown_name(config, name));
    };
    if let Some(wanted) = wanted.filter(|w| *w != endpoint.endpoint_type) {
        return Err(GatewayError::bad_request(
            ErrorCode::EndpointTypeMismatch,
            format!(
                "endpoint \"{name}\" is {}, but this API needs {}",
                endpoint.endpoint_type.as_str(),
                wanted.as_str()
            ),
        ));
    }
    Ok(Resolved { endpoint, route })
}

/// Longest endpoint or route name (config names are 1-64 chars): a longer one is refused
/// without a lookup or a suggestion.
pub const MAX_NAME_LEN: usize = 64;

/// The 404 for a name that is neither an endpoint nor a route: echoes at most
/// [`MAX_NAME_LEN`] bytes of it and suggests a close name only for names that could be typos.
fn unknown_name(config: &Config, name: &str) -> GatewayError {
    let shown = truncate(name, MAX_NAME_LEN);
    let ellipsis = if shown.len() < name.len() { "…" } else { "" };
    let hint = if name.len() > MAX_NAME_LEN {
        String::new()
    } else {
        // Only names anyone may call: the 404 comes before authentication.
        let public = |n: &str| config.is_public(n);
        let names: Vec<&str> = config
            .order
            .iter()
            .map(String::as_str)
            .filter(|n| match config.routes.get(*n) {
                Some(route) => route.destinations.iter().all(|(d, _)| public(d)),
                None => public(n),
            })
            .collect();
        did_you_mean(name, &names).map(|s| format!(" (did you mean \"{s}\"?)")).unwrap_or_default()
    };
    GatewayError::not_found(ErrorCode::ModelNotFound, format!("no endpoint named \"{shown}{ellipsis}\"{hint}"))
}

/// The residency pin a request obeys: the endpoint's and the API key's, intersected. `Err`
/// names both when they contradict (no origin may serve the request).
pub fn residency_pin<'a>(endpoint: Option<&'a str>, key: Option<&'a str>) -> Result<Option<&'a str>> {
    match (endpoint, key) {
        (Some(e), Some(k)) if e != k => Err(GatewayError::not_configured(
            ErrorCode::RegionUnavailable,
            format!("this API key is pinned to region \"{k}\", but the endpoint keeps its requests in \"{e}\""),
        )),
        (e, k) => Ok(e.or(k)),
    }
}

/// The origins to try, in order. A residency pin (the endpoint's or the key's, see
/// [`residency_pin`]) keeps only origins in the pinned region; origins in the client's region
/// come first; within a group, one is picked first in proportion to its weight (by
/// `request_hash`), the rest follow in config order.
pub fn order_origins<'a>(
    endpoint: &'a Endpoint,
    client_region: Option<&str>,
    request_hash: u64,
    pin: Option<&str>,
) -> Vec<&'a Origin> {
    let allowed: Vec<&Origin> = match pin {
        Some(pin) => endpoint.origins.iter().filter(|o| o.region.as_deref() == Some(pin)).collect(),
        None => endpoint.origins.iter().collect(),
    };
    let in_region = |o: &&Origin| client_region.is_some() && o.region.as_deref() == client_region;
    let (mut near, far): (Vec<&Origin>, Vec<&Origin>) = allowed.into_iter().partition(in_region);
    weighted_first(&mut near, request_hash);
    let mut far = far;
    weighted_first(&mut far, request_hash);
    near.extend(far);
    near
}

fn weighted_first(group: &mut [&Origin], hash: u64) {
    let total: u64 = group.iter().map(|o| u64::from(o.weight)).sum();
    if group.len() < 2 || total == 0 {
        return;
    }
    let mut point = hash % total;
    let mut index = 0;
    for (i, origin) in group.iter().enumerate() {
        if point < u64::from(origin.weight) {
            index = i;
            break;
        }
        point -= u64::from(origin.weight);
    }
    group[..=index].rotate_right(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use serde_json::json;

    #[test]
    fn routes_by_method_and_path() {
        assert_eq!(match_route(&Method::GET, "/health").unwrap(), ApiRoute::Health);
        assert_eq!(match_route(&Method::POST, "/v1/chat/completions/").unwrap(), ApiRoute::OpenAi(Operation::Chat));
        assert_eq!(
            match_route(&Method::POST, "/gateway/my%2Dchat/invocations").unwrap(),
            ApiRoute::Invocations("my-chat".into())
        );
        assert_eq!(
            match_route(&Method::POST, "/endpoints/chat/invocations").unwrap(),
            ApiRoute::Invocations("chat".into())
        );
        assert_eq!(match_route(&Method::GET, "/api/2.0/endpoints/").unwrap(), ApiRoute::ListEndpoints);
        assert_eq!(match_route(&Method::GET, "/api/2.0/endpoints/chat").unwrap(), ApiRoute::GetEndpoint("chat".into()));
        assert_eq!(match_route(&Method::GET, "/api/2.0/gateway/routes/").unwrap(), ApiRoute::ListLegacyRoutes);
        assert_eq!(match_route(&Method::POST, "/mcp").unwrap(), ApiRoute::Mcp(None));
        assert_eq!(match_route(&Method::DELETE, "/mcp/").unwrap(), ApiRoute::Mcp(None));
        assert_eq!(match_route(&Method::GET, "/mcp/files").unwrap(), ApiRoute::Mcp(Some("files".into())));
        assert_eq!(match_route(&Method::POST, "/mcp/a/b").unwrap_err().status, StatusCode::NOT_FOUND);
        assert_eq!(match_route(&Method::GET, "/v1/embeddings").unwrap_err().status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(match_route(&Method::GET, "/nope").unwrap_err().status, StatusCode::NOT_FOUND);
        assert_eq!(match_route(&Method::POST, "/endpoints//invocations").unwrap_err().status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn routes_the_responses_gemini_and_mlflow3_apis() {
        let post = |p: &str| match_route(&Method::POST, p);
        assert_eq!(post("/v1/responses").unwrap(), ApiRoute::CreateResponse);
        assert_eq!(post("/gateway/openai/v1/responses").unwrap(), ApiRoute::CreateResponse);
        assert_eq!(match_route(&Method::GET, "/v1/responses/resp_1").unwrap(), ApiRoute::GetResponse("resp_1".into()));
        assert_eq!(
            match_route(&Method::DELETE, "/gateway/openai/v1/responses/resp_1").unwrap(),
            ApiRoute::DeleteResponse("resp_1".into())
        );
        assert_eq!(match_route(&Method::PUT, "/v1/responses/x").unwrap_err().status, StatusCode::METHOD_NOT_ALLOWED);
        let gemini = |name: &str, stream| ApiRoute::Gemini { name: name.into(), stream };
        assert_eq!(post("/v1beta/models/chat:generateContent").unwrap(), gemini("chat", false));
        assert_eq!(post("/v1beta/models/my:chat:streamGenerateContent").unwrap(), gemini("my:chat", true));
        assert_eq!(post("/v1/models/chat%3AgenerateContent").unwrap(), gemini("chat", false));
        assert_eq!(post("/gateway/gemini/v1beta/models/g:streamGenerateContent").unwrap(), gemini("g", true));
        // google-genai 3.x speaks `v1` unless told `api_version="v1beta"`: both are served.
        assert_eq!(post("/gateway/gemini/v1/models/g:generateContent").unwrap(), gemini("g", false));
        assert_eq!(post("/v1beta/models/chat:countTokens").unwrap_err().status, StatusCode::NOT_FOUND);
        assert_eq!(post("/v1beta/models/:generateContent").unwrap_err().status, StatusCode::NOT_FOUND);
        assert_eq!(post("/gateway/chat/mlflow/invocations").unwrap(), ApiRoute::UnifiedInvocations("chat".into()));
        assert_eq!(post("/gateway/mlflow/v1/chat/completions").unwrap(), ApiRoute::OpenAi(Operation::Chat));
        assert_eq!(post("/gateway/openai/v1/chat/completions").unwrap(), ApiRoute::OpenAi(Operation::Chat));
        assert_eq!(post("/gateway/openai/v1/embeddings").unwrap(), ApiRoute::OpenAi(Operation::Embeddings));
        assert_eq!(post("/gateway/anthropic/v1/messages").unwrap(), ApiRoute::AnthropicMessages);
        assert_eq!(match_route(&Method::GET, "/gateway/mlflow/v1/models").unwrap(), ApiRoute::MlflowModels);
        // The MLflow 2.x spelling keeps working next to 3.x's.
        assert_eq!(post("/gateway/chat/invocations").unwrap(), ApiRoute::Invocations("chat".into()));
    }

    #[test]
    fn errors_before_routing_take_the_shape_of_the_path() {
        assert!(matches!(path_dialect("/v1/messages"), Dialect::Anthropic));
        assert!(matches!(path_dialect("/gateway/anthropic/v1/messages/"), Dialect::Anthropic));
        assert!(matches!(path_dialect("/v1/responses/resp_x"), Dialect::Responses(_)));
        assert!(matches!(path_dialect("/gateway/openai/v1/responses"), Dialect::Responses(_)));
        assert!(matches!(path_dialect("/v1beta/models/x:countTokens"), Dialect::Gemini(_)));
        assert!(matches!(path_dialect("/gateway/gemini/v1beta/models/x"), Dialect::Gemini(_)));
        assert!(matches!(path_dialect("/gateway/gemini/v1/models/x:y"), Dialect::Gemini(_)));
        assert!(matches!(path_dialect("/v1/chat/completions"), Dialect::OpenAi(_)));
    }

    fn config() -> Config {
        let endpoint = |name: &str, model: &str| {
            json!({"name": name, "endpoint_type": "llm/v1/chat", "public": true,
                   "model": {"provider": "openai", "name": model, "config": {"openai_api_key": "k"}}})
        };
        Config::from_value(json!({
            "endpoints": [endpoint("a", "m-a"), endpoint("b", "m-b"),
                {"name": "emb", "endpoint_type": "llm/v1/embeddings", "model": {"provider": "openai", "name": "e", "config": {"openai_api_key": "k"}}}],
            "routes": [{"name": "split", "task_type": "llm/v1/chat",
                        "destinations": [{"name": "a", "traffic_percentage": 80}, {"name": "b", "traffic_percentage": 20}]}]
        }))
        .unwrap()
    }

    #[test]
    fn resolves_endpoints_and_checks_type() {
        let config = config();
        assert_eq!(resolve(&config, "a", Some(EndpointType::Chat), 0).unwrap().endpoint.name, "a");
        let e = resolve(&config, "a", Some(EndpointType::Embeddings), 0).err().unwrap();
        assert_eq!(e.code, "endpoint_type_mismatch");
        let e = resolve(&config, "splt", None, 0).err().unwrap();
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::NOT_FOUND, "no endpoint named \"splt\" (did you mean \"split\"?)")
        );
    }

    /// H2: an unknown `model` of any length is refused without work proportional to its
    /// length times the config, and without echoing it whole.
    #[test]
    fn huge_unknown_names_are_refused_cheaply_and_not_echoed() {
        let config = config();
        let name = "s".repeat(200_000);
        let started = std::time::Instant::now();
        let e = resolve(&config, &name, None, 0).err().unwrap();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::NOT_FOUND, "model_not_found"));
        assert!(e.message.len() < 200, "{} bytes", e.message.len());
        assert!(!e.message.contains("did you mean"), "{}", e.message);
        // Near misses of long names still get a hint; hopeless ones are not even compared.
        let e = resolve(&config, "splitt", None, 0).err().unwrap();
        assert!(e.message.contains("did you mean \"split\""), "{}", e.message);
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
    }

    #[test]
    fn traffic_split_is_deterministic_and_proportional() {
        let config = config();
        let pick = |h| resolve(&config, "split", Some(EndpointType::Chat), h).unwrap().endpoint.name.clone();
        assert_eq!(pick(42), pick(42));
        let to_a = (0..1000u64).filter(|h| pick(*h) == "a").count();
        assert_eq!(to_a, 800);
        assert_eq!(resolve(&config, "split", None, 5).unwrap().route.as_deref(), Some("split"));
    }

    fn regional() -> Config {
        Config::from_value(json!({
            "regions": {"eu": {"continents": ["EU"]}, "us": {"continents": ["NA"]}},
            "endpoints": [
                {"name": "free", "endpoint_type": "llm/v1/chat",
                 "model": {"provider": "openai", "name": "m", "config": {"openai_api_key": "k"}},
                 "origins": [{"url": "http://us1/v1", "region": "us"}, {"url": "http://eu1/v1", "region": "eu"},
                             {"url": "http://us2/v1", "region": "us", "weight": 3}]},
                {"name": "pinned", "endpoint_type": "llm/v1/chat", "residency": "eu",
                 "model": {"provider": "openai", "name": "m", "config": {"openai_api_key": "k"}},
                 "origins": [{"url": "http://us1/v1", "region": "us"}, {"url": "http://eu1/v1", "region": "eu"},
                             {"url": "http://eu2/v1", "region": "eu"}]}
            ]
        }))
        .unwrap()
    }

    fn urls(origins: Vec<&Origin>) -> Vec<&str> {
        origins.into_iter().map(|o| o.url.as_str()).collect()
    }

    #[test]
    fn client_region_first_then_failover_elsewhere() {
        let config = regional();
        let free = config.endpoint("free").unwrap();
        assert_eq!(urls(order_origins(free, Some("eu"), 0, None)), ["http://eu1/v1", "http://us1/v1", "http://us2/v1"]);
        // Weight 3 vs 1: us2 leads three times out of four.
        let us2_first =
            (0..400u64).filter(|h| order_origins(free, Some("us"), *h, None)[0].url == "http://us2/v1").count();
        assert_eq!(us2_first, 300);
        assert_eq!(order_origins(free, Some("us"), 0, None).len(), 3);
    }

    #[test]
    fn residency_pin_never_leaves_the_region() {
        let config = regional();
        let pinned = config.endpoint("pinned").unwrap();
        for region in [Some("us"), Some("eu"), None] {
            let order = urls(order_origins(pinned, region, 1, pinned.residency.as_deref()));
            assert!(order.iter().all(|u| u.starts_with("http://eu")), "{order:?}");
            assert_eq!(order.len(), 2);
        }
    }
}
