//! The admin API (`/admin/*`): config apply/rollback/read, API keys, usage. Everything needs
//! `Authorization: Bearer <token>` where the token is the host secret `GATEWAY_ADMIN_TOKEN`
//! (compared in constant time; without that secret the admin API is off: 503). Every call —
//! refused ones too — produces one audit line (JSON, returned for the host to print) naming
//! the action, outcome and the objects touched: key ids and config versions, never a key, a
//! token or a config value.
//!
//! | method & path | body / query | answer |
//! |---|---|---|
//! | `GET /admin/config` | | the active snapshot as stored (secret *references* like `$OPENAI_API_KEY`; any literal secret-like value is shown as `[redacted]`) |
//! | `POST /admin/config` | config JSON; `?dry_run=true` validates only | `{version, previous, endpoints}`; 400 with `issues` |
//! | `GET /admin/config/versions` | | `{active, versions}` |
//! | `POST /admin/config/rollback` | `{"version": "..."}` | `{version, previous}` |
//! | `POST /admin/keys` | `{tenant, name?, endpoints?, rpm?, tpm?, budget_usd?, budget_period?, region?, expires_at?, expires_in?, exact?}` | 201 `{key, id, ...}` — the only time the key is shown |
//! | `GET /admin/keys` | `?tenant=&limit=&cursor=` | `{keys: [...], next_cursor?}` (no key, no hash; pages of 100 by default, 200 at most) |
//! | `GET /admin/keys/{id}` | | the record |
//! | `POST /admin/keys/{id}/revoke` | | the record, `state: revoked` |
//! | `POST /admin/keys/{id}/rotate` | | `{key, id, ...}`: a new key for the same record; the old one stops working |
//! | `GET /admin/usage` | `?key=<id>` or `?tenant=<name>`, `&from=YYYY-MM-DD&to=YYYY-MM-DD` (default today) | `{days: [...], total, partial?}` (`partial`: call again, the backlog is being compacted) |
//! | `POST /admin/cache/purge` | `{tenant?, endpoint?, shared?}` | `{purged, more}` (at most 500 per call: call again while `more`) |
//! | `GET /admin/access-requests` | `?state=pending\|approved\|denied\|all` (default pending), `&tenant=` | `{requests: [...]}`, newest first |
//! | `GET /admin/access-requests/{id}` | | the request |
//! | `POST /admin/access-requests/{id}/approve` | `{expires_in?, expires_at?, note?}` (or empty) | the request, `state: approved`; writes the grant |
//! | `POST /admin/access-requests/{id}/deny` | `{note?}` (or empty) | the request, `state: denied`; deletes any grant |
//! | `GET /admin/usage/series` | `&from=YYYY-MM-DD&to=YYYY-MM-DD` (default today) | `{days: [{date, series: [{endpoint, tenant, status, code, requests, ...}]}], partial?}` (as for `/admin/usage`) |
//! | `GET /admin/metrics` | | Prometheus text format 0.0.4 (`metrics.rs`; a first line `# partial: …` as above) |
//!
//! A request body over [`MAX_ADMIN_BODY_BYTES`] is refused (413) before it is parsed.
//!
//! `GET /admin/ui` (and its `app.js`, `style.css`) is the console (`ui.rs`): static files
//! served without the token; the page asks for it and uses the API above.

/// Largest admin request body: a config with thousands of endpoints fits; the hosts' own cap
/// (32 MiB) is for streaming bodies, not for one JSON document parsed whole.
pub const MAX_ADMIN_BODY_BYTES: usize = 4 << 20;

mod access;
mod answer;
mod config;
mod keys;
mod metrics;
mod routes;
mod ui;
mod usage;

use http::{Request, StatusCode};
use sha2::{Digest, Sha256};

use crate::gateway::auth::AuthMemo;
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::cache::Recent;
use crate::gateway::features::keys::ct_eq;
use crate::gateway::ports::Ports;
use serde_json::Value;

use answer::{query_params, query_value, Audit, Failure, Handled};
pub use answer::{AdminResponse, RawBody};
pub use config::{redact_secrets, VERSION_PREFIX};
use routes::AdminRoute;

/// The host secret holding the admin token.
pub const ADMIN_TOKEN_SECRET: &str = "GATEWAY_ADMIN_TOKEN";

