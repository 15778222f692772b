//! `POST /v1/access-requests {"endpoint", "reason"}`: an authenticated caller (API key or
//! JWT) asks for access to an endpoint marked `access: approval`. Idempotent per caller and
//! endpoint (`features::access`): 201 with the new request, 200 with the existing one.
//! Every call leaves one audit line (`"audit": "access"`) instead of a request log line.

use std::rc::Rc;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use crate::gateway::auth::{self, CallerKind};
use crate::gateway::config::Config;
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::access::{self, AccessRequest, Asked, State, MAX_REASON_CHARS};
use crate::gateway::features::normalize;
use crate::gateway::pipeline::account::{Deferred, Observed, Pending};
use crate::gateway::pipeline::context::IsolateState;
use crate::gateway::pipeline::log::LogRecord;
use crate::gateway::pipeline::respond::{self, json_response, ResponseBody};
use crate::gateway::ports::Ports;
use crate::gateway::util::text::truncate;

/// The audit line of one access request.
#[derive(Debug, Default, Serialize)]
struct AccessAudit {
    ts: u64,
    audit: &'static str,
    action: &'static str,
    request_id: String,
    outcome: &'static str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    principal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorCode>,
}

/// Serves the request; `config` is the active config (or why there is none). Returns the
/// response and the after-response work (the audit line).
pub async fn serve<P: Ports>(
    ports: &P,
    state: &IsolateState,
    config: Result<Rc<Config>>,
    request: Request<Vec<u8>>,
    mut log: LogRecord,
) -> (Response<ResponseBody<P::Body>>, Deferred) {
    let mut audit = AccessAudit {
        ts: log.ts,
        audit: "access",
        action: "access.request",
        request_id: log.request_id.clone(),
        ..AccessAudit::default()
    };
    let answer = match config {
        Ok(config) => ask(ports, state, &config, &request, &mut audit).await,
        Err(e) => Err(e),
    };
    let mut response: Response<ResponseBody<P::Body>> = match answer {
        Ok((asked, record)) => {
            audit.outcome = asked.as_str();
            let status = if asked == Asked::Existing { StatusCode::OK } else { StatusCode::CREATED };
            json_response(status, &json!(record))
        }
        Err(error) => {
            audit.outcome = if error.status.is_server_error() { "error" } else { "refused" };
            audit.error = Some(error.code);
            log.error = Some(error.code);
            respond::error_response(&error)
        }
    };
    response.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(id) = HeaderValue::from_str(&log.request_id) {
        response.headers_mut().insert("x-request-id", id);
    }
    audit.status = response.status().as_u16();
    log.status = audit.status;
    let line = serde_json::to_string(&audit).unwrap_or_default();
    (response, Deferred { log, pending: Pending::default(), audit: Some(line), observed: Observed::default() })
}

