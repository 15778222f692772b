"""API keys, limits, budgets, usage, the admin API and gatewayctl (issue 4), on both hosts.

Uses the keyed-* endpoints and the price table of tests/e2e/gateway.yaml, and the host secret
GATEWAY_ADMIN_TOKEN = conftest.ADMIN_TOKEN."""
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import conftest
from admin_client import (MEMO_BOUND_S, Admin, cost_usd, fresh_minute, gatewayctl, log_records,
                          wait_until)
from conftest import PROVIDER_SECRET

ADMIN_TOKEN = conftest.ADMIN_TOKEN
# Every plaintext key this suite saw: none may ever appear in a host log.
SEEN_KEYS = []
RESET = re.compile(r"^(\d+ms|\d+s|\d+m\d+s|\d+h\d+m\d+s)$")


def admin(gw) -> Admin:
    return Admin(gw, ADMIN_TOKEN)


def new_key(gw, **spec):
    created = admin(gw).create_key(**spec)
    SEEN_KEYS.append(created["key"])
    assert created["key"].startswith("egw_") and len(created["key"]) >= 47
    return created["key"], created["id"]


def call(gw, key=None, model="keyed-chat", header="authorization", content="hello keys", path=None, **extra):
    headers = {"content-type": "application/json", **extra.pop("headers", {})}
    if key is not None:
        headers[header] = f"Bearer {key}" if header == "authorization" else key
    if path is None:
        path = {"keyed-embeddings": "/v1/embeddings", "keyed-completions": "/v1/completions"}.get(model, "/v1/chat/completions")
    if path == "/v1/embeddings":
        body = {"model": model, "input": [content]}
    elif path == "/v1/completions":
        body = {"model": model, "prompt": content}
    else:
        body = {"model": model, "messages": [{"role": "user", "content": content}]}
    body.update(extra)
    r = requests.post(gw.base_url + path, data=json.dumps(body), headers=headers, timeout=30)
    for k in SEEN_KEYS:
        assert k not in r.text, "a key was echoed in a response body"
    return r


def error(r, status, code):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code, err
    return err


# --- keys and authorization -------------------------------------------------------------------

def test_key_allowed_only_chat_gets_200_on_chat_and_403_elsewhere(gw):
    key, _ = new_key(gw, endpoints=["keyed-chat"])
    r = call(gw, key)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "echo: hello keys"
    err = error(call(gw, key, model="keyed-embeddings"), 403, "endpoint_not_allowed")
    assert '"keyed-embeddings"' in err["message"]
    error(call(gw, None), 401, "missing_api_key")


def test_every_sdk_header_is_accepted(gw):
    key, _ = new_key(gw)
    for header in ("authorization", "x-api-key", "api-key"):
        r = call(gw, key, header=header)
        assert r.status_code == 200, (header, r.text)


def test_invalid_keys_get_one_message_whatever_the_reason(gw):
    revoked, revoked_id = new_key(gw)
    admin(gw).revoke(revoked_id)
    expired, _ = new_key(gw, expires_at=int(time.time()) - 10)
    unknown = "egw_" + "A" * 43
    messages = set()
    for key in (unknown, expired, revoked, "sk-not-one-of-ours"):
        err = error(call(gw, key), 401, "invalid_api_key")
        messages.add(err["message"])
    assert len(messages) == 1, messages


def test_revoked_key_is_refused_within_the_stated_bound(gw):
    key, key_id = new_key(gw)
    assert call(gw, key).status_code == 200  # the isolate now memoizes this key
    admin(gw).revoke(key_id)
    revoked_at = time.time()
    r = wait_until(lambda: call(gw, key).status_code == 401, timeout=MEMO_BOUND_S + 10, interval=0.25)
    elapsed = time.time() - revoked_at
    assert r, "the revoked key was never refused"
    assert elapsed <= MEMO_BOUND_S + 1.5, f"refused only after {elapsed:.1f}s"
    for _ in range(3):
        error(call(gw, key), 401, "invalid_api_key")
    listed = [k for k in admin(gw).keys(tenant="e2e") if k["id"] == key_id]
    assert listed and listed[0]["state"] == "revoked" and "key" not in listed[0] and "hash" not in listed[0]


def test_expired_key_is_refused(gw):
    key, _ = new_key(gw, expires_in=3)
    assert call(gw, key).status_code == 200
    time.sleep(4)
    error(call(gw, key), 401, "invalid_api_key")


