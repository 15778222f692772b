//! Access approval: an endpoint marked `access: approval` serves only callers (API keys or JWT
//! subjects, by principal id) holding a grant for it. Callers ask with
//! `POST /v1/access-requests`; admins approve or deny through the admin API.
//!
//! KV layout:
//!
//! | entry | value |
//! |---|---|
//! | `access:req:<id>` | the [`AccessRequest`]; `id` = `ar_` + 16 hex digits of SHA-256(principal, endpoint), so one caller has one request per endpoint |
//! | `grant:<principal>:<endpoint>` | the [`Grant`] an approval writes (deleted by a deny); KV expiry set to its `expires_at` where the host has one |
//!
//! States: `pending` → `approved` (grant written, optionally expiring) or `denied` (grant
//! deleted, if any). An admin may approve a denied request or deny an approved one (a
//! revocation). A caller asking again gets the same request back: pending stays pending,
//! denied stays denied (no re-asking spam), approved stays approved while its grant is live;
//! an approval whose grant has expired is reopened as pending with the new reason.
//!
//! How fast decisions take effect (the memo bound): grants that exist are memoized per
//! isolate for [`GRANT_MEMO_TTL_MS`] (5 s); a missing grant is never memoized, and a grant's
//! `expires_at` is checked on every request. So an approval is effective on the next request
//! that sees it in KV; a deny (revocation) within 5 s in isolates that used the grant; an
//! expiry to the second. Add the store's propagation (Cloudflare KV: up to 60 s in other
//! locations; Spin: none).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::gateway::check::Issues;
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::Kv;
use crate::gateway::util::order;
use crate::gateway::util::text::hex;

pub const REQUEST_PREFIX: &str = "access:req:";
pub const GRANT_PREFIX: &str = "grant:";
/// Longest `reason` a caller may give (characters).
pub const MAX_REASON_CHARS: usize = 500;
/// Longest admin `note` on a decision (characters).
pub const MAX_NOTE_CHARS: usize = 500;
/// How long an isolate trusts a grant it read.
pub const GRANT_MEMO_TTL_MS: u64 = 5_000;
const GRANT_MEMO_MAX: usize = 4096;
/// Requests the admin listing returns at most.
pub const MAX_LISTED: usize = 1000;

/// An endpoint's `access:` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Access {
    /// Anyone the key/JWT policy allows.
    #[default]
    Open,
    /// Only callers with a grant (`approval`).
    Approval,
}

/// Checks an endpoint's `access:` value (`open` or `approval`).
pub fn check_access(path: &str, value: &Value, issues: &mut Issues) -> Option<Access> {
    match value.as_str() {
        Some("open") => Some(Access::Open),
        Some("approval") => Some(Access::Approval),
        Some(other) => {
            issues.unknown(path, "access mode", other, &["open", "approval"]);
            None
        }
        None => {
            issues.push(path, "must be \"open\" or \"approval\"");
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Approved,
    Denied,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        [State::Pending, State::Approved, State::Denied].into_iter().find(|st| st.as_str() == s)
    }
}

/// One caller's request for one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessRequest {
    pub id: String,
    /// The caller's principal id: a key id (`k_…`) or a JWT subject's (`j_…`).
    pub principal: String,
    /// `key` or `jwt`.
    pub kind: String,
    /// Who asked, for the approver: the key's name, or the token's subject claim.
    pub subject: String,
    /// The issuer that vouched for a JWT subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    pub tenant: String,
    pub endpoint: String,
    pub reason: String,
    pub state: State,
    /// Unix seconds.
    pub created: u64,
    pub updated: u64,
    /// When the grant of an approved request ends (unix seconds); none: until denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// The admin's note on the last decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What an approval writes: the caller may call the endpoint (until `expires_at`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub request: String,
    pub principal: String,
    pub endpoint: String,
    pub granted: u64,
    #[serde(default)]
    pub expires_at: Option<u64>,
}

impl Grant {
    pub fn live(&self, now_ms: u64) -> bool {
        self.expires_at.is_none_or(|at| now_ms / 1000 < at)
    }
}

pub fn request_id(principal: &str, endpoint: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(principal.as_bytes());
    hasher.update([0]);
    hasher.update(endpoint.as_bytes());
    format!("ar_{}", &hex(&hasher.finalize())[..16])
}