async fn ask<P: Ports>(
    ports: &P,
    state: &IsolateState,
    config: &Config,
    request: &Request<Vec<u8>>,
    audit: &mut AccessAudit,
) -> Result<(Asked, AccessRequest)> {
    if request.method() != Method::POST {
        return Err(GatewayError::method_not_allowed(format!(
            "/v1/access-requests accepts POST, not {}",
            request.method()
        )));
    }
    // Who asks first: an unauthenticated caller learns nothing about the endpoints.
    let caller = auth::caller(ports, &state.auth, auth::presented(request.headers(), None), &config.auth.jwt, false)
        .await?
        .ok_or_else(auth::missing_key)?;
    let record = &caller.record;
    audit.principal = Some(record.id.clone());
    audit.tenant = Some(record.tenant.clone());
    audit.kind = Some(caller.kind.as_str());

    let body =
        normalize::parse_json_object(request.body(), config.settings.max_body_bytes, config.settings.body_bounds())?;
    if let Some(field) = body.keys().find(|k| !matches!(k.as_str(), "endpoint" | "reason")) {
        return Err(invalid(format!("unknown field \"{}\" (expected: endpoint, reason)", truncate(field, 40))));
    }
    let name = match body.get("endpoint") {
        Some(Value::String(name)) if !name.is_empty() => name.as_str(),
        _ => return Err(invalid("`endpoint` is required: the name of the endpoint you ask access to")),
    };
    let reason = match body.get("reason") {
        Some(Value::String(reason)) if !reason.trim().is_empty() && access::valid_text(reason, MAX_REASON_CHARS) => {
            reason.trim().to_string()
        }
        _ => {
            return Err(invalid(format!(
                "`reason` is required: why you need access, at most {MAX_REASON_CHARS} characters"
            )))
        }
    };
    let Some(endpoint) = config.endpoint(name) else {
        let what = if config.routes.contains_key(name) {
            "is a traffic route: ask for its endpoints"
        } else {
            "does not exist"
        };
        return Err(GatewayError::not_found(
            ErrorCode::ModelNotFound,
            format!("endpoint \"{}\" {what}", truncate(name, 64)),
        ));
    };
    audit.endpoint = Some(endpoint.name.clone());
    if endpoint.access != access::Access::Approval {
        return Err(invalid(format!("endpoint \"{}\" does not require approval", endpoint.name)));
    }
    if !record.allows(&endpoint.name) {
        return Err(auth::endpoint_not_allowed(&endpoint.name));
    }
    let now = ports.now_ms();
    let (subject, issuer) = match &caller.kind {
        CallerKind::Key => (record.name.clone(), None),
        CallerKind::Jwt { issuer, subject } => (subject.clone(), Some(issuer.clone())),
    };
    let draft = AccessRequest {
        id: access::request_id(&record.id, &endpoint.name),
        principal: record.id.clone(),
        kind: caller.kind.as_str().to_string(),
        subject,
        issuer,
        tenant: record.tenant.clone(),
        endpoint: endpoint.name.clone(),
        reason,
        state: State::Pending,
        created: now / 1000,
        updated: now / 1000,
        expires_at: None,
        note: None,
    };
    audit.access_request = Some(draft.id.clone());
    let (stored, asked) = access::ask(ports, draft, now).await?;
    Ok((asked, stored))
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(ErrorCode::InvalidAccessRequest, message)
}

#[cfg(test)]
mod tests {
    use crate::gateway::features::identity::testing;
    use crate::gateway::pipeline::{ClientInfo, Gateway, ResponseBody};
    use crate::gateway::ports::memory::{block_on, MemoryHost};
    use crate::gateway::ports::Clock;
    use http::{Method, Request, Response, StatusCode};
    use serde_json::{json, Value};

    const ADMIN: &str = "admin-token-0123456789";

    fn config() -> Value {
        let model = json!({"provider": "openai", "name": "gpt-4o-mini",
                           "config": {"openai_api_key": "$OPENAI_API_KEY", "openai_api_base": "http://origin.test/v1"}});
        json!({"version": "t1", "endpoints": [
            {"name": "chat", "endpoint_type": "llm/v1/chat", "model": model},
            {"name": "gated", "endpoint_type": "llm/v1/chat", "model": model, "access": "approval"},
            {"name": "open", "public": true, "endpoint_type": "llm/v1/chat", "model": model}
        ], "auth": {"jwt": {"issuers": [{
            "issuer": testing::ISSUER, "audiences": ["gw"], "jwks_url": "http://idp.test/jwks.json",
            "claims": {"tenant": "org_id", "endpoints": "groups", "endpoint_prefix": "gw:"},
            "policy": {"rpm": 100}
        }]}}})
    }

    fn host() -> MemoryHost {
        MemoryHost::new(|request| {
            let body = if request.uri().path() == "/jwks.json" {
                testing::jwks().to_string()
            } else {
                r#"{"id":"c1","object":"chat.completion","choices":[]}"#.to_string()
            };
            Ok(Response::builder().header("content-type", "application/json").body(body.into_bytes()).unwrap())
        })
        .with_secret("OPENAI_API_KEY", "sk-secret")
        .with_secret("GATEWAY_ADMIN_TOKEN", ADMIN)
        .with_kv("config:active", config().to_string())
    }

    struct Answer {
        status: StatusCode,
        body: Value,
        line: String,
        key_id: Option<String>,
    }

