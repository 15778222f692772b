//! Read-only views of the config: OpenAI's `GET /v1/models` and MLflow's endpoint listings
//! (`GET /api/2.0/endpoints/[{name}]`, legacy `GET /api/2.0/gateway/routes/[{name}]`), in the
//! exact shapes their clients parse. No credential or origin URL ever appears here, and a
//! caller sees only what it may call: public endpoints, plus those its API key allows
//! ([`Viewer`]); a traffic route shows when all its destinations do.

use serde_json::{json, Value};

use crate::gateway::config::{Config, Endpoint, TrafficRoute};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::keys::KeyRecord;
use crate::gateway::util::order;

/// Who is looking: no key (or an invalid one) sees the public endpoints only.
#[derive(Clone, Copy, Default)]
pub struct Viewer<'a> {
    pub key: Option<&'a KeyRecord>,
}

impl Viewer<'_> {
    /// Whether `name` (an endpoint or a traffic route) is shown to this viewer.
    pub fn sees(&self, config: &Config, name: &str) -> bool {
        let endpoint = |name: &str| match config.endpoint(name) {
            Some(e) => e.public || self.key.is_some_and(|k| k.allows(name)),
            None => false,
        };
        match config.routes.get(name) {
            Some(route) => route.destinations.iter().all(|(d, _)| endpoint(d)),
            None => endpoint(name),
        }
    }
}

/// Entries per page of MLflow listings; `page_token` is the decimal offset of the next page.
const PAGE_SIZE: usize = 50;

pub fn models(config: &Config, viewer: Viewer<'_>) -> Value {
    let data: Vec<Value> = config
        .order
        .iter()
        .filter(|name| viewer.sees(config, name))
        .map(|name| {
            let owner = config.endpoint(name).map_or("gateway", |e| e.provider.name());
            json!({"id": name, "object": "model", "created": 0, "owned_by": owner})
        })
        .collect();
    json!({"object": "list", "data": data})
}

/// MLflow 3.x's `GET /gateway/mlflow/v1/models`: every endpoint and traffic route, sorted by
/// name, with `owned_by: "mlflow"` (the `id` is what `model` names in the OpenAI-style routes).
pub fn mlflow_models(config: &Config, viewer: Viewer<'_>) -> Value {
    let mut names: Vec<&String> = config.order.iter().filter(|name| viewer.sees(config, name)).collect();
    order::sort(&mut names);
    let data: Vec<Value> = names
        .into_iter()
        .map(|name| json!({"id": name, "object": "model", "created": 0, "owned_by": "mlflow"}))
        .collect();
    json!({"object": "list", "data": data})
}

fn endpoint_view(e: &Endpoint, key: &str) -> Value {
    json!({
        "name": e.name,
        key: e.endpoint_type.as_str(),
        "model": {"name": e.model, "provider": e.provider.name()},
        "endpoint_url": format!("/gateway/{}/invocations", e.name),
        "limit": e.limit,
    })
}

fn route_view(r: &TrafficRoute, key: &str) -> Value {
    let destinations: Vec<Value> =
        r.destinations.iter().map(|(name, pct)| json!({"name": name, "traffic_percentage": pct})).collect();
    json!({
        "name": r.name,
        key: r.task_type.as_str(),
        // MLflow's client requires a model object; a route has destinations instead.
        "model": {"name": null, "provider": "traffic_route"},
        "endpoint_url": format!("/gateway/{}/invocations", r.name),
        "limit": null,
        "routing_strategy": "TRAFFIC_SPLIT",
        "destinations": destinations,
    })
}

fn view(config: &Config, name: &str, key: &str, viewer: Viewer<'_>) -> Option<Value> {
    if !viewer.sees(config, name) {
        return None;
    }
    match config.endpoint(name) {
        Some(e) => Some(endpoint_view(e, key)),
        None => config.routes.get(name).map(|r| route_view(r, key)),
    }
}

fn page(config: &Config, query: &str, list_key: &str, type_key: &str, viewer: Viewer<'_>) -> Result<Value> {
    let token = query.split('&').find_map(|pair| pair.strip_prefix("page_token=")).unwrap_or("");
    let start: usize = if token.is_empty() {
        0
    } else {
        token.parse().map_err(|_| {
            GatewayError::bad_request(ErrorCode::InvalidPageToken, format!("invalid page_token \"{token}\""))
        })?
    };
    let visible: Vec<&String> = config.order.iter().filter(|name| viewer.sees(config, name)).collect();
    let items: Vec<Value> =
        visible.iter().skip(start).take(PAGE_SIZE).filter_map(|name| view(config, name, type_key, viewer)).collect();
    let mut out = json!({ list_key: items });
    let next = start.saturating_add(PAGE_SIZE);
    if next < visible.len() {
        out["next_page_token"] = Value::String(next.to_string());
    }
    Ok(out)
}

