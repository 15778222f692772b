//! Which API a request speaks (method + path), which configured endpoint serves it (through a
//! traffic route, deterministically), and in which order its origins are tried.

use std::sync::Arc;

use http::Method;

use crate::gateway::check::did_you_mean;
use crate::gateway::config::{Config, Endpoint, EndpointType, Origin};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::types::Operation;
use crate::gateway::util::text::percent_decode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRoute {
    Health,
    /// `GET /v1/models`
    ListModels,
    /// `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`: `model` names the endpoint.
    OpenAi(Operation),
    /// `POST /v1/messages`: Anthropic Messages API, served by any chat endpoint.
    AnthropicMessages,
    /// `POST /endpoints/{name}/invocations`, `POST /gateway/{name}/invocations` (MLflow).
    Invocations(String),
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

pub fn match_route(method: &Method, path: &str) -> Result<ApiRoute> {
    let trimmed = path.trim_end_matches('/');
    let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
    let (route, allowed) = match segments.as_slice() {
        ["mcp"] => return Ok(ApiRoute::Mcp(None)),
        ["mcp", server] if !server.is_empty() => return Ok(ApiRoute::Mcp(Some(percent_decode(server, false)))),
        ["health"] => (ApiRoute::Health, Method::GET),
        ["v1", "models"] => (ApiRoute::ListModels, Method::GET),
        ["v1", "chat", "completions"] => (ApiRoute::OpenAi(Operation::Chat), Method::POST),
        ["v1", "completions"] => (ApiRoute::OpenAi(Operation::Completions), Method::POST),
        ["v1", "embeddings"] => (ApiRoute::OpenAi(Operation::Embeddings), Method::POST),
        ["v1", "messages"] => (ApiRoute::AnthropicMessages, Method::POST),
        ["endpoints" | "gateway", name, "invocations"] if !name.is_empty() => {
            (ApiRoute::Invocations(percent_decode(name, false)), Method::POST)
        }
        ["api", "2.0", "endpoints"] => (ApiRoute::ListEndpoints, Method::GET),
        ["api", "2.0", "endpoints", name] => (ApiRoute::GetEndpoint(percent_decode(name, false)), Method::GET),
        ["api", "2.0", "gateway", "routes"] => (ApiRoute::ListLegacyRoutes, Method::GET),
        ["api", "2.0", "gateway", "routes", name] => {
            (ApiRoute::GetLegacyRoute(percent_decode(name, false)), Method::GET)
        }
        _ => return Err(GatewayError::not_found(ErrorCode::RouteNotFound, format!("no route for {method} {path}"))),
    };
    if *method != allowed {
        return Err(GatewayError::method_not_allowed(format!("{path} accepts {allowed}, not {method}")));
    }
    Ok(route)
}

pub fn is_anthropic_path(path: &str) -> bool {
    path.trim_end_matches('/') == "/v1/messages"
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
    } else {
        let names: Vec<&str> = config.order.iter().map(String::as_str).collect();
        let hint = did_you_mean(name, &names).map(|s| format!(" (did you mean \"{s}\"?)")).unwrap_or_default();
        return Err(GatewayError::not_found(ErrorCode::ModelNotFound, format!("no endpoint named \"{name}\"{hint}")));
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

/// The origins to try, in order. A residency pin keeps only origins in the pinned region;
/// origins in the client's region come first; within a group, one is picked first in
/// proportion to its weight (by `request_hash`), the rest follow in config order.
pub fn order_origins<'a>(endpoint: &'a Endpoint, client_region: Option<&str>, request_hash: u64) -> Vec<&'a Origin> {
    let allowed: Vec<&Origin> = match &endpoint.residency {
        Some(pin) => endpoint.origins.iter().filter(|o| o.region.as_ref() == Some(pin)).collect(),
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

    fn config() -> Config {
        let endpoint = |name: &str, model: &str| {
            json!({"name": name, "endpoint_type": "llm/v1/chat",
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
        assert_eq!(urls(order_origins(free, Some("eu"), 0)), ["http://eu1/v1", "http://us1/v1", "http://us2/v1"]);
        // Weight 3 vs 1: us2 leads three times out of four.
        let us2_first = (0..400u64).filter(|h| order_origins(free, Some("us"), *h)[0].url == "http://us2/v1").count();
        assert_eq!(us2_first, 300);
        assert_eq!(order_origins(free, Some("us"), 0).len(), 3);
    }

    #[test]
    fn residency_pin_never_leaves_the_region() {
        let config = regional();
        let pinned = config.endpoint("pinned").unwrap();
        for region in [Some("us"), Some("eu"), None] {
            let order = urls(order_origins(pinned, region, 1));
            assert!(order.iter().all(|u| u.starts_with("http://eu")), "{order:?}");
            assert_eq!(order.len(), 2);
        }
    }
}