    fn call(gw: &Gateway, host: &MemoryHost, method: Method, path: &str, token: Option<&str>, body: Value) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
        let exchange = block_on(gw.handle(host, request.body(body).unwrap(), &ClientInfo::default()));
        let status = exchange.response.status();
        let body = match exchange.response.body() {
            ResponseBody::Full(bytes) => serde_json::from_slice(bytes).unwrap_or(Value::Null),
            _ => Value::Null,
        };
        let key_id = exchange.deferred.log.key_id.clone();
        let line = block_on(exchange.deferred.complete(host, None));
        Answer { status, body, line, key_id }
    }

    fn chat(gw: &Gateway, host: &MemoryHost, model: &str, token: &str) -> Answer {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        call(gw, host, Method::POST, "/v1/chat/completions", Some(token), body)
    }

    fn code(a: &Answer) -> &str {
        a.body["error"]["code"].as_str().unwrap_or("")
    }

    #[test]
    fn jwt_caller_asks_admin_approves_then_denies() {
        let host = host();
        let gw = Gateway::new();
        let mut claims = testing::claims_at(host.now_ms(), "gw");
        claims["groups"] = json!(["gw:chat", "gw:gated"]);
        let token = testing::sign_rs256(&claims, Some(testing::RSA_KID));

        let ok = chat(&gw, &host, "chat", &token);
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
        let principal = ok.key_id.clone().unwrap();
        assert!(principal.starts_with("j_"));
        assert!(ok.line.contains("\"tenant\":\"acme\""), "{}", ok.line);
        assert!(!ok.line.contains(&token) && !ok.line.contains(&token[token.len() - 20..]));

        let refused = chat(&gw, &host, "gated", &token);
        assert_eq!((refused.status, code(&refused)), (StatusCode::FORBIDDEN, "approval_required"));
        assert!(refused.body["error"]["message"].as_str().unwrap().contains("/v1/access-requests"));

        let ask = json!({"endpoint": "gated", "reason": "quarterly report"});
        let asked = call(&gw, &host, Method::POST, "/v1/access-requests", Some(&token), ask.clone());
        assert_eq!(asked.status, StatusCode::CREATED, "{}", asked.body);
        assert_eq!((asked.body["state"].as_str(), asked.body["kind"].as_str()), (Some("pending"), Some("jwt")));
        assert_eq!(asked.body["subject"], "alice");
        let id = asked.body["id"].as_str().unwrap().to_string();
        let audit: Value = serde_json::from_str(&asked.line).unwrap();
        assert_eq!(
            (audit["audit"].as_str(), audit["action"].as_str(), audit["outcome"].as_str()),
            (Some("access"), Some("access.request"), Some("created"))
        );
        assert_eq!(
            (audit["principal"].as_str(), audit["access_request"].as_str()),
            (Some(principal.as_str()), Some(id.as_str()))
        );
        assert!(!asked.line.contains(&token[token.len() - 20..]));
        let again = call(&gw, &host, Method::POST, "/v1/access-requests", Some(&token), ask);
        assert_eq!((again.status, again.body["id"].as_str()), (StatusCode::OK, Some(id.as_str())));

        let listed = call(&gw, &host, Method::GET, "/admin/access-requests", Some(ADMIN), Value::Null);
        assert_eq!(listed.body["requests"][0]["id"], id.as_str());
        let approve = call(
            &gw,
            &host,
            Method::POST,
            &format!("/admin/access-requests/{id}/approve"),
            Some(ADMIN),
            json!({"expires_in": 60, "note": "ok for Q3"}),
        );
        assert_eq!(approve.status, StatusCode::OK, "{}", approve.body);
        let audit: Value = serde_json::from_str(&approve.line).unwrap();
        assert_eq!((audit["action"].as_str(), audit["endpoint"].as_str()), (Some("access.approve"), Some("gated")));
        assert_eq!(chat(&gw, &host, "gated", &token).status, StatusCode::OK, "granted");

        let deny =
            call(&gw, &host, Method::POST, &format!("/admin/access-requests/{id}/deny"), Some(ADMIN), Value::Null);
        assert_eq!(deny.body["state"], "denied");
        assert_eq!(code(&chat(&gw, &host, "gated", &token)), "approval_required", "revoked in this isolate at once");

        // Approve again with an expiry: refused from that second on.
        call(
            &gw,
            &host,
            Method::POST,
            &format!("/admin/access-requests/{id}/approve"),
            Some(ADMIN),
            json!({"expires_in": 2}),
        );
        assert_eq!(chat(&gw, &host, "gated", &token).status, StatusCode::OK);
        host.advance(2_000);
        assert_eq!(code(&chat(&gw, &host, "gated", &token)), "approval_required");
    }

    #[test]
    fn api_key_callers_and_bad_requests() {
        let host = host();
        let gw = Gateway::new();
        let created = call(
            &gw,
            &host,
            Method::POST,
            "/admin/keys",
            Some(ADMIN),
            json!({"tenant": "t1", "endpoints": ["chat", "gated"]}),
        );
        let key = created.body["key"].as_str().unwrap().to_string();
        assert_eq!(code(&chat(&gw, &host, "gated", &key)), "approval_required");
        let ask = |body: Value, token: Option<&str>| call(&gw, &host, Method::POST, "/v1/access-requests", token, body);
        let asked = ask(json!({"endpoint": "gated", "reason": "need it"}), Some(&key));
        assert_eq!((asked.status, asked.body["kind"].as_str()), (StatusCode::CREATED, Some("key")));
        assert_eq!(asked.body["principal"], created.body["id"]);
        let id = asked.body["id"].as_str().unwrap();
        call(&gw, &host, Method::POST, &format!("/admin/access-requests/{id}/approve"), Some(ADMIN), Value::Null);
        assert_eq!(chat(&gw, &host, "gated", &key).status, StatusCode::OK);

        let long = "x".repeat(501);
        for (body, token, status, expected) in [
            (json!({"endpoint": "chat", "reason": "r"}), Some(key.as_str()), 400, "invalid_access_request"),
            (json!({"endpoint": "nope", "reason": "r"}), Some(&key), 404, "model_not_found"),
            (json!({"endpoint": "gated"}), Some(&key), 400, "invalid_access_request"),
            (json!({"endpoint": "gated", "reason": long}), Some(&key), 400, "invalid_access_request"),
            (json!({"endpoint": "gated", "reason": "r", "extra": 1}), Some(&key), 400, "invalid_access_request"),
            (json!({"endpoint": "gated", "reason": "r"}), None, 401, "missing_api_key"),
            (json!({"endpoint": "gated", "reason": "r"}), Some("egw_nope"), 401, "invalid_api_key"),
        ] {
            let a = ask(body, token);
            assert_eq!((a.status.as_u16(), code(&a)), (status, expected), "{}", a.body);
            let audit: Value = serde_json::from_str(&a.line).unwrap();
            assert_eq!((audit["outcome"].as_str(), audit["error"].as_str()), (Some("refused"), Some(expected)));
        }
        // A key not allowed the endpoint cannot ask for it.
        let other =
            call(&gw, &host, Method::POST, "/admin/keys", Some(ADMIN), json!({"tenant": "t1", "endpoints": ["chat"]}));
        let a = ask(json!({"endpoint": "gated", "reason": "r"}), other.body["key"].as_str());
        assert_eq!(code(&a), "endpoint_not_allowed");
        let get = call(&gw, &host, Method::GET, "/v1/access-requests", Some(&key), Value::Null);
        assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn jwt_refusals_through_the_pipeline() {
        let host = host();
        let gw = Gateway::new();
        let now = host.now_ms();
        let mut expired = testing::claims_at(now, "gw");
        expired["exp"] = json!(now / 1000 - 3600);
        let mut wrong_aud = testing::claims_at(now, "gw");
        wrong_aud["aud"] = json!("other");
        let mut groups = testing::claims_at(now, "gw");
        groups["groups"] = json!(["gw:chat"]);
        for (token, model, status, expected) in [
            (testing::sign_rs256(&expired, Some(testing::RSA_KID)), "chat", 401, "token_expired"),
            (testing::sign_es256(&wrong_aud, Some(testing::EC_KID)), "chat", 401, "token_audience"),
            (testing::sign_es256(&groups, Some(testing::EC_KID)), "gated", 403, "endpoint_not_allowed"),
        ] {
            let a = chat(&gw, &host, model, &token);
            assert_eq!((a.status.as_u16(), code(&a)), (status, expected), "{}", a.body);
            // On a public endpoint a refused token is ignored: served anonymously.
            assert_eq!(chat(&gw, &host, "open", &token).status, StatusCode::OK);
        }
    }
}