fn one(config: &Config, name: &str, type_key: &str, viewer: Viewer<'_>) -> Result<Value> {
    view(config, name, type_key, viewer)
        .ok_or_else(|| GatewayError::not_found(ErrorCode::EndpointNotFound, format!("no endpoint named \"{name}\"")))
}

pub fn endpoints(config: &Config, query: &str, viewer: Viewer<'_>) -> Result<Value> {
    page(config, query, "endpoints", "endpoint_type", viewer)
}

pub fn endpoint(config: &Config, name: &str, viewer: Viewer<'_>) -> Result<Value> {
    one(config, name, "endpoint_type", viewer)
}

pub fn legacy_routes(config: &Config, query: &str, viewer: Viewer<'_>) -> Result<Value> {
    page(config, query, "routes", "route_type", viewer)
}

pub fn legacy_route(config: &Config, name: &str, viewer: Viewer<'_>) -> Result<Value> {
    one(config, name, "route_type", viewer)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Viewer<'static> = Viewer { key: None };

    fn config(n: usize) -> Config {
        let endpoints: Vec<Value> = (0..n)
            .map(|i| {
                json!({"name": format!("e{i}"), "endpoint_type": "llm/v1/chat",
                       "model": {"provider": "openai", "name": "gpt-4o-mini",
                                 "config": {"openai_api_key": "$SECRET", "openai_api_base": "http://secret-origin/v1"}},
                       "limit": {"calls": 5, "renewal_period": "minute"}, "public": true})
            })
            .collect();
        Config::from_value(json!({"endpoints": endpoints,
            "routes": [{"name": "split", "task_type": "llm/v1/chat",
                        "destinations": [{"name": "e0", "traffic_percentage": 100}]}]}))
        .unwrap()
    }

    #[test]
    fn endpoint_view_matches_mlflow_and_hides_config() {
        let c = config(1);
        let e = endpoint(&c, "e0", ALL).unwrap();
        assert_eq!(
            e,
            json!({"name": "e0", "endpoint_type": "llm/v1/chat", "model": {"name": "gpt-4o-mini", "provider": "openai"},
                   "endpoint_url": "/gateway/e0/invocations", "limit": {"calls": 5, "renewal_period": "minute"}})
        );
        assert!(!e.to_string().contains("secret"));
        assert_eq!(legacy_route(&c, "e0", ALL).unwrap()["route_type"], "llm/v1/chat");
        assert_eq!(endpoint(&c, "split", ALL).unwrap()["destinations"][0]["name"], "e0");
        assert_eq!(endpoint(&c, "nope", ALL).unwrap_err().code, "endpoint_not_found");
    }

    /// L5: a page token near usize::MAX neither overflows nor loops.
    #[test]
    fn huge_page_tokens_are_empty_pages() {
        let c = config(3);
        let last = endpoints(&c, &format!("page_token={}", usize::MAX), ALL).unwrap();
        assert_eq!(last["endpoints"].as_array().unwrap().len(), 0);
        assert!(last.get("next_page_token").is_none());
    }

    #[test]
    fn listing_pages_with_tokens() {
        let c = config(120);
        let first = endpoints(&c, "", ALL).unwrap();
        assert_eq!(first["endpoints"].as_array().unwrap().len(), 50);
        assert_eq!(first["next_page_token"], "50");
        let last = endpoints(&c, "page_token=100", ALL).unwrap();
        assert_eq!(last["endpoints"].as_array().unwrap().len(), 21); // 20 endpoints + the route
        assert!(last.get("next_page_token").is_none());
        assert_eq!(endpoints(&c, "page_token=x", ALL).unwrap_err().code, "invalid_page_token");
        assert_eq!(models(&c, ALL)["data"].as_array().unwrap().len(), 121);
    }

    #[test]
    fn mlflow3_models_are_sorted_and_owned_by_mlflow() {
        let listed = mlflow_models(&config(12), ALL);
        let ids: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids[..4], ["e0", "e1", "e10", "e11"]);
        assert_eq!(ids.last(), Some(&"split"));
        assert_eq!(listed["object"], "list");
        assert_eq!(listed["data"][0], json!({"id": "e0", "object": "model", "created": 0, "owned_by": "mlflow"}));
    }
}
