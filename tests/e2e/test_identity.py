"""JWT / OIDC authentication and access approval (issue 13, items 1-2), on both hosts.

A test identity provider (idp.py) makes RSA and EC keys per run, signs tokens with PyJWT and
serves its JWKS from Python's http.server; the gateway trusts it through the `auth.jwt`
section of tests/e2e/gateway.yaml (tenant from `org_id`, endpoints from `groups`, JWKS refetch
cooldown 2 s). The id-chat endpoint needs a credential; id-gated also needs an approval."""
import hashlib
import json
import re
import secrets
import time

import openai
import pytest
import requests

import conftest
from admin_client import Admin, MEMO_BOUND_S, gatewayctl, log_records, wait_until
from idp import AUDIENCE, SigningKey, none_token, tampered

ADMIN_TOKEN = conftest.ADMIN_TOKEN
# The issuer's refetch cooldown in gateway.yaml (refresh_cooldown_secs).
COOLDOWN_S = 2.0
# Every token this suite sent: none may appear in a host log or an error.
SEEN_TOKENS = []


def principal_id(issuer: str, subject: str) -> str:
    """The gateway's id for a JWT subject: j_ + 16 hex of SHA-256(issuer, 0, subject)."""
    return "j_" + hashlib.sha256(issuer.encode() + b"\0" + subject.encode()).hexdigest()[:16]


def leaks(token: str, text: str) -> bool:
    """Whether `text` holds the token or a recognisable piece of it (its signature)."""
    signature = token.split(".")[-1][:24]
    return token in text or (len(signature) >= 16 and signature in text)


def chat(gw, token, model="id-chat", header="authorization", content="hello identity"):
    if token is not None:
        SEEN_TOKENS.append(token)
    headers = {"content-type": "application/json"}
    if token is not None:
        headers[header] = f"Bearer {token}" if header == "authorization" else token
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    r = requests.post(gw.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
    if token:
        assert not leaks(token, r.text), "a token was echoed"
    return r


def ask(gw, token, endpoint="id-gated", reason="monthly report", header="authorization"):
    headers = {header: f"Bearer {token}" if header == "authorization" else token}
    return requests.post(gw.base_url + "/v1/access-requests", json={"endpoint": endpoint, "reason": reason},
                         headers=headers, timeout=30)


def error(r, status, code):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code, err
    return err


def ctl(gw, *args, check=True):
    out = gatewayctl(gw, *args, token=ADMIN_TOKEN, check=check)
    return json.loads(out.stdout) if check else out


# --- verification -----------------------------------------------------------------------------

def test_rs256_and_es256_tokens_pass_with_the_openai_sdk(gw, idp):
    for key in (idp.rsa, idp.ec):
        token = idp.token(key)
        SEEN_TOKENS.append(token)
        client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=token, max_retries=0)
        reply = client.chat.completions.create(model="id-chat", messages=[{"role": "user", "content": "hi jwt"}])
        assert reply.choices[0].message.content == "echo: hi jwt", key.alg
    # The Anthropic-style header works too; API keys keep working beside JWTs.
    assert chat(gw, idp.token(idp.ec), header="x-api-key").status_code == 200
    key = Admin(gw, ADMIN_TOKEN).create_key(tenant="e2e", endpoints=["id-chat"])["key"]
    assert chat(gw, key).status_code == 200