/// Serves one `/admin/*` request. `memo` is the isolate's key memo: a revoke or rotate handled
/// here takes effect in this isolate at once (elsewhere within the bound in `auth`); `recent`
/// its cached answers, which a purge here clears at once (elsewhere within
/// `cache::MEMORY_TTL_MS`).
pub async fn handle<P: Ports>(
    ports: &P,
    memo: &AuthMemo,
    recent: &Recent,
    request: &Request<Vec<u8>>,
) -> AdminResponse {
    let mut audit = Audit {
        ts: ports.now_ms(),
        audit: "admin",
        action: "unknown",
        method: request.method().to_string(),
        path: crate::gateway::util::text::truncate(request.uri().path(), 200).to_string(),
        ..Audit::default()
    };
    if let Some(asset) = ui::asset(request.method(), request.uri().path()) {
        (audit.action, audit.outcome, audit.status) = ("ui.asset", "ok", 200);
        let audit = serde_json::to_string(&audit).unwrap_or_default();
        return AdminResponse { status: StatusCode::OK, body: Value::Null, audit, raw: Some(asset) };
    }
    let result = match check_token(ports, request.headers()) {
        Ok(()) => route(ports, memo, recent, request, &mut audit).await,
        Err(e) => {
            audit.action = "auth";
            Err(e.into())
        }
    };
    let mut raw = None;
    let (status, body) = match result {
        Ok(Reply::Json(status, body)) => {
            audit.outcome = "ok";
            (status, body)
        }
        Ok(Reply::Raw(body)) => {
            audit.outcome = "ok";
            raw = Some(body);
            (StatusCode::OK, Value::Null)
        }
        Err(Failure { error, issues }) => {
            audit.outcome = match error.status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "denied",
                s if s.is_server_error() => "error",
                _ => "rejected",
            };
            audit.error = Some(error.code);
            let mut body: Value = serde_json::from_slice(&error.body()).unwrap_or(Value::Null);
            if let (Some(issues), Value::Object(map)) = (issues, &mut body) {
                map.insert("issues".into(), issues);
            }
            (error.status, body)
        }
    };
    audit.status = status.as_u16();
    AdminResponse { status, body, audit: serde_json::to_string(&audit).unwrap_or_default(), raw }
}

/// A handler's answer: JSON, or a body of its own type.
enum Reply {
    Json(StatusCode, Value),
    Raw(RawBody),
}

fn check_token<P: Ports>(ports: &P, headers: &http::HeaderMap) -> Result<()> {
    let Some(expected) = ports.secret(ADMIN_TOKEN_SECRET).filter(|t| !t.is_empty()) else {
        return Err(GatewayError::not_configured(
            ErrorCode::AdminDisabled,
            format!("the admin API is disabled: host secret {ADMIN_TOKEN_SECRET} is not set"),
        ));
    };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or("");
    // Hash both sides so neither the length nor a prefix of the token leaks through timing.
    let ok = ct_eq(&Sha256::digest(presented.as_bytes()), &Sha256::digest(expected.as_bytes()));
    if ok && !presented.is_empty() {
        Ok(())
    } else {
        Err(GatewayError::unauthorized(
            ErrorCode::InvalidAdminToken,
            "the admin API needs `Authorization: Bearer <admin token>`; the token is missing or wrong",
        ))
    }
}

