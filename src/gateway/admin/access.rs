//! `/admin/access-requests`: list, read, approve, deny (the flow is in `features::access`).

use http::StatusCode;
use serde_json::{json, Value};

use crate::gateway::admin::answer::{parse_json, query_value, Audit, Handled};
use crate::gateway::auth::AuthMemo;
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::access::{self, AccessRequest, State, MAX_NOTE_CHARS};
use crate::gateway::features::limits::valid_tenant;
use crate::gateway::ports::Ports;
use crate::gateway::util::text::truncate;

const DECISION_FIELDS: &[&str] = &["expires_in", "expires_at", "note"];

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(ErrorCode::InvalidAccessRequest, message)
}

fn not_found(id: &str) -> GatewayError {
    GatewayError::not_found(ErrorCode::AccessRequestNotFound, format!("no access request \"{}\"", truncate(id, 40)))
}

fn fill(audit: &mut Audit, request: &AccessRequest) {
    audit.access_request = Some(request.id.clone());
    audit.principal = Some(request.principal.clone());
    audit.tenant = Some(request.tenant.clone());
    audit.endpoint = Some(request.endpoint.clone());
}

/// `GET /admin/access-requests?state=pending|approved|denied|all&tenant=T` (default: pending).
pub(super) async fn list<P: Ports>(ports: &P, query: &[(String, String)]) -> Handled {
    let state = match query_value(query, "state").unwrap_or("pending") {
        "all" => None,
        s => Some(State::parse(s).ok_or_else(|| {
            invalid(format!("state must be pending, approved, denied or all, not \"{}\"", truncate(s, 20)))
        })?),
    };
    let tenant = query_value(query, "tenant");
    if tenant.is_some_and(|t| !valid_tenant(t)) {
        return Err(GatewayError::bad_request(
            ErrorCode::InvalidTenant,
            "tenant: letters, digits, '_', '-', '.'; 1-64 chars",
        )
        .into());
    }
    let requests: Vec<AccessRequest> = access::list_requests(ports, state)
        .await?
        .into_iter()
        .filter(|r| tenant.is_none_or(|t| r.tenant == t))
        .collect();
    Ok((StatusCode::OK, json!({ "requests": requests })))
}

pub(super) async fn get<P: Ports>(ports: &P, id: &str, audit: &mut Audit) -> Handled {
    let request = access::load_request(ports, id).await?.ok_or_else(|| not_found(id))?;
    fill(audit, &request);
    Ok((StatusCode::OK, json!(request)))
}

/// `POST /admin/access-requests/{id}/approve` with `{expires_in?, expires_at?, note?}`, or
/// `/deny` with `{note?}` (an empty body is fine for both).
pub(super) async fn decide<P: Ports>(
    ports: &P,
    memo: &AuthMemo,
    id: &str,
    approve: bool,
    body: &[u8],
    audit: &mut Audit,
) -> Handled {
    let now = ports.now_ms();
    let (expires_at, note) = decision(body, approve, now)?;
    let request =
        access::decide(ports, &memo.grants, id, approve, expires_at, note, now).await?.ok_or_else(|| not_found(id))?;
    fill(audit, &request);
    Ok((StatusCode::OK, json!(request)))
}

fn decision(body: &[u8], approve: bool, now_ms: u64) -> Result<(Option<u64>, Option<String>)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, None));
    }
    let Value::Object(map) = parse_json(body, "the decision")? else {
        return Err(invalid("the decision must be a JSON object"));
    };
    let allowed = if approve { DECISION_FIELDS } else { &DECISION_FIELDS[2..] };
    if let Some(field) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(format!("unknown field \"{}\" (expected: {})", truncate(field, 40), allowed.join(", "))));
    }
    let number = |name: &str| -> Result<Option<u64>> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| invalid(format!("{name} must be a whole number >= 0"))),
        }
    };
    let expires_at = match (number("expires_at")?, number("expires_in")?) {
        (Some(_), Some(_)) => {
            return Err(invalid("give either expires_at (unix seconds) or expires_in (seconds), not both"))
        }
        (Some(at), None) if at <= now_ms / 1000 => return Err(invalid("expires_at is in the past")),
        (Some(at), None) => Some(at),
        (None, Some(0)) => return Err(invalid("expires_in must be at least 1")),
        (None, Some(secs)) => Some(now_ms / 1000 + secs),
        (None, None) => None,
    };
    let note = match map.get("note") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if access::valid_text(s, MAX_NOTE_CHARS) => Some(s.clone()),
        Some(_) => return Err(invalid(format!("note must be a string of at most {MAX_NOTE_CHARS} characters"))),
    };
    Ok((expires_at, note))
}