def test_refusals_have_their_codes(gw, idp):
    now = int(time.time())
    cases = [
        (idp.token(exp=now - 60, iat=now - 700, nbf=now - 700), "token_expired"),
        (idp.token(idp.ec, nbf=now + 120), "token_not_yet_valid"),
        (idp.token(aud="someone-else"), "token_audience"),
        (idp.token(iss="http://127.0.0.1:9/not-trusted"), "token_unknown_issuer"),
        (tampered(idp.token(), org_id="another-tenant"), "token_bad_signature"),
        (tampered(idp.token(idp.ec), sub="mallory"), "token_bad_signature"),
        (none_token(idp.claims()), "token_algorithm"),
        (idp.token(idp.ec, kid=idp.rsa.kid), "token_algorithm"),  # ES256 header naming the RSA key
        ("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOi.AAAA", "token_malformed"),
    ]
    for token, code in cases:
        err = error(chat(gw, token), 401, code)
        assert token.split(".")[1][:16] not in err["message"]
    # The SDK surfaces the code.
    client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=cases[0][0], max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(model="id-chat", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.code == "token_expired"


def test_unknown_kid_refetches_the_jwks_once_then_401(gw, idp):
    assert chat(gw, idp.token()).status_code == 200  # the key set is cached now
    time.sleep(COOLDOWN_S + 0.3)  # any earlier fetch is outside the cooldown
    stranger = SigningKey("RSA", "rsa-unknown-" + secrets.token_hex(3))
    before = idp.fetches()
    error(chat(gw, idp.token(stranger)), 401, "token_unknown_key")
    assert idp.fetches() == before + 1, "exactly one refetch for the unknown kid"
    # Within the cooldown the same (or any other) unknown kid does not refetch.
    error(chat(gw, idp.token(stranger)), 401, "token_unknown_key")
    error(chat(gw, idp.token(SigningKey("EC", "ec-unknown"))), 401, "token_unknown_key")
    assert idp.fetches() == before + 1, "refetches are rate-limited"
    # Known keys keep working from the cache without a fetch.
    assert chat(gw, idp.token(idp.ec)).status_code == 200
    assert idp.fetches() == before + 1


def test_a_rotated_in_key_is_fetched_on_first_use(gw, idp):
    assert chat(gw, idp.token()).status_code == 200
    time.sleep(COOLDOWN_S + 0.3)
    fresh = SigningKey("EC", "ec-rotated-" + secrets.token_hex(3))
    idp.publish(fresh)
    before = idp.fetches()
    r = chat(gw, idp.token(fresh))
    assert r.status_code == 200, r.text
    assert idp.fetches() == before + 1


class OffCurveKey(SigningKey):
    """A P-256 key whose published JWK has y = x: a point off the curve (not a key at all)."""

    def jwk(self) -> dict:
        jwk = super().jwk()
        jwk["y"] = jwk["x"]
        return jwk


def test_a_published_point_off_the_curve_verifies_nothing(gw, idp):
    """The gateway keeps such a key (only a signer can tell) and it verifies no token, on both
    hosts: WebCrypto refuses to import it on workerd, RustCrypto on Spin."""
    assert chat(gw, idp.token()).status_code == 200
    time.sleep(COOLDOWN_S + 0.3)
    broken = OffCurveKey("EC", "ec-offcurve-" + secrets.token_hex(3))
    idp.publish(broken)
    before = idp.fetches()
    for _ in range(2):  # the second from the cached key set
        error(chat(gw, idp.token(broken)), 401, "token_bad_signature")
    assert idp.fetches() == before + 1
    assert chat(gw, idp.token(idp.ec)).status_code == 200


def test_a_verified_token_is_remembered_for_a_minute(gw, idp):
    """A verified token is not verified again for a minute: workerd remembers it per isolate,
    Spin (an instance per request) in KV as `jwtok:` + the token's SHA-256, never the token.
    Shown by taking the key set away (its cache entry deleted, the identity provider no longer
    publishing the key): the token still passes; on Spin a new token signed by the same key is
    refused, as that request's instance has to fetch the key set again (workerd's isolate still
    holds it)."""
    key = SigningKey("EC", "ec-memo-" + secrets.token_hex(3))
    idp.publish(key)
    time.sleep(COOLDOWN_S + 0.3)
    token = idp.token(key)
    assert chat(gw, token).status_code == 200  # fetches the key set for the new kid
    if gw.name == "spin":
        entry = gw.kv_dir / "default" / ("jwtok:" + hashlib.sha256(token.encode()).hexdigest()).encode().hex()
        assert re.fullmatch(r"[0-9a-f]{16}:[0-9]+", entry.read_text()), "config fingerprint and time only"
    jwks_entry = "jwks:" + hashlib.sha256((idp.url + "/jwks.json").encode()).hexdigest()
    published = list(idp.published)
    idp.published = [k for k in published if k is not key]
    try:
        gw.kv_delete(jwks_entry)
        time.sleep(COOLDOWN_S + 0.3)  # a refetch is allowed again
        assert chat(gw, token).status_code == 200, "remembered"
        later = chat(gw, idp.token(key, sub="bob"))
        if gw.name == "spin":
            error(later, 401, "token_unknown_key")
        else:
            assert later.status_code == 200, later.text
    finally:
        idp.published = published
        gw.kv_delete(jwks_entry)  # the next test's instance reads the whole key set again


def test_claims_map_to_tenant_endpoints_and_limits(gw, idp):
    subject = f"carol-{gw.name}-{secrets.token_hex(3)}"
    r = chat(gw, idp.token(sub=subject))
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-limit-requests"] == "50", "policy rpm"
    gold = chat(gw, idp.token(sub=subject, tier="gold"))
    assert gold.headers["x-ratelimit-limit-requests"] == "500", "the tier rule's rpm"
    # Endpoints come from `groups` (gw:<name>) within the policy's id-* ceiling.
    error(chat(gw, idp.token(groups=["gw:id-chat"]), model="id-gated"), 403, "endpoint_not_allowed")
    error(chat(gw, idp.token(groups=["gw:keyed-chat"]), model="keyed-chat"), 403, "endpoint_not_allowed")
    error(chat(gw, idp.token(groups=None)), 403, "endpoint_not_allowed")
    error(chat(gw, idp.token(org_id=None)), 401, "token_malformed")  # no tenant claim, no fallback
    # Usage is counted under the subject's stable id, in the tenant from `org_id`.
    pid = principal_id(idp.issuer, subject)
    admin = Admin(gw, ADMIN_TOKEN)
    usage = wait_until(lambda: admin.usage(key=pid)["total"]["requests"] >= 2 and admin.usage(key=pid), timeout=10)
    assert usage and usage["total"]["requests"] >= 2, usage
    lines = [rec for rec in log_records(gw, pid) if rec.get("key_id") == pid]
    assert lines and all(rec.get("tenant") in (None, "acme-e2e") for rec in lines), lines


# --- access approval ----------------------------------------------------------------------------

def test_approval_flow_with_gatewayctl(gw, idp):
    subject = f"dave-{gw.name}-{secrets.token_hex(3)}"
    token = idp.token(sub=subject)
    SEEN_TOKENS.append(token)
    pid = principal_id(idp.issuer, subject)
    err = error(chat(gw, token, model="id-gated"), 403, "approval_required")
    assert "/v1/access-requests" in err["message"]

    first = ask(gw, token, reason="quarterly numbers")
    assert first.status_code == 201, first.text
    request = first.json()
    assert (request["state"], request["principal"], request["kind"], request["endpoint"]) == \
        ("pending", pid, "jwt", "id-gated")
    assert request["subject"] == subject and request["tenant"] == "acme-e2e"
    again = ask(gw, token, reason="asking twice")
    assert again.status_code == 200 and again.json()["id"] == request["id"], "idempotent per caller+endpoint"
    assert again.json()["reason"] == "quarterly numbers"

    pending = ctl(gw, "access", "list")["requests"]
    assert request["id"] in [p["id"] for p in pending]
    approved = ctl(gw, "access", "approve", request["id"], "--note", "ok for Q3")
    assert approved["state"] == "approved" and approved["note"] == "ok for Q3"
    # No negative memo: the grant counts on the next request.
    r = wait_until(lambda: chat(gw, token, model="id-gated").status_code == 200, timeout=1.0)
    assert r, "the approved caller is still refused"
    assert ask(gw, token).json()["state"] == "approved"

    denied_at = time.time()
    assert ctl(gw, "access", "deny", request["id"])["state"] == "denied"
    refused = wait_until(lambda: chat(gw, token, model="id-gated").status_code == 403, timeout=MEMO_BOUND_S + 5)
    assert refused and time.time() - denied_at <= MEMO_BOUND_S + 1.5, "revoked within the memo bound"
    error(chat(gw, token, model="id-gated"), 403, "approval_required")
    assert ask(gw, token).json()["state"] == "denied", "denied stays denied when asked again"

    # An expiring grant ends on its second.
    ctl(gw, "access", "approve", request["id"], "--expires-in", "3")
    assert wait_until(lambda: chat(gw, token, model="id-gated").status_code == 200, timeout=1.0)
    time.sleep(3.2)
    error(chat(gw, token, model="id-gated"), 403, "approval_required")
    # Asking again after the expiry reopens the request.
    reopened = ask(gw, token, reason="one more month")
    assert reopened.status_code == 201 and reopened.json()["state"] == "pending"

    # Every step left an audit line (hosts write them after the response: poll).
    def audit(kind):
        return [a for a in log_records(gw, request["id"]) if a.get("audit") == kind]
    outcomes = {"created", "existing", "reopened"}
    wait_until(lambda: {a["outcome"] for a in audit("access")} >= outcomes, timeout=10)
    assert {a["outcome"] for a in audit("access")} >= outcomes, audit("access")
    decisions = ["access.approve", "access.deny", "access.approve"]
    wait_until(lambda: [a["action"] for a in audit("admin")] == decisions, timeout=10)
    decided = audit("admin")
    assert [a["action"] for a in decided] == decisions, decided
    assert all(a["principal"] == pid and a["endpoint"] == "id-gated" for a in decided if a.get("principal"))


def test_api_key_callers_need_approval_too(gw, idp):
    created = Admin(gw, ADMIN_TOKEN).create_key(tenant="e2e", endpoints=["id-gated"], name="approval-key")
    key = created["key"]
    error(chat(gw, key, model="id-gated"), 403, "approval_required")
    r = ask(gw, key, header="x-api-key")
    assert r.status_code == 201 and r.json()["kind"] == "key" and r.json()["principal"] == created["id"]
    assert r.json()["subject"] == "approval-key"
    ctl(gw, "access", "approve", r.json()["id"])
    assert wait_until(lambda: chat(gw, key, model="id-gated").status_code == 200, timeout=1.0)
    listed = ctl(gw, "access", "list", "--state", "approved", "--tenant", "e2e")["requests"]
    assert r.json()["id"] in [x["id"] for x in listed]


def test_access_request_validation(gw, idp):
    token = idp.token()
    error(ask(gw, token, endpoint="id-chat"), 400, "invalid_access_request")  # not approval-gated
    error(ask(gw, token, endpoint="no-such-endpoint"), 404, "model_not_found")
    error(ask(gw, token, reason="x" * 501), 400, "invalid_access_request")
    error(ask(gw, idp.token(groups=["gw:id-chat"])), 403, "endpoint_not_allowed")
    error(requests.post(gw.base_url + "/v1/access-requests", json={"endpoint": "id-gated", "reason": "r"}, timeout=10),
          401, "missing_api_key")
    error(ask(gw, tampered(token, sub="mallory")), 401, "token_bad_signature")
    out = ctl(gw, "access", "approve", "ar_0000000000000000", check=False)
    assert out.returncode != 0 and "access_request_not_found" in out.stderr


def test_no_token_in_any_log(gw):
    text = gw.log_text()
    assert SEEN_TOKENS
    for token in SEEN_TOKENS:
        assert not leaks(token, text), "a token reached the log"