def test_rotated_key_replaces_the_old_one(gw):
    old, key_id = new_key(gw)
    assert call(gw, old).status_code == 200
    rotated = admin(gw).rotate(key_id)
    SEEN_KEYS.append(rotated["key"])
    assert rotated["id"] == key_id and rotated["key"] != old
    assert call(gw, rotated["key"]).status_code == 200
    assert wait_until(lambda: call(gw, old).status_code == 401, timeout=MEMO_BOUND_S + 10)


# --- limits and budgets -----------------------------------------------------------------------

def test_rpm_5_sixth_request_is_429_with_headers(gw):
    fresh_minute()
    key, _ = new_key(gw, rpm=5)
    for i in range(5):
        r = call(gw, key)
        assert r.status_code == 200, (i, r.text)
        assert r.headers["x-ratelimit-limit-requests"] == "5"
        assert r.headers["x-ratelimit-remaining-requests"] == str(4 - i)
        assert RESET.match(r.headers["x-ratelimit-reset-requests"]), r.headers["x-ratelimit-reset-requests"]
    r = call(gw, key)
    err = error(r, 429, "rate_limit_exceeded")
    assert "5 requests per minute" in err["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.headers["x-ratelimit-limit-requests"] == "5"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert RESET.match(r.headers["x-ratelimit-reset-requests"])


def test_endpoint_limit_from_mlflow_config(gw):
    fresh_minute()
    key, _ = new_key(gw)
    for _ in range(3):
        assert call(gw, key, model="keyed-limited").status_code == 200
    r = call(gw, key, model="keyed-limited")
    err = error(r, 429, "rate_limit_exceeded")
    assert 'endpoint "keyed-limited": 3 calls per minute' in err["message"]
    assert "retry-after" in r.headers
    assert call(gw, key).status_code == 200, "other endpoints are not limited"


def test_token_limit_trips_on_the_right_request(gw):
    fresh_minute()
    probe, _ = new_key(gw)
    tokens = call(gw, probe).json()["usage"]["total_tokens"]
    assert tokens > 0
    # Admitted while used < tpm: 0, T, 2T pass; 3T >= 2T + 1 is refused.
    key, _ = new_key(gw, tpm=2 * tokens + 1)
    for i in range(3):
        r = call(gw, key)
        assert r.status_code == 200, (i, r.text)
        assert r.headers["x-ratelimit-limit-tokens"] == str(2 * tokens + 1)
        assert r.headers["x-ratelimit-remaining-tokens"] == str(2 * tokens + 1 - i * tokens)
    r = call(gw, key)
    err = error(r, 429, "rate_limit_exceeded")
    assert "tokens per minute" in err["message"]
    assert r.headers["x-ratelimit-remaining-tokens"] == "0"


def test_usd_budget_trips_on_the_right_request(gw):
    probe, _ = new_key(gw)
    usage = call(gw, probe, model="keyed-priced").json()["usage"]
    per_request = cost_usd("priced-model", usage["prompt_tokens"], usage["completion_tokens"])
    assert per_request > 0
    # Spent before each request: 0, c, 2c < 2.5c pass; 3c >= 2.5c is refused.
    key, _ = new_key(gw, budget_usd=2.5 * per_request, budget_period="day")
    for i in range(3):
        r = call(gw, key, model="keyed-priced")
        assert r.status_code == 200, (i, r.text)
    err = error(call(gw, key, model="keyed-priced"), 429, "budget_exceeded")
    assert "budget" in err["message"] and "daily" in err["message"]


def _burst(gw, key, n):
    barrier = threading.Barrier(n)

    def one(_):
        barrier.wait()
        return call(gw, key).status_code

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def test_concurrent_requests_admit_exactly_the_limit_on_one_instance(gw):
    fresh_minute(30)
    limit, n = 5, 15
    key, _ = new_key(gw, rpm=limit)
    statuses = _burst(gw, key, n)
    assert set(statuses) <= {200, 429}, statuses
    admitted = statuses.count(200)
    if gw.name == "spin" and admitted != limit:
        # Every Spin request is a fresh instance and key-value@2.0 has no atomic increment:
        # concurrent requests race on the counter's read-modify-write (src/gateway/limits.rs).
        assert admitted >= limit, statuses
        pytest.xfail(f"spin: {admitted} of {n} concurrent requests admitted against rpm {limit} (documented)")
    assert admitted == limit, statuses


def test_exact_mode_admits_exactly_the_limit(gw):
    """`exact: true` keys: a Durable Object on Cloudflare, a lock in the key-value store on
    Spin (src/gateway/limits.rs `locked_count`)."""
    fresh_minute(30)
    limit, n = 5, 15
    key, key_id = new_key(gw, rpm=limit, exact=True)
    statuses = _burst(gw, key, n)
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) == limit, statuses
    rid = f"e2e-exact-{time.time_ns()}"
    r = call(gw, key, headers={"x-request-id": rid})
    error(r, 429, "rate_limit_exceeded")
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    ok_key, _ = new_key(gw, rpm=100, exact=True)
    rid = f"e2e-exact-ok-{time.time_ns()}"
    assert call(gw, ok_key, headers={"x-request-id": rid}).status_code == 200
    records = wait_until(lambda: log_records(gw, rid), timeout=10)
    assert records and records[0].get("limits") == "exact", records