/// Whether an id from a URL has our shape (`ar_` + hex).
pub fn valid_request_id(id: &str) -> bool {
    id.len() == 19 && id.starts_with("ar_") && id[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn request_key(id: &str) -> String {
    format!("{REQUEST_PREFIX}{id}")
}

pub fn grant_key(principal: &str, endpoint: &str) -> String {
    format!("{GRANT_PREFIX}{principal}:{endpoint}")
}

/// A caller's reason: at most [`MAX_REASON_CHARS`], no control characters but newlines/tabs.
pub fn valid_text(text: &str, max: usize) -> bool {
    text.chars().count() <= max && !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
}

fn corrupt() -> GatewayError {
    GatewayError::internal(ErrorCode::KeyRecordInvalid, "a stored access record could not be read")
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| GatewayError::internal(ErrorCode::EncodeFailed, e.to_string()))
}

pub async fn load_request(kv: &impl Kv, id: &str) -> Result<Option<AccessRequest>> {
    if !valid_request_id(id) {
        return Ok(None);
    }
    let Some(bytes) = kv.get(&request_key(id)).await? else { return Ok(None) };
    serde_json::from_slice(&bytes).map(Some).map_err(|_| corrupt())
}

pub async fn store_request(kv: &impl Kv, request: &AccessRequest) -> Result<()> {
    kv.put(&request_key(&request.id), &encode(request)?, None).await
}

/// Requests in `state` (all when `None`), newest first, at most [`MAX_LISTED`].
pub async fn list_requests(kv: &impl Kv, state: Option<State>) -> Result<Vec<AccessRequest>> {
    let mut out = Vec::new();
    for name in kv.list(REQUEST_PREFIX).await? {
        let Some(id) = name.strip_prefix(REQUEST_PREFIX) else { continue };
        if let Some(request) = load_request(kv, id).await? {
            if state.is_none_or(|s| s == request.state) {
                out.push(request);
            }
        }
    }
    order::sort_by(&mut out, |a, b| (b.updated, &b.id).cmp(&(a.updated, &a.id)));
    out.truncate(MAX_LISTED);
    Ok(out)
}

pub async fn load_grant(kv: &impl Kv, principal: &str, endpoint: &str) -> Result<Option<Grant>> {
    let Some(bytes) = kv.get(&grant_key(principal, endpoint)).await? else { return Ok(None) };
    serde_json::from_slice(&bytes).map(Some).map_err(|_| corrupt())
}

/// Writes the grant; the KV entry expires with it where the host supports expiry.
pub async fn store_grant(kv: &impl Kv, grant: &Grant, now_ms: u64) -> Result<()> {
    let ttl = grant.expires_at.map(|at| at.saturating_sub(now_ms / 1000).max(60));
    kv.put(&grant_key(&grant.principal, &grant.endpoint), &encode(grant)?, ttl).await
}

pub async fn delete_grant(kv: &impl Kv, principal: &str, endpoint: &str) -> Result<()> {
    kv.delete(&grant_key(principal, endpoint)).await
}

/// Per-isolate memo of grants that exist (never of missing ones).
#[derive(Default)]
pub struct GrantMemo {
    entries: RefCell<HashMap<String, (Rc<Grant>, u64)>>,
}

impl GrantMemo {
    /// Drops a memoized grant (a deny handled by this isolate takes effect here at once).
    pub fn forget(&self, principal: &str, endpoint: &str) {
        self.entries.borrow_mut().remove(&grant_key(principal, endpoint));
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `principal` holds a live grant for `endpoint` (memo, else KV).
pub async fn has_grant(kv: &impl Kv, memo: &GrantMemo, principal: &str, endpoint: &str, now_ms: u64) -> Result<bool> {
    let name = grant_key(principal, endpoint);
    let memoized = memo
        .entries
        .borrow()
        .get(&name)
        .filter(|(_, at)| now_ms.saturating_sub(*at) < GRANT_MEMO_TTL_MS)
        .map(|(g, _)| g.clone());
    let grant = match memoized {
        Some(grant) => grant,
        None => match load_grant(kv, principal, endpoint).await? {
            Some(grant) => {
                let grant = Rc::new(grant);
                let mut entries = memo.entries.borrow_mut();
                if entries.len() >= GRANT_MEMO_MAX {
                    entries.clear();
                }
                entries.insert(name, (grant.clone(), now_ms));
                grant
            }
            None => return Ok(false),
        },
    };
    Ok(grant.live(now_ms))
}

/// What asking did (for the answer's status and the audit line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    Created,
    /// The same request was already there (pending, approved with a live grant, or denied).
    Existing,
    /// An approval whose grant expired, reopened as pending.
    Reopened,
}

impl Asked {
    pub fn as_str(self) -> &'static str {
        match self {
            Asked::Created => "created",
            Asked::Existing => "existing",
            Asked::Reopened => "reopened",
        }
    }
}

/// Records `draft` (a new pending request) unless the caller already asked: idempotent per
/// principal and endpoint (see the module docs for the states).
pub async fn ask(kv: &impl Kv, draft: AccessRequest, now_ms: u64) -> Result<(AccessRequest, Asked)> {
    match load_request(kv, &draft.id).await? {
        None => {
            store_request(kv, &draft).await?;
            Ok((draft, Asked::Created))
        }
        Some(existing) if existing.state == State::Approved => {
            let live = load_grant(kv, &existing.principal, &existing.endpoint).await?.is_some_and(|g| g.live(now_ms));
            if live {
                return Ok((existing, Asked::Existing));
            }
            let reopened = AccessRequest {
                reason: draft.reason,
                state: State::Pending,
                updated: now_ms / 1000,
                expires_at: None,
                note: None,
                ..existing
            };
            store_request(kv, &reopened).await?;
            Ok((reopened, Asked::Reopened))
        }
        Some(existing) => Ok((existing, Asked::Existing)),
    }
}

/// An admin's decision on request `id`: approve (with an optional expiry, unix seconds) or
/// deny. Returns the updated request; `None` when there is no such request.
pub async fn decide(
    kv: &impl Kv,
    memo: &GrantMemo,
    id: &str,
    approve: bool,
    expires_at: Option<u64>,
    note: Option<String>,
    now_ms: u64,
) -> Result<Option<AccessRequest>> {
    let Some(mut request) = load_request(kv, id).await? else { return Ok(None) };
    request.updated = now_ms / 1000;
    request.note = note;
    if approve {
        let grant = Grant {
            request: request.id.clone(),
            principal: request.principal.clone(),
            endpoint: request.endpoint.clone(),
            granted: now_ms / 1000,
            expires_at,
        };
        store_grant(kv, &grant, now_ms).await?;
        request.state = State::Approved;
        request.expires_at = expires_at;
    } else {
        delete_grant(kv, &request.principal, &request.endpoint).await?;
        request.state = State::Denied;
        request.expires_at = None;
    }
    memo.forget(&request.principal, &request.endpoint);
    store_request(kv, &request).await?;
    Ok(Some(request))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ports::memory::{block_on, MemoryHost};
    use crate::gateway::ports::{Clock, UpstreamError};
    use serde_json::json;

    fn host() -> MemoryHost {
        MemoryHost::new(|_| Err(UpstreamError::Timeout))
    }

    fn draft(host: &MemoryHost, principal: &str, endpoint: &str, reason: &str) -> AccessRequest {
        let now = host.now_ms() / 1000;
        AccessRequest {
            id: request_id(principal, endpoint),
            principal: principal.into(),
            kind: "key".into(),
            subject: "ci".into(),
            issuer: None,
            tenant: "acme".into(),
            endpoint: endpoint.into(),
            reason: reason.into(),
            state: State::Pending,
            created: now,
            updated: now,
            expires_at: None,
            note: None,
        }
    }

    #[test]
    fn access_values() {
        let mut issues = Issues::default();
        assert_eq!(check_access("a", &json!("approval"), &mut issues), Some(Access::Approval));
        assert_eq!(check_access("a", &json!("open"), &mut issues), Some(Access::Open));
        assert_eq!(check_access("a", &json!("aproval"), &mut issues), None);
        assert_eq!(check_access("a", &json!(true), &mut issues), None);
        assert!(issues.0[0].to_string().contains("did you mean \"approval\""), "{:?}", issues.0);
        assert_eq!(issues.0.len(), 2);
    }

    #[test]
    fn ids_keys_and_text() {
        let id = request_id("k_01", "chat");
        assert!(valid_request_id(&id) && id == request_id("k_01", "chat") && id != request_id("k_01", "chat2"));
        assert!(!valid_request_id("ar_xyz") && !valid_request_id("../x"));
        assert_eq!(grant_key("j_ab", "chat"), "grant:j_ab:chat");
        assert_eq!(request_key(&id), format!("access:req:{id}"));
        assert!(valid_text("need it\nfor the demo", MAX_REASON_CHARS));
        assert!(!valid_text("bell\u{7}", MAX_REASON_CHARS) && !valid_text(&"x".repeat(501), MAX_REASON_CHARS));
    }

    #[test]
    fn ask_is_idempotent_and_decisions_write_grants() {
        let host = host();
        let memo = GrantMemo::default();
        let now = host.now_ms();
        let (r, asked) = block_on(ask(&host, draft(&host, "k_01", "gated", "first"), now)).unwrap();
        assert_eq!((asked, r.state), (Asked::Created, State::Pending));
        let (again, asked) = block_on(ask(&host, draft(&host, "k_01", "gated", "second"), now)).unwrap();
        assert_eq!((asked, again.reason.as_str()), (Asked::Existing, "first"), "same request, unchanged");
        assert!(!block_on(has_grant(&host, &memo, "k_01", "gated", now)).unwrap());

        let approved = block_on(decide(&host, &memo, &r.id, true, Some(now / 1000 + 60), Some("ok".into()), now))
            .unwrap()
            .unwrap();
        assert_eq!(
            (approved.state, approved.expires_at, approved.note.as_deref()),
            (State::Approved, Some(now / 1000 + 60), Some("ok"))
        );
        assert!(block_on(has_grant(&host, &memo, "k_01", "gated", now)).unwrap());
        assert!(!block_on(has_grant(&host, &memo, "k_02", "gated", now)).unwrap(), "per principal");
        assert!(!block_on(has_grant(&host, &memo, "k_01", "other", now)).unwrap(), "per endpoint");
        assert_eq!(block_on(ask(&host, draft(&host, "k_01", "gated", "x"), now)).unwrap().1, Asked::Existing);
        // Expiry is exact, memo or not.
        assert!(!block_on(has_grant(&host, &memo, "k_01", "gated", now + 60_000)).unwrap());
        // An expired approval is reopened by asking again.
        let (reopened, asked) = block_on(ask(&host, draft(&host, "k_01", "gated", "again"), now + 61_000)).unwrap();
        assert_eq!((asked, reopened.state, reopened.reason.as_str()), (Asked::Reopened, State::Pending, "again"));

        // Approve without expiry, then deny: the grant goes (and this isolate's memo with it).
        block_on(decide(&host, &memo, &r.id, true, None, None, now)).unwrap();
        assert!(block_on(has_grant(&host, &memo, "k_01", "gated", now)).unwrap());
        let denied = block_on(decide(&host, &memo, &r.id, false, None, None, now)).unwrap().unwrap();
        assert_eq!(denied.state, State::Denied);
        assert!(!host.kv.borrow().contains_key(&grant_key("k_01", "gated")));
        assert!(!block_on(has_grant(&host, &memo, "k_01", "gated", now)).unwrap());
        // Denied stays denied when the caller asks again.
        let (still, asked) = block_on(ask(&host, draft(&host, "k_01", "gated", "please"), now)).unwrap();
        assert_eq!((asked, still.state), (Asked::Existing, State::Denied));
        assert_eq!(block_on(decide(&host, &memo, "ar_0000000000000000", true, None, None, now)).unwrap(), None);
    }

    #[test]
    fn another_isolates_deny_takes_effect_within_the_memo_bound() {
        let host = host();
        let (here, there) = (GrantMemo::default(), GrantMemo::default());
        let now = host.now_ms();
        let (r, _) = block_on(ask(&host, draft(&host, "j_01", "gated", "r"), now)).unwrap();
        block_on(decide(&host, &here, &r.id, true, None, None, now)).unwrap();
        assert!(block_on(has_grant(&host, &there, "j_01", "gated", now)).unwrap());
        block_on(decide(&host, &here, &r.id, false, None, None, now)).unwrap();
        assert!(block_on(has_grant(&host, &there, "j_01", "gated", now + GRANT_MEMO_TTL_MS - 1)).unwrap(), "memoized");
        assert!(!block_on(has_grant(&host, &there, "j_01", "gated", now + GRANT_MEMO_TTL_MS)).unwrap());
    }

    #[test]
    fn listing_filters_by_state_newest_first() {
        let host = host();
        let memo = GrantMemo::default();
        let now = host.now_ms();
        let (a, _) = block_on(ask(&host, draft(&host, "k_01", "e1", "a"), now)).unwrap();
        let (b, _) = block_on(ask(&host, draft(&host, "k_02", "e1", "b"), now + 1000)).unwrap();
        block_on(decide(&host, &memo, &a.id, true, None, None, now + 2000)).unwrap();
        let all = block_on(list_requests(&host, None)).unwrap();
        assert_eq!(all.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), [a.id.clone(), b.id.clone()]);
        let pending = block_on(list_requests(&host, Some(State::Pending))).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].id, b.id);
        host.kv.borrow_mut().insert(request_key(&b.id), b"{broken".to_vec());
        assert!(block_on(list_requests(&host, None)).is_err());
    }
}
