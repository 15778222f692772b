//! `/admin/usage` (per key or tenant, per day) and `/admin/cache/purge`.

use http::StatusCode;
use serde_json::{json, Map, Value};

use crate::gateway::admin::answer::{parse_json, query_value, Audit, Handled};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::cache::Recent;
use crate::gateway::features::identity::claims::valid_principal_id;
use crate::gateway::features::keys;
use crate::gateway::features::ledger;
use crate::gateway::features::limits::valid_tenant;
use crate::gateway::features::usage::{self, Subject};
use crate::gateway::ports::Ports;
use crate::gateway::util::time::{days_of, parse_day};

// ---------------------------------------------------------------------------------------------
// Cache

/// `POST /admin/cache/purge {"tenant"?, "endpoint"?, "shared"?: bool}`: deletes the cached
/// answers of a tenant (or the shared ones), of an endpoint, or both; `{}` purges everything.
/// KV and this location's edge cache: other locations' edge copies expire within
/// `cache::EDGE_TTL_MAX_SECS`. This isolate's memory level is cleared whole (it is small), once
/// the request is valid.
pub(super) async fn purge_cache<P: Ports>(ports: &P, recent: &Recent, body: &[u8]) -> Handled {
    use crate::gateway::features::cache::{self, Scope};
    let spec = if body.is_empty() { Value::Object(Map::new()) } else { parse_json(body, "the purge request")? };
    let field = |name: &str| spec.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
    let scope = match (field("tenant"), spec.get("shared").and_then(Value::as_bool).unwrap_or(false)) {
        (Some(_), true) => {
            return Err(
                GatewayError::bad_request(ErrorCode::InvalidPurge, "give `tenant` or `shared: true`, not both").into()
            )
        }
        (Some(tenant), false) => Some(Scope::Tenant(tenant)),
        (None, true) => Some(Scope::Shared),
        (None, false) => None,
    };
    let endpoint = field("endpoint");
    recent.clear();
    let keys = ports.list(&cache::purge_prefix(scope, endpoint)).await?;
    let matching: Vec<&String> = keys.iter().filter(|k| cache::purge_matches(k, scope, endpoint)).collect();
    let mut purged = 0u64;
    for key in matching.iter().take(MAX_PURGE) {
        ports.delete(key).await?;
        ports.edge_delete(key).await;
        purged += 1;
    }
    Ok((StatusCode::OK, json!({"purged": purged, "more": matching.len() > MAX_PURGE})))
}

/// Deletes per purge call: Cloudflare caps KV operations per invocation (call again while
/// the answer says `more`).
const MAX_PURGE: usize = 500;

// ---------------------------------------------------------------------------------------------
// Usage

pub(super) async fn get_usage<P: Ports>(ports: &P, query: &[(String, String)], audit: &mut Audit) -> Handled {
    let today = days_of(ports.now_ms());
    let day = |name: &str| -> Result<i64> {
        match query_value(query, name) {
            None => Ok(today),
            Some(s) => parse_day(s).ok_or_else(|| {
                GatewayError::bad_request(ErrorCode::InvalidDate, format!("`{name}` must be a date YYYY-MM-DD (UTC)"))
            }),
        }
    };
    let (from, to) = (day("from")?, day("to")?);
    let subject = match (query_value(query, "key"), query_value(query, "tenant")) {
        // A key id, or a JWT subject's principal id (`j_…`): usage is counted the same way.
        (Some(id), None) if keys::valid_id(id) || valid_principal_id(id) => {
            audit.key_id = Some(id.to_string());
            Subject::Key(id)
        }
        (None, Some(t)) if valid_tenant(t) => {
            audit.tenant = Some(t.to_string());
            Subject::Tenant(t)
        }
        (Some(_), None) => {
            return Err(GatewayError::bad_request(
                ErrorCode::InvalidKeyId,
                "`key` must be a key id (k_...) or a JWT subject's id (j_...)",
            )
            .into())
        }
        (None, Some(_)) => {
            return Err(
                GatewayError::bad_request(ErrorCode::InvalidTenant, "`tenant` is not a valid tenant name").into()
            )
        }
        _ => {
            return Err(GatewayError::bad_request(
                ErrorCode::MissingSubject,
                "give exactly one of `key=<key id>` or `tenant=<name>`",
            )
            .into())
        }
    };
    // On Spin the latest requests are ledger entries until folded into usage shards.
    let folded = ledger::fold_pending(ports).await?;
    let mut answer = usage::query(ports, subject, from, to).await?;
    if !folded {
        answer["partial"] = Value::Bool(true);
    }
    Ok((StatusCode::OK, answer))
}