# --- usage and cost ---------------------------------------------------------------------------

def _stream_usage(r):
    usage = None
    for line in r.iter_lines(decode_unicode=True):
        if line.startswith("data: ") and line != "data: [DONE]":
            event = json.loads(line[6:])
            usage = event.get("usage") or usage
    return usage


def test_usage_aggregates_equal_the_origin_usage(gw, origin):
    tenant = f"usage-{gw.name}-{time.time_ns()}"
    key, key_id = new_key(gw, tenant=tenant, endpoints=["keyed-chat", "keyed-embeddings", "keyed-completions"])
    origin.reset()
    expected_cost = 0.0
    answered = 0
    for model, content in [("keyed-chat", "one two three"), ("keyed-chat", "four"), ("keyed-chat", "five six"),
                           ("keyed-embeddings", "a b c d"), ("keyed-embeddings", "e"),
                           ("keyed-completions", "say something")]:
        r = call(gw, key, model=model, content=content)
        assert r.status_code == 200, r.text
        u = r.json()["usage"]
        upstream_model = {"keyed-chat": "gpt-4o-mini", "keyed-embeddings": "text-embedding-3-small",
                          "keyed-completions": "gpt-3.5-turbo-instruct"}[model]
        expected_cost += cost_usd(upstream_model, u["prompt_tokens"], u.get("completion_tokens", 0))
        answered += 1
    r = requests.post(gw.base_url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, stream=True,
                      json={"model": "keyed-chat", "messages": [{"role": "user", "content": "stream me"}],
                            "stream": True, "stream_options": {"include_usage": True}}, timeout=30)
    assert r.status_code == 200
    su = _stream_usage(r)
    assert su, "the stream reported no usage"
    expected_cost += cost_usd("gpt-4o-mini", su["prompt_tokens"], su["completion_tokens"])
    answered += 1
    origin.fault("status_500", times=1)
    assert call(gw, key).status_code == 502  # admitted and counted, no tokens
    assert call(gw, key, model="keyed-limited").status_code == 403  # refused: not counted

    reported = origin.stats()["usage"]
    assert reported["total_tokens"] > 0

    def totals_match():
        total = admin(gw).usage(key=key_id)["total"]
        ok = (total["prompt_tokens"], total["completion_tokens"]) == (reported["prompt_tokens"], reported["completion_tokens"])
        return total if ok and total["requests"] == answered + 1 else None

    total = wait_until(totals_match, timeout=15, interval=0.5)
    assert total, (admin(gw).usage(key=key_id), reported)
    assert total["errors"] == 1
    assert total["cost_usd"] == pytest.approx(expected_cost, rel=1e-6, abs=1e-9)
    by_tenant = admin(gw).usage(tenant=tenant)["total"]
    assert by_tenant == total
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert [d["date"] for d in admin(gw).usage(key=key_id, frm=today, to=today)["days"]] == [today]


# --- admin API and gatewayctl -----------------------------------------------------------------

def test_admin_api_needs_the_admin_token_and_is_audited(gw):
    a = admin(gw)
    for token in ("", "wrong-token"):
        r = a.request("GET", "/admin/keys", token=token)
        assert r.status_code == 401, r.text
        assert ADMIN_TOKEN not in r.text
    r = requests.get(gw.base_url + "/admin/keys", timeout=10)
    assert r.status_code == 401
    _, key_id = new_key(gw, tenant="audited")
    records = wait_until(lambda: [x for x in log_records(gw, key_id) if x.get("audit") == "admin"], timeout=10)
    assert records and records[0]["action"] == "keys.create" and records[0]["outcome"] == "ok", records
    denied = [x for x in log_records(gw, '"audit"') if x.get("outcome") == "denied"]
    assert denied, "refused admin calls are audited too"


def test_admin_config_shows_references_never_values(gw):
    live = admin(gw).config()
    text = json.dumps(live)
    assert "$OPENAI_API_KEY" in text
    assert PROVIDER_SECRET not in text