async fn route<P: Ports>(
    ports: &P,
    memo: &AuthMemo,
    recent: &Recent,
    request: &Request<Vec<u8>>,
    audit: &mut Audit,
) -> std::result::Result<Reply, Failure> {
    let route = AdminRoute::parse(request.method(), request.uri().path())?;
    audit.action = route.action();
    if let Some(id) = route.key_id() {
        audit.key_id = Some(crate::gateway::util::text::truncate(id, 40).to_string());
    }
    let query = query_params(request.uri().query().unwrap_or(""));
    let body = request.body();
    if body.len() > MAX_ADMIN_BODY_BYTES {
        return Err(GatewayError::payload_too_large(MAX_ADMIN_BODY_BYTES).into());
    }
    let handled: Handled = match route {
        AdminRoute::Metrics => return Ok(Reply::Raw(metrics::prometheus(ports).await?)),
        AdminRoute::UsageSeries => metrics::series(ports, &query).await,
        AdminRoute::GetConfig => config::get_config(ports).await,
        AdminRoute::ApplyConfig => {
            let dry_run = query.iter().any(|(k, v)| k == "dry_run" && matches!(v.as_str(), "" | "1" | "true"));
            config::apply_config(ports, body, dry_run, audit).await
        }
        AdminRoute::ConfigVersions => config::versions(ports).await,
        AdminRoute::Rollback => config::rollback(ports, body, audit).await,
        AdminRoute::ListKeys => {
            let q = |name| query_value(&query, name);
            keys::list_keys(ports, q("tenant"), q("limit"), q("cursor")).await
        }
        AdminRoute::CreateKey => keys::create_key(ports, body, audit).await,
        AdminRoute::GetKey(id) => keys::get_key(ports, &id).await,
        AdminRoute::RevokeKey(id) => keys::revoke_key(ports, memo, &id, audit).await,
        AdminRoute::RotateKey(id) => keys::rotate_key(ports, memo, &id, audit).await,
        AdminRoute::Usage => usage::get_usage(ports, &query, audit).await,
        AdminRoute::PurgeCache => usage::purge_cache(ports, recent, body).await,
        AdminRoute::ListAccessRequests => access::list(ports, &query).await,
        AdminRoute::GetAccessRequest(id) => access::get(ports, &id, audit).await,
        AdminRoute::ApproveAccess(id) => access::decide(ports, memo, &id, true, body, audit).await,
        AdminRoute::DenyAccess(id) => access::decide(ports, memo, &id, false, body, audit).await,
    };
    handled.map(|(status, body)| Reply::Json(status, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::admin::config::valid_version;
    use crate::gateway::auth::{authenticate, presented, Target};
    use crate::gateway::features::identity::JwtConfig;
    use crate::gateway::features::keys;
    use crate::gateway::features::limits::{admit, Limiter, LimitsConfig};
    use crate::gateway::features::usage::{Accounting, Outcome, Price, UsageBook};
    use crate::gateway::ports::memory::{block_on, MemoryHost};
    use crate::gateway::ports::UpstreamError;
    use crate::gateway::types::Usage;
    use crate::gateway::util::time::{day_string, days_of};
    use http::Method;
    use serde_json::json;
    use std::rc::Rc;

    const TOKEN: &str = "admin-token-e2e-0123456789";

    fn host() -> MemoryHost {
        MemoryHost::new(|_| Err(UpstreamError::Timeout)).with_secret(ADMIN_TOKEN_SECRET, TOKEN)
    }

    fn config(version: &str) -> Value {
        json!({"version": version, "endpoints": [
            {"name": "chat", "endpoint_type": "llm/v1/chat",
             "model": {"provider": "openai", "name": "gpt-4o-mini", "config": {"openai_api_key": "$OPENAI_API_KEY"}}},
            {"name": "embeddings", "endpoint_type": "llm/v1/embeddings",
             "model": {"provider": "openai", "name": "text-embedding-3-small", "config": {"openai_api_key": "$OPENAI_API_KEY"}}}
        ]})
    }

    fn call(
        host: &MemoryHost,
        memo: &AuthMemo,
        method: Method,
        uri: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> AdminResponse {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let body = body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default();
        block_on(handle(host, memo, &Recent::default(), &builder.body(body).unwrap()))
    }

    fn admin(host: &MemoryHost, memo: &AuthMemo, method: Method, uri: &str, body: Option<Value>) -> AdminResponse {
        call(host, memo, method, uri, body, Some(TOKEN))
    }

    fn audit(r: &AdminResponse) -> Value {
        serde_json::from_str(&r.audit).unwrap()
    }

    /// A purge clears this isolate's memory level of the cache only once its request is valid.
    #[test]
    fn an_invalid_purge_leaves_the_memory_cache() {
        use crate::gateway::features::cache::Entry;
        use crate::gateway::types::Operation;
        let host = host();
        let memo = AuthMemo::default();
        let recent = Recent::default();
        let now = host.now_ms.get();
        let entry = Entry {
            created_ms: now,
            ttl_secs: 300,
            endpoint: "chat".into(),
            op: Operation::Chat,
            body: b"{}".to_vec(),
            usage: None,
        };
        recent.put(b"k", Rc::new(entry), now);
        let purge = |body: Value| {
            let request = Request::builder()
                .method(Method::POST)
                .uri("/admin/cache/purge")
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(serde_json::to_vec(&body).unwrap())
                .unwrap();
            block_on(handle(&host, &memo, &recent, &request))
        };
        let r = purge(json!({"tenant": "acme", "shared": true}));
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert!(recent.get(b"k", now).is_some(), "kept after a refused purge");
        let r = purge(json!({"tenant": "acme"}));
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(recent.get(b"k", now).is_none(), "cleared by the purge");
    }

    #[test]
    fn every_route_needs_the_admin_token() {
        let host = host();
        let memo = AuthMemo::default();
        for (token, status) in [(None, 401), (Some("wrong"), 401), (Some(""), 401), (Some(TOKEN), 200)] {
            let r = call(&host, &memo, Method::GET, "/admin/keys", None, token);
            assert_eq!(r.status.as_u16(), status, "{token:?}");
            let a = audit(&r);
            assert_eq!(a["audit"], "admin");
            assert_eq!(a["outcome"], if status == 200 { "ok" } else { "denied" });
            assert!(!r.audit.contains(TOKEN) && !r.body.to_string().contains(TOKEN));
        }
        // Unknown admin paths are not revealed to callers without the token.
        assert_eq!(call(&host, &memo, Method::GET, "/admin/nothing", None, None).status, StatusCode::UNAUTHORIZED);
        assert_eq!(admin(&host, &memo, Method::GET, "/admin/nothing", None).status, StatusCode::NOT_FOUND);
        assert_eq!(admin(&host, &memo, Method::DELETE, "/admin/keys", None).status, StatusCode::METHOD_NOT_ALLOWED);

        let off = MemoryHost::new(|_| Err(UpstreamError::Timeout));
        let r = call(&off, &memo, Method::GET, "/admin/keys", None, Some(TOKEN));
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("GATEWAY_ADMIN_TOKEN"));
    }

    #[test]
    fn apply_get_versions_and_rollback() {
        let host = host();
        let memo = AuthMemo::default();
        let mut bad = config("v2");
        bad["endpoints"][0]["endpoint_type"] = json!("llm/v1/chatt");
        let r = admin(&host, &memo, Method::POST, "/admin/config", Some(bad));
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.body["error"]["code"], "config_invalid");
        assert_eq!(r.body["issues"][0]["path"], "endpoints[0].endpoint_type");
        assert!(r.body["issues"][0]["message"].as_str().unwrap().contains("did you mean \"llm/v1/chat\""));
        assert!(host.kv.borrow().is_empty(), "nothing stored");

        let r = admin(&host, &memo, Method::POST, "/admin/config?dry_run=true", Some(config("v1")));
        assert_eq!((r.status, &r.body["valid"]), (StatusCode::OK, &json!(true)));
        assert!(host.kv.borrow().is_empty(), "dry run stores nothing");

        let r = admin(&host, &memo, Method::POST, "/admin/config", Some(config("v1")));
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["endpoints"], json!(["chat", "embeddings"]));
        assert_eq!(audit(&r)["action"], "config.apply");
        assert_eq!(audit(&r)["version"], "v1");
        let mut v2 = config("v2");
        v2["endpoints"].as_array_mut().unwrap().pop();
        let r = admin(&host, &memo, Method::POST, "/admin/config", Some(v2.clone()));
        assert_eq!((r.status, &r.body["previous"]), (StatusCode::OK, &json!("v1")));
        assert!(host.kv.borrow().contains_key("config:v:v1") && host.kv.borrow().contains_key("config:v:v2"));

        let r = admin(&host, &memo, Method::GET, "/admin/config", None);
        assert_eq!(r.body, v2);
        assert_eq!(
            r.body["endpoints"][0]["model"]["config"]["openai_api_key"], "$OPENAI_API_KEY",
            "references, not values"
        );

        // Same version, different content: refused.
        let r = admin(&host, &memo, Method::POST, "/admin/config", Some(config("v2")));
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("version_exists")));

        let r = admin(&host, &memo, Method::GET, "/admin/config/versions", None);
        assert_eq!(r.body, json!({"active": "v2", "versions": ["v1", "v2"]}));

        let r = admin(&host, &memo, Method::POST, "/admin/config/rollback", Some(json!({"version": "v0"})));
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("did you mean \"v1\""), "{}", r.body);
        let r = admin(&host, &memo, Method::POST, "/admin/config/rollback", Some(json!({"version": "v1"})));
        assert_eq!((r.status, &r.body["previous"]), (StatusCode::OK, &json!("v2")));
        assert_eq!(admin(&host, &memo, Method::GET, "/admin/config", None).body, config("v1"));
        assert_eq!(audit(&r)["action"], "config.rollback");

        // Re-applying a known version with the same content switches back to it.
        assert_eq!(admin(&host, &memo, Method::POST, "/admin/config", Some(v2.clone())).status, StatusCode::OK);
        assert_eq!(admin(&host, &memo, Method::GET, "/admin/config", None).body, v2);
    }

    #[test]
    fn config_without_version_gets_one_and_literal_secrets_are_refused() {
        let host = host();
        let memo = AuthMemo::default();
        let mut c = config("x");
        c.as_object_mut().unwrap().remove("version");
        let r = admin(&host, &memo, Method::POST, "/admin/config", Some(c.clone()));
        assert_eq!(r.status, StatusCode::OK);
        let version = r.body["version"].as_str().unwrap().to_string();
        assert!(valid_version(&version), "{version}");
        let got = admin(&host, &memo, Method::GET, "/admin/config", None).body;
        assert_eq!(got["version"], version.as_str());
        // L3: a literal credential would be stored in config:active and every config:v:*.
        c["endpoints"][0]["model"]["config"]["openai_api_key"] = json!("sk-live-literal");
        c["version"] = json!("lit");
        let r = admin(&host, &memo, Method::POST, "/admin/config", Some(c));
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(r.body["issues"][0]["path"], "endpoints[0].model.config.openai_api_key", "{}", r.body);
        assert!(!r.body.to_string().contains("sk-live-literal") && !r.audit.contains("sk-live-literal"));
        assert!(host.kv.borrow().keys().all(|k| k != "config:v:lit"));
        // A literal already in KV (written by other means) is still redacted on read.
        let mut stored = config("old");
        stored["endpoints"][0]["model"]["config"]["openai_api_key"] = json!("sk-live-literal");
        host.kv.borrow_mut().insert("config:active".into(), serde_json::to_vec(&stored).unwrap());
        let got = admin(&host, &memo, Method::GET, "/admin/config", None).body;
        assert_eq!(got["endpoints"][0]["model"]["config"]["openai_api_key"], "[redacted]");
        assert_eq!(got["endpoints"][1]["model"]["config"]["openai_api_key"], "$OPENAI_API_KEY");
        let bad = admin(&host, &memo, Method::POST, "/admin/config", Some(json!({"version": "../x", "endpoints": []})));
        assert_eq!(bad.body["error"]["code"], "invalid_version");
        let bad = admin(&host, &memo, Method::POST, "/admin/config", Some(json!([1])));
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn keys_create_list_revoke_rotate_and_plaintext_never_kept() {
        let host = host();
        let memo = AuthMemo::default();
        admin(&host, &memo, Method::POST, "/admin/config", Some(config("v1")));
        let r = admin(
            &host,
            &memo,
            Method::POST,
            "/admin/keys",
            Some(
                json!({"tenant": "acme", "name": "ci", "endpoints": ["chat", "chta"], "rpm": 5, "budget_usd": 2.5, "budget_period": "day"}),
            ),
        );
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let key = r.body["key"].as_str().unwrap().to_string();
        let id = r.body["id"].as_str().unwrap().to_string();
        assert!(keys::looks_like_key(&key));
        let warnings: Vec<&str> = r.body["warnings"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(
            warnings.contains(&"endpoint \"chta\" is not in the active config (did you mean \"chat\"?)"),
            "{warnings:?}"
        );
        assert!(r.body.get("hash").is_none());
        assert!(!r.audit.contains(&key) && r.audit.contains(&id));

        let everything = format!("{:?}", host.kv.borrow());
        assert!(!everything.contains(&key), "the plaintext is never stored");

        let list = admin(&host, &memo, Method::GET, "/admin/keys?tenant=acme", None);
        assert_eq!(list.body["keys"].as_array().unwrap().len(), 1);
        assert_eq!(list.body["keys"][0]["id"], id.as_str());
        assert_eq!(list.body["keys"][0]["state"], "active");
        assert!(!list.body.to_string().contains(&key) && list.body["keys"][0].get("hash").is_none());
        assert_eq!(admin(&host, &memo, Method::GET, "/admin/keys?tenant=other", None).body["keys"], json!([]));
        assert_eq!(admin(&host, &memo, Method::GET, &format!("/admin/keys/{id}"), None).body["rpm"], 5);

        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {key}").parse().unwrap());
        assert!(block_on(authenticate(
            &host,
            &memo,
            presented(&headers, None),
            &JwtConfig::default(),
            Target::new("chat", false)
        ))
        .is_ok());

        // Rotate: the old key stops at once in this isolate, the new one works.
        let r = admin(&host, &memo, Method::POST, &format!("/admin/keys/{id}/rotate"), None);
        assert_eq!(r.status, StatusCode::OK);
        let new_key = r.body["key"].as_str().unwrap().to_string();
        assert_ne!(new_key, key);
        assert_eq!(
            block_on(authenticate(
                &host,
                &memo,
                presented(&headers, None),
                &JwtConfig::default(),
                Target::new("chat", false)
            ))
            .unwrap_err()
            .code,
            "invalid_api_key"
        );
        let mut new_headers = http::HeaderMap::new();
        new_headers.insert("x-api-key", new_key.parse().unwrap());
        assert_eq!(
            block_on(authenticate(
                &host,
                &memo,
                presented(&new_headers, None),
                &JwtConfig::default(),
                Target::new("chat", false)
            ))
            .unwrap()
            .unwrap()
            .id,
            id
        );

        // Revoke: refused at once in this isolate (the memo entry is dropped).
        let r = admin(&host, &memo, Method::POST, &format!("/admin/keys/{id}/revoke"), None);
        assert_eq!((r.status, &r.body["state"]), (StatusCode::OK, &json!("revoked")));
        assert_eq!(audit(&r)["key_id"], id.as_str());
        assert_eq!(
            block_on(authenticate(
                &host,
                &memo,
                presented(&new_headers, None),
                &JwtConfig::default(),
                Target::new("chat", false)
            ))
            .unwrap_err()
            .code,
            "invalid_api_key"
        );
        assert_eq!(
            admin(&host, &memo, Method::POST, &format!("/admin/keys/{id}/rotate"), None).status,
            StatusCode::CONFLICT
        );
        assert_eq!(admin(&host, &memo, Method::POST, "/admin/keys/k_ffff/revoke", None).status, StatusCode::NOT_FOUND);
        assert_eq!(admin(&host, &memo, Method::POST, "/admin/keys/..%2F/revoke", None).status, StatusCode::NOT_FOUND);
        let everything = format!("{:?}", host.kv.borrow());
        assert!(!everything.contains(&key) && !everything.contains(&new_key));
    }

    #[test]
    fn key_requests_are_validated() {
        let host = host();
        let memo = AuthMemo::default();
        let r = admin(
            &host,
            &memo,
            Method::POST,
            "/admin/keys",
            Some(
                json!({"tenant": "a b", "rmp": 5, "endpoints": [], "budget_period": "week", "expires_at": 1, "expires_in": 2}),
            ),
        );
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let text = r.body["issues"].to_string();
        for expected in [
            "did you mean \\\"rpm\\\"",
            "\"tenant\"",
            "\"endpoints\"",
            "unknown budget period \\\"week\\\"",
            "not both",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
        let r = admin(&host, &memo, Method::POST, "/admin/keys", Some(json!({"name": "x"})));
        assert!(r.body["issues"].to_string().contains("is required"));
        let r = admin(&host, &memo, Method::POST, "/admin/keys", Some(json!({"tenant": "t", "expires_in": 60})));
        assert_eq!(r.body["expires_at"], host.now_ms.get() / 1000 + 60);
        assert_eq!(r.body["endpoints"], json!(["*"]));
    }

    /// M3: two rotations of one key racing (interleaved at every KV call) leave exactly one
    /// working key, and it is the one the key list shows: no active key hides from list/revoke.
    #[test]
    fn racing_rotations_leave_no_hidden_active_key() {
        use crate::gateway::ports::memory::run_interleaved;
        use std::future::Future;
        use std::pin::Pin;
        let host = host();
        let memo = AuthMemo::default();
        let created = admin(&host, &memo, Method::POST, "/admin/keys", Some(json!({"tenant": "acme"})));
        let (old, id) =
            (created.body["key"].as_str().unwrap().to_string(), created.body["id"].as_str().unwrap().to_string());
        host.kv_yield.set(true);
        let rotate = || {
            Request::builder()
                .method(Method::POST)
                .uri(format!("/admin/keys/{id}/rotate"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Vec::new())
                .unwrap()
        };
        let (a, b) = (rotate(), rotate());
        let memos = (AuthMemo::default(), AuthMemo::default());
        let recent = Recent::default();
        let futures: Vec<Pin<Box<dyn Future<Output = AdminResponse> + '_>>> =
            vec![Box::pin(handle(&host, &memos.0, &recent, &a)), Box::pin(handle(&host, &memos.1, &recent, &b))];
        let answers = run_interleaved(futures);
        host.kv_yield.set(false);
        let mut candidates = vec![old];
        candidates.extend(answers.iter().filter_map(|r| r.body["key"].as_str().map(str::to_string)));
        let live: Vec<&String> = candidates
            .iter()
            .filter(|k| {
                let mut headers = http::HeaderMap::new();
                headers.insert("authorization", format!("Bearer {k}").parse().unwrap());
                block_on(authenticate(
                    &host,
                    &AuthMemo::default(),
                    presented(&headers, None),
                    &JwtConfig::default(),
                    Target::new("chat", false),
                ))
                .is_ok()
            })
            .collect();
        assert_eq!(live.len(), 1, "exactly one key works");
        let listed = keys::by_id(&host, &id);
        assert_eq!(block_on(listed).unwrap().unwrap().hash, keys::hash_key(live[0]), "and list/revoke see it");
    }

    /// H3: a key's residency pin must name a region of the active config.
    #[test]
    fn key_region_is_checked_against_the_config() {
        let host = host();
        let memo = AuthMemo::default();
        let mut c = config("v1");
        c["regions"] = json!({"eu": {"continents": ["EU"]}, "us": {"continents": ["NA"]}});
        assert_eq!(admin(&host, &memo, Method::POST, "/admin/config", Some(c)).status, StatusCode::OK);
        let r = admin(&host, &memo, Method::POST, "/admin/keys", Some(json!({"tenant": "t", "region": "euu"})));
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert!(r.body["issues"].to_string().contains("did you mean \\\"eu\\\""), "{}", r.body);
        let r = admin(&host, &memo, Method::POST, "/admin/keys", Some(json!({"tenant": "t", "region": "eu"})));
        assert_eq!((r.status, &r.body["region"]), (StatusCode::CREATED, &json!("eu")));
    }

    /// M2: unpriced models are named when a config is applied and when a key with a budget is
    /// created (such requests are refused: a budget could not be enforced on them).
    #[test]
    fn unpriced_models_are_warned_about() {
        let host = host();
        let memo = AuthMemo::default();
        let mut c = config("v1");
        c["prices"] = json!({"openai/gpt-4o-mini": {"input_per_1m": 0.15, "output_per_1m": 0.6}});
        let r = admin(&host, &memo, Method::POST, "/admin/config", Some(c));
        assert_eq!(r.status, StatusCode::OK);
        let warnings = r.body["warnings"].to_string();
        assert!(warnings.contains("\\\"embeddings\\\"") && !warnings.contains("\\\"chat\\\""), "{}", r.body);
        let r = admin(&host, &memo, Method::POST, "/admin/keys", Some(json!({"tenant": "t", "budget_usd": 1})));
        assert_eq!(r.status, StatusCode::CREATED);
        assert!(r.body["warnings"].to_string().contains("embeddings"), "{}", r.body);
        let r = admin(
            &host,
            &memo,
            Method::POST,
            "/admin/keys",
            Some(json!({"tenant": "t", "endpoints": ["chat"], "budget_usd": 1})),
        );
        assert!(r.body.get("warnings").is_none(), "{}", r.body);
    }

    /// M5: Cloudflare caps KV operations per invocation, so no admin call makes one per item
    /// without bound: key listings are pages (cursor), purges delete at most a batch per call,
    /// usage queries read at most a batch of shards per call (and compact finished days).
    #[test]
    fn admin_calls_make_a_bounded_number_of_kv_operations() {
        use crate::gateway::features::usage::{DayUsage, MAX_KV_READS};
        let host = host();
        let memo = AuthMemo::default();
        for i in 0..250 {
            let tenant = if i % 2 == 0 { "even" } else { "odd" };
            assert_eq!(
                admin(&host, &memo, Method::POST, "/admin/keys", Some(json!({"tenant": tenant}))).status,
                StatusCode::CREATED
            );
        }
        let mut seen = std::collections::HashSet::new();
        let mut uri = "/admin/keys".to_string();
        loop {
            let before = host.kv_ops.get();
            let r = admin(&host, &memo, Method::GET, &uri, None);
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            assert!(host.kv_ops.get() - before <= 2 * 100 + 2, "{} KV operations", host.kv_ops.get() - before);
            for k in r.body["keys"].as_array().unwrap() {
                assert!(seen.insert(k["id"].as_str().unwrap().to_string()), "no key twice");
            }
            match r.body["next_cursor"].as_str() {
                Some(cursor) => uri = format!("/admin/keys?cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), 250);
        let r = admin(&host, &memo, Method::GET, "/admin/keys?tenant=odd&limit=1000", None);
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "limit is capped: {}", r.body);

        for i in 0..1200 {
            host.kv.borrow_mut().insert(format!("cache:acme:chat:{i:064}"), b"{}".to_vec());
        }
        let mut calls = 0;
        loop {
            let before = host.kv_ops.get();
            let r = admin(&host, &memo, Method::POST, "/admin/cache/purge", Some(json!({"tenant": "acme"})));
            assert!(host.kv_ops.get() - before <= 501 + 1, "{}", host.kv_ops.get() - before);
            calls += 1;
            if r.body["more"] != true {
                break;
            }
        }
        assert_eq!(calls, 3);
        assert!(host.kv.borrow().keys().all(|k| !k.starts_with("cache:")));

        // 900 shards of one old day (as a busy Spin day leaves them): a query reads a bounded
        // number per call and compacts what it read; until it could read everything it says
        // `partial` (call again), then the total is exact and the day is one entry.
        let day = crate::gateway::util::time::days_of(host.now_ms.get()) - 5;
        let date = crate::gateway::util::time::day_string(day);
        for i in 0..900 {
            let shard = DayUsage { requests: 1, prompt_tokens: 2, ..DayUsage::default() };
            host.kv.borrow_mut().insert(format!("usage:k_00aa:{date}:{i:016x}"), shard.to_json());
        }
        let mut answer = Value::Null;
        for _ in 0..10 {
            let before = host.kv_ops.get();
            answer =
                admin(&host, &memo, Method::GET, &format!("/admin/usage?key=k_00aa&from={date}&to={date}"), None).body;
            assert!(host.kv_ops.get() - before <= 3 * MAX_KV_READS as u64, "{}", host.kv_ops.get() - before);
            if answer["partial"] != true {
                break;
            }
        }
        assert_eq!(answer["total"]["requests"], 900, "every shard counted once: {answer}");
        assert_eq!(answer["total"]["prompt_tokens"], 1800);
        let shards = host.kv.borrow().keys().filter(|k| k.starts_with("usage:k_00aa:")).count();
        assert_eq!(shards, 1, "the finished day was compacted into one entry");
        let r = admin(&host, &memo, Method::GET, &format!("/admin/usage?key=k_00aa&from={date}&to={date}"), None);
        assert_eq!((r.body["total"]["requests"].as_u64(), r.body.get("partial")), (Some(900), None));

        // The same for the request tallies behind /admin/usage/series and /admin/metrics.
        let shard =
            json!({"series": [{"endpoint": "chat", "tenant": "acme", "status": 200, "counts": {"requests": 1}}]});
        for i in 0..900 {
            host.kv.borrow_mut().insert(format!("metrics:{date}:{i:016x}"), serde_json::to_vec(&shard).unwrap());
        }
        let uri = format!("/admin/usage/series?from={date}&to={date}");
        let mut answer = Value::Null;
        for _ in 0..10 {
            let before = host.kv_ops.get();
            answer = admin(&host, &memo, Method::GET, &uri, None).body;
            assert!(host.kv_ops.get() - before <= 3 * MAX_KV_READS as u64, "{}", host.kv_ops.get() - before);
            if answer["partial"] != true {
                break;
            }
        }
        assert_eq!(answer["days"][0]["series"][0]["requests"], 900, "every shard counted once: {answer}");
        let shards = host.kv.borrow().keys().filter(|k| k.starts_with(&format!("metrics:{date}:"))).count();
        assert_eq!(shards, 1, "the finished day was compacted into one entry");
    }

    /// L1: `public` is the tenant of anonymous requests (their cache namespace): no key and no
    /// tenant budget may take the name.
    #[test]
    fn tenant_public_is_reserved() {
        let host = host();
        let memo = AuthMemo::default();
        let r = admin(&host, &memo, Method::POST, "/admin/keys", Some(json!({"tenant": "public"})));
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert!(r.body["issues"].to_string().contains("reserved"), "{}", r.body);
        let mut c = config("v1");
        c["limits"] = json!({"tenants": {"public": {"budget_usd": 1}}});
        let r = admin(&host, &memo, Method::POST, "/admin/config", Some(c));
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert!(r.body["issues"].to_string().contains("reserved"), "{}", r.body);
    }

    /// Every body is bounded: one over the admin limit is refused before it is parsed, on
    /// every route that takes one; a body at the limit is parsed and answered for what it says.
    #[test]
    fn admin_bodies_over_the_limit_are_refused() {
        let host = host();
        let memo = AuthMemo::default();
        let padded = |len: usize| {
            let mut body = br#"{"tenant": "t", "note": ""#.to_vec();
            body.resize(len - 2, b'a');
            body.extend_from_slice(br#""}"#);
            body
        };
        for uri in ["/admin/config", "/admin/keys", "/admin/config/rollback", "/admin/cache/purge"] {
            let request = |body: Vec<u8>| {
                let request =
                    Request::builder().method(Method::POST).uri(uri).header("authorization", format!("Bearer {TOKEN}"));
                block_on(handle(&host, &memo, &Recent::default(), &request.body(body).unwrap()))
            };
            let r = request(padded(MAX_ADMIN_BODY_BYTES + 1));
            assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}: {}", r.body);
            assert_eq!(r.body["error"]["code"], "request_too_large", "{uri}: {}", r.body);
            assert!(r.body["error"]["message"].as_str().unwrap().contains("4194304 bytes"), "{}", r.body);
            let r = request(padded(MAX_ADMIN_BODY_BYTES));
            assert!(matches!(r.status.as_u16(), 200 | 400), "{uri}: {} {}", r.status, r.body);
        }
    }

    /// L5: `expires_in` near u64::MAX is refused, not wrapped into the past.
    #[test]
    fn huge_expires_in_is_refused() {
        let host = host();
        let memo = AuthMemo::default();
        let r = admin(&host, &memo, Method::POST, "/admin/keys", Some(json!({"tenant": "t", "expires_in": u64::MAX})));
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert!(r.body["issues"].to_string().contains("expires_in"), "{}", r.body);
    }

    /// The pipeline's order, with the admin API around it: create a key, authenticate, admit,
    /// account for several answers; the usage API returns exactly their sum.
    #[test]
    fn usage_api_returns_the_sum_of_accounted_requests() {
        let host = host();
        let memo = AuthMemo::default();
        let limiter = Rc::new(Limiter::new());
        let book = Rc::new(UsageBook::new());
        let r = admin(
            &host,
            &memo,
            Method::POST,
            "/admin/keys",
            Some(json!({"tenant": "acme", "rpm": 100, "budget_usd": 10})),
        );
        let (key, id) = (r.body["key"].as_str().unwrap().to_string(), r.body["id"].as_str().unwrap().to_string());
        let mut headers = http::HeaderMap::new();
        headers.insert("api-key", key.parse().unwrap());
        let price = Price { input_per_1m: 0.15, output_per_1m: 0.6 };
        let usages = [(3, 5), (10, 0), (7, 9)];
        let mut lines = Vec::new();
        for (prompt, completion) in usages {
            let record = block_on(authenticate(
                &host,
                &memo,
                presented(&headers, None),
                &JwtConfig::default(),
                Target::new("chat", false),
            ))
            .unwrap()
            .unwrap();
            let admission = block_on(admit(
                &host,
                &limiter,
                &LimitsConfig::default(),
                Some(&record),
                "chat",
                None,
                Default::default(),
            ))
            .unwrap();
            let accounting = Accounting::new(&book, Some(&record), Some(price), host.now_ms.get(), Some(admission));
            let outcome = Outcome {
                usage: Some(Usage { prompt_tokens: prompt, completion_tokens: completion }),
                status: 200,
                latency_ms: 20,
                cache_hit: false,
            };
            let (log, unbooked) = block_on(accounting.close(&host, outcome).write(&host));
            assert_eq!(unbooked, None, "booked where the host keeps state");
            assert_eq!(log.accounting_error, None);
            assert_eq!(log.limits, "kv");
            lines.push(serde_json::to_string(&log).unwrap());
        }
        assert!(lines.iter().all(|l| l.contains(&id) && !l.contains(&key)), "{lines:?}");
        let r = admin(&host, &memo, Method::GET, &format!("/admin/usage?key={id}"), None);
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["total"]["requests"], 3);
        assert_eq!(r.body["total"]["prompt_tokens"], 20);
        assert_eq!(r.body["total"]["completion_tokens"], 14);
        let expected_nusd: u64 =
            usages.iter().map(|(p, c)| price.cost_nusd(Usage { prompt_tokens: *p, completion_tokens: *c })).sum();
        assert_eq!(r.body["total"]["cost_usd"], json!(expected_nusd as f64 / 1e9));
        let t = admin(&host, &memo, Method::GET, "/admin/usage?tenant=acme&from=2000-01-01&to=2000-01-02", None);
        assert_eq!(t.body["total"]["requests"], 0);
        let today = day_string(days_of(host.now_ms.get()));
        let t = admin(&host, &memo, Method::GET, &format!("/admin/usage?tenant=acme&from={today}&to={today}"), None);
        assert_eq!(t.body["total"]["prompt_tokens"], 20);
        assert_eq!(admin(&host, &memo, Method::GET, "/admin/usage", None).body["error"]["code"], "missing_subject");
        assert_eq!(
            admin(&host, &memo, Method::GET, "/admin/usage?key=k_01&from=2024-02-30", None).body["error"]["code"],
            "invalid_date"
        );
    }

    #[test]
    fn never_panics_on_odd_requests() {
        let host = host();
        let memo = AuthMemo::default();
        for (method, uri, body) in [
            (Method::POST, "/admin/config", &b"\xff\xfe"[..]),
            (Method::POST, "/admin/config/rollback", b"{}"),
            (Method::POST, "/admin/config/rollback", b"{\"version\": {}}"),
            (Method::POST, "/admin/keys", b"null"),
            (Method::GET, "/admin/usage?key=%zz&tenant=%", b""),
            (Method::GET, "/admin/keys/%FF%FE", b""),
            (Method::GET, "/admin//", b""),
            (Method::GET, "/admin", b""),
        ] {
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(body.to_vec())
                .unwrap();
            let r = block_on(handle(&host, &memo, &Recent::default(), &request));
            assert!(r.status.is_client_error(), "{uri}: {}", r.status);
            assert!(r.body["error"]["message"].is_string());
        }
    }
}
