//! Stored Responses API responses (`dialect::responses`): KV entries `resp:<tenant>:<id>`
//! with `settings.responses_ttl_secs`. The tenant is always the authenticated key's (the
//! public tenant for keyless calls to public endpoints), so one tenant's ids are a 404 for
//! every other tenant — on `GET`, on `DELETE` and as `previous_response_id`.

use http::{HeaderMap, Response};
use serde_json::{json, Value};

use crate::gateway::auth;
use crate::gateway::dialect::responses::{self, JustStored, Keep, Known, Record};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::identity::JwtConfig;
use crate::gateway::features::keys::KeyRecord;
use crate::gateway::pipeline::context::{ModelCall, RequestContext, PUBLIC_TENANT};
use crate::gateway::pipeline::respond::{ok_json, ResponseBody};
use crate::gateway::ports::Ports;
use crate::gateway::util::text::hex;

/// The recall step of a Responses call (after `admit`, when the tenant is known): mint the
/// response id, continue the conversation `previous_response_id` names, and queue the answer
/// for storing unless `store: false`. A no-op for other dialects.
pub async fn recall<P: Ports>(ports: &P, ctx: &mut RequestContext<'_>, call: &mut ModelCall) -> Result<()> {
    let Some(turn) = ctx.dialect.turn_mut() else { return Ok(()) };
    turn.passthrough = call.endpoint.responses_passthrough;
    let mut id = [0u8; 24];
    ports.random_bytes(&mut id);
    turn.head.id = format!("resp_{}", hex(&id));
    turn.head.created_at = ports.now_ms() / 1000;
    if let Some(previous) = turn.head.previous_response_id.clone() {
        let record = load(ports, &ctx.state.just_stored, call.tenant(), &previous)
            .await?
            .ok_or_else(|| responses::previous_not_found(&previous))?;
        if record.passthrough != turn.passthrough {
            return Err(GatewayError::bad_request(
                ErrorCode::InvalidRequest,
                "previous_response_id: that response was made by an endpoint of the other kind \
                 (passthrough vs. translated); continue it on an endpoint like the one that made it",
            ));
        }
        if record.messages.len() + turn.input.len() > responses::MAX_CONVERSATION {
            return Err(GatewayError::bad_request(
                ErrorCode::ConversationTooLong,
                format!("the conversation would exceed {} messages", responses::MAX_CONVERSATION),
            ));
        }
        turn.history = record.messages;
        if !turn.history.is_empty() {
            // [instructions] + history + this turn's input.
            let at = usize::from(turn.has_instructions);
            (call.canonical, call.verbatim) = (None, None); // the body changes
            if let Some(messages) = call.body.get_mut("messages").and_then(Value::as_array_mut) {
                let tail = messages.split_off(at.min(messages.len()));
                messages.extend(turn.history.iter().cloned());
                messages.extend(tail);
            }
        }
    }
    if turn.head.store {
        let mut messages = turn.history.clone();
        messages.extend(turn.input.iter().cloned());
        ctx.pending.keep = Some(Keep {
            tenant: call.tenant().to_string(),
            ttl_secs: call.config.settings.responses_ttl_secs,
            endpoint: call.endpoint.name.clone(),
            passthrough: turn.passthrough,
            messages,
            response: turn.finished.clone(),
            just_stored: ports.keeps_state().then(|| ctx.state.just_stored.clone()),
        });
    }
    Ok(())
}

/// A stored response: from the isolate's memo of what it just stored or deleted, else KV. A
/// response this isolate deleted stays gone here even while KV, which can lag behind a
/// delete by up to a minute across locations, still has it.
async fn load<P: Ports>(ports: &P, memo: &JustStored, tenant: &str, id: &str) -> Result<Option<Record>> {
    if !responses::valid_id(id) {
        return Ok(None);
    }
    let key = responses::kv_key(tenant, id);
    match memo.get(&key, ports.now_ms()) {
        Some(Known::Stored(record)) => return Ok(Record::decode(&record)),
        Some(Known::Deleted) => return Ok(None),
        None => {}
    }
    let Some(bytes) = ports.get(&key).await? else { return Ok(None) };
    // An entry that no longer decodes (e.g. from a future version) is as good as gone.
    Ok(Record::decode(&bytes))
}

/// Who asks, for `GET`/`DELETE`: the key's tenant, or the public tenant without a key.
async fn caller<P: Ports>(
    ports: &P,
    ctx: &mut RequestContext<'_>,
    headers: &HeaderMap,
    jwt: &JwtConfig,
) -> Result<(Option<std::rc::Rc<KeyRecord>>, String)> {
    let key = auth::identify(ports, &ctx.state.auth, auth::presented(headers, None), jwt).await?;
    ctx.log.key_id = key.as_ref().map(|k| k.id.clone());
    let tenant = key.as_ref().map_or(PUBLIC_TENANT.to_string(), |k| k.tenant.clone());
    Ok((key, tenant))
}

/// The tenant's record for `id`, if the caller's key may call the endpoint that made it.
async fn find<P: Ports>(
    ports: &P,
    ctx: &mut RequestContext<'_>,
    headers: &HeaderMap,
    jwt: &JwtConfig,
    id: &str,
) -> Result<(String, Record)> {
    let (key, tenant) = caller(ports, ctx, headers, jwt).await?;
    let record = load(ports, &ctx.state.just_stored, &tenant, id).await?.ok_or_else(|| responses::not_found(id))?;
    if key.is_some_and(|k| !k.allows(&record.endpoint)) {
        return Err(responses::not_found(id));
    }
    ctx.log.endpoint = Some(record.endpoint.clone());
    Ok((tenant, record))
}

/// `GET /v1/responses/{id}`.
pub async fn retrieve<P: Ports>(
    ports: &P,
    ctx: &mut RequestContext<'_>,
    headers: &HeaderMap,
    jwt: &JwtConfig,
    id: &str,
) -> Result<Response<ResponseBody<P::Body>>> {
    let (_, record) = find(ports, ctx, headers, jwt, id).await?;
    Ok(ok_json(record.response))
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete<P: Ports>(
    ports: &P,
    ctx: &mut RequestContext<'_>,
    headers: &HeaderMap,
    jwt: &JwtConfig,
    id: &str,
) -> Result<Response<ResponseBody<P::Body>>> {
    let (tenant, _) = find(ports, ctx, headers, jwt, id).await?;
    let key = responses::kv_key(&tenant, id);
    ctx.state.just_stored.remove(&key, ports.now_ms());
    ports.delete(&key).await?;
    Ok(ok_json(json!({"id": id, "object": "response", "deleted": true})))
}