def test_gatewayctl_keys_create_openai_sdk_then_revoke(gw):
    openai = pytest.importorskip("openai")
    out = gatewayctl(gw, "keys", "create", "--tenant", "sdk", "--name", "e2e", "--endpoints", "keyed-chat", token=ADMIN_TOKEN)
    created = json.loads(out.stdout)
    SEEN_KEYS.append(created["key"])
    client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=created["key"], max_retries=0)
    reply = client.chat.completions.create(model="keyed-chat", messages=[{"role": "user", "content": "via sdk"}])
    assert reply.choices[0].message.content == "echo: via sdk"
    listed = gatewayctl(gw, "keys", "list", "--tenant", "sdk", token=ADMIN_TOKEN).stdout
    assert created["id"] in listed and created["key"] not in listed
    gatewayctl(gw, "keys", "revoke", created["id"], token=ADMIN_TOKEN)

    def refused():
        try:
            client.chat.completions.create(model="keyed-chat", messages=[{"role": "user", "content": "again"}])
            return False
        except openai.AuthenticationError as e:
            assert created["key"] not in str(e)
            return True

    started = time.time()
    assert wait_until(refused, timeout=MEMO_BOUND_S + 10, interval=0.25)
    assert time.time() - started <= MEMO_BOUND_S + 1.5


def test_gatewayctl_plan_apply_rollback(gw, tmp_path):
    base = dict(gw.config)
    base_file = tmp_path / "base.json"
    base_file.write_text(json.dumps(base))
    # Applying the running config stores it as a version to roll back to.
    gatewayctl(gw, "apply", str(base_file), token=ADMIN_TOKEN)
    plan = gatewayctl(gw, "plan", str(base_file), token=ADMIN_TOKEN).stdout
    assert "no changes" in plan, plan

    changed = json.loads(json.dumps(base))
    changed["version"] = f"e2e-keys-{gw.name}-{time.time_ns()}"
    extra = json.loads(json.dumps(next(e for e in base["endpoints"] if e["name"] == "keyed-embeddings")))
    extra["name"] = "keyed-extra"
    changed["endpoints"].append(extra)
    changed_file = tmp_path / "changed.json"
    changed_file.write_text(json.dumps(changed))
    plan = gatewayctl(gw, "plan", str(changed_file), token=ADMIN_TOKEN).stdout
    assert "+ endpoints[keyed-extra]" in plan and "~ version" in plan, plan
    assert PROVIDER_SECRET not in plan

    bad = json.loads(json.dumps(changed))
    bad["endpoints"][0]["endpoint_type"] = "llm/v1/chatt"
    bad_file = tmp_path / "bad.json"
    bad_file.write_text(json.dumps(bad))
    out = gatewayctl(gw, "plan", str(bad_file), token=ADMIN_TOKEN, check=False)
    assert out.returncode != 0 and "endpoints[0].endpoint_type" in out.stderr and 'did you mean "llm/v1/chat"' in out.stderr

    viewer, _ = new_key(gw)  # non-public endpoints are listed only to keys allowed them

    def models():
        r = requests.get(gw.base_url + "/v1/models", headers={"authorization": f"Bearer {viewer}"}, timeout=10)
        return [m["id"] for m in r.json()["data"]]

    try:
        gatewayctl(gw, "apply", str(changed_file), token=ADMIN_TOKEN)
        assert admin(gw).config()["version"] == changed["version"]
        assert wait_until(lambda: "keyed-extra" in models(), timeout=15)
    finally:
        gatewayctl(gw, "rollback", str(base["version"]), token=ADMIN_TOKEN)
    assert admin(gw).config()["version"] == base["version"]
    assert wait_until(lambda: "keyed-extra" not in models(), timeout=15)
    versions = admin(gw).request("GET", "/admin/config/versions", expect=200).json()
    assert versions["active"] == base["version"] and changed["version"] in versions["versions"]


def test_gatewayctl_usage_and_rotate(gw):
    key, key_id = new_key(gw, tenant="ctl")
    assert call(gw, key).status_code == 200
    usage = wait_until(lambda: json.loads(gatewayctl(gw, "usage", "--key", key_id, token=ADMIN_TOKEN).stdout)["total"]["requests"] == 1,
                       timeout=15, interval=0.5)
    assert usage
    rotated = json.loads(gatewayctl(gw, "keys", "rotate", key_id, token=ADMIN_TOKEN).stdout)
    SEEN_KEYS.append(rotated["key"])
    assert call(gw, rotated["key"]).status_code == 200


# --- last: nothing secret in any log ----------------------------------------------------------

def test_no_key_token_or_provider_secret_in_any_log(gw):
    assert SEEN_KEYS, "the suite created keys"
    log = gw.log_text()
    for key in SEEN_KEYS:
        assert key not in log
    assert PROVIDER_SECRET not in log
    assert ADMIN_TOKEN not in log
