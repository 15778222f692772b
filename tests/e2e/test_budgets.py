"""Budgets and token limits under reserve-then-settle (issue 12, "must show 3"), on both hosts.

Before a request is forwarded the gateway reserves its worst case (prompt estimate +
`max_tokens`, or the endpoint's `limits.max_tokens` ceiling, else `limits.default_max_tokens`
= 4096; at the endpoint's price for USD budgets) against the key's tpm and budget, and settles
to the real usage after the answer (src/gateway/features/limits/mod.rs). A stream may be
admitted with less than its worst case (down to its prompt + 1 token) and is stopped at the
room it had (src/gateway/pipeline/stream.rs `StreamCap`); streams are charged even when the
client did not ask for a usage chunk (the gateway always asks OpenAI-style origins for one).

1. A burst of concurrent requests against a nearly spent budget / tpm: spend never passes the
   limit by more than one reservation in `kv` mode, and not at all with `exact: true` keys.
2. A stream whose answer would pass the key's remaining tokens or USD is stopped there: the
   client sees `finish_reason: "length"`, an error event (`rate_limit_exceeded` /
   `budget_exceeded`), the end of the stream; the origin request is cancelled and the charge
   is the cap, not the whole answer. Raw SSE, the `openai` SDK and the `anthropic` SDK.
3. A stream with `stream_options.include_usage: false` (or none) is still charged what the
   origin reported: admin usage, the log line and the key's token counter show it.

The mock origin echoes `echo: <last user text>` and counts whitespace-separated words as
tokens; `slow_stream` paces its events so the gateway reads them one at a time."""
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anthropic
import openai
import pytest
import requests

import conftest
from admin_client import Admin, cost_usd, fresh_minute, log_records, wait_until

ADMIN_TOKEN = conftest.ADMIN_TOKEN
PRICED, PRICED_MODEL = "keyed-priced", "priced-model"   # $1000 / $2000 per 1M tokens
CHAT, CHAT_MODEL = "keyed-chat", "gpt-4o-mini"
SEEN_KEYS = []


# --- helpers ----------------------------------------------------------------------------------

def admin(gw) -> Admin:
    return Admin(gw, ADMIN_TOKEN)


def new_key(gw, **spec):
    spec.setdefault("tenant", f"budgets-{gw.name}")
    created = admin(gw).create_key(**spec)
    SEEN_KEYS.append(created["key"])
    return created["key"], created["id"]


def chat_body(model, content, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def post(gw, key, body, rid=None, stream=False, path="/v1/chat/completions"):
    headers = {"authorization": f"Bearer {key}"}
    if rid:
        headers["x-request-id"] = rid
    return requests.post(gw.base_url + path, json=body, headers=headers, stream=stream, timeout=60)


def prompt_estimate(body: dict) -> int:
    """The gateway's prompt estimate (src/gateway/features/usage.rs `estimate_prompt_tokens`):
    the bytes of every string under the prompt fields (map keys and `model` excluded) over
    three, rounded up, + 4 per message + 1."""
    def size(value) -> int:
        if isinstance(value, str):
            return len(value.encode())
        if isinstance(value, list):
            return sum(size(v) for v in value)
        if isinstance(value, dict):
            return sum(size(v) for k, v in value.items() if k != "model")
        return 0

    text = sum(size(body[k]) for k in ("messages", "prompt", "input", "system", "tools", "functions", "documents")
               if k in body)
    return -(-text // 3) + 4 * len(body.get("messages", [])) + 1


def nusd(model: str, prompt: int, completion: int) -> int:
    """A cost in nano-USD, rounded as the gateway does (`Price::cost_nusd`)."""
    return round(cost_usd(model, prompt, completion) * 1e9)


def usd_text(n: int) -> str:
    """The gateway's spelling of an amount (src/gateway/features/limits `usd`)."""
    micros = -(-n // 1000)
    frac = f"{micros % 1_000_000:06d}"
    trimmed = frac.rstrip("0")
    return f"${micros // 1_000_000}.{frac[:2] if len(trimmed) < 2 else trimmed}"


def sse_events(r) -> list:
    """(event name or None, data) for every event of a streamed response, read to its end."""
    events, name = [], None
    for line in r.iter_lines(decode_unicode=True):
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            events.append((name, line[5:].strip()))
            name = None
    return events


def usage_when(gw, key_id, requests_n, timeout=20):
    """The key's usage total once it counts `requests_n` requests (accounting runs after the
    response; on Cloudflare in `waitUntil`)."""
    def ready():
        total = usage_total(gw, key_id)
        return total if total and total["requests"] == requests_n else None

    total = wait_until(ready, timeout=timeout, interval=0.3)
    assert total, f"usage never reached {requests_n} requests: {usage_total(gw, key_id)}"
    return total


def transient_list_failure(r) -> bool:
    """The Spin test host's racy listing (tests/spin-host `get_keys` reads the directory again
    when a file it lists is renamed meanwhile, e.g. by a concurrent usage write, and fails the
    whole list after 50 such reads): a 500 "cannot list", or, once the host retries KV
    failures, the retryable 503 `kv_unavailable`."""
    if r.status_code == 500 and "cannot list" in r.text:
        return True
    return r.status_code == 503 and '"kv_unavailable"' in r.text


def usage_total(gw, key_id):
    """The key's usage total; None on a transient listing failure (a poll retries)."""
    r = admin(gw).request("GET", f"/admin/usage?key={key_id}")
    if transient_list_failure(r):
        return None
    assert r.status_code == 200, r.text
    return r.json()["total"]


def log_of(gw, rid, timeout=20):
    records = wait_until(lambda: [r for r in log_records(gw, rid) if r.get("request_id") == rid], timeout=timeout)
    assert records, f"no log line for {rid}"
    return records[0]


def error_of(r, status, code):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code, err
    return err


# --- 1. a burst against a nearly spent limit --------------------------------------------------

BURST = 15
MAX_TOKENS = 5


@pytest.mark.parametrize("mode", ["kv", "exact"])
@pytest.mark.parametrize("kind", ["usd", "tpm"])
def test_burst_against_a_nearly_spent_limit_overshoots_at_most_one_reservation(gw, kind, mode):
    """Two requests spend part of the limit; what is left is 2.5 reservations. Then 15
    requests at once. Every admitted request reserved its worst case first, so the spend stays
    within the limit (`exact`: the Durable Object on Cloudflare, compare-and-swap on Spin) or
    passes it by at most one reservation (`kv`). A limit that only checked "spent < limit"
    before forwarding would admit the whole burst: 15 × the real cost, far past the limit."""
    if kind == "tpm":
        fresh_minute(40)
    body = chat_body(PRICED, "hello budgets", max_tokens=MAX_TOKENS)
    estimate = prompt_estimate(body)
    probe, _ = new_key(gw)
    r = post(gw, probe, body)
    assert r.status_code == 200, r.text
    u = r.json()["usage"]
    if kind == "usd":
        per, reserve = nusd(PRICED_MODEL, u["prompt_tokens"], u["completion_tokens"]), nusd(PRICED_MODEL, estimate, MAX_TOKENS)
        spent_of = lambda total: round(total["cost_usd"] * 1e9)  # noqa: E731
        code = "budget_exceeded"
    else:
        per, reserve = u["prompt_tokens"] + u["completion_tokens"], estimate + MAX_TOKENS
        spent_of = lambda total: total["prompt_tokens"] + total["completion_tokens"]  # noqa: E731
        code = "rate_limit_exceeded"
    assert 0 < per < reserve, (per, reserve)
    limit = 2 * per + 2 * reserve + reserve // 2
    spec = {"budget_usd": limit / 1e9, "budget_period": "day"} if kind == "usd" else {"tpm": limit}
    key, key_id = new_key(gw, exact=(mode == "exact"), **spec)
    prefix = f"burst-{kind}-{mode}-{gw.name}-{time.time_ns()}"

    for i in range(2):
        r = post(gw, key, body, rid=f"{prefix}-pre{i}")
        assert r.status_code == 200, (i, r.text)
    assert spent_of(usage_when(gw, key_id, 2)) == 2 * per

    barrier = threading.Barrier(BURST)

    def one(i):
        barrier.wait()
        r = post(gw, key, body, rid=f"{prefix}-b{i}")
        return r.status_code, (r.json().get("error") or {}) if r.status_code != 200 else {}

    with ThreadPoolExecutor(max_workers=BURST) as pool:
        results = list(pool.map(one, range(BURST)))
    statuses = [s for s, _ in results]
    assert set(statuses) <= {200, 429}, results
    admitted, refused = statuses.count(200), statuses.count(429)
    assert admitted >= 1, results           # 2.5 reservations were left: the first one fits
    assert refused >= 1, results            # ... and 15 do not
    for status, err in results:
        if status == 429:
            assert err["code"] == code and "reserved" in err["message"], err

    total = usage_when(gw, key_id, 2 + admitted)
    spent = spent_of(total)
    # Every admitted request was charged its real usage, once.
    assert spent == (2 + admitted) * per, (total, per, admitted)
    # Exact counting: never past the limit. kv: at most one reservation past it.
    exact_counting = mode == "exact" or gw.name == "spin"
    allowed = 0 if exact_counting else reserve
    print(f"{gw.name} {kind} {mode}: limit {limit}, reservation {reserve}, real {per}; "
          f"burst admitted {admitted} of {BURST}; spent {spent}, overshoot {max(0, spent - limit)}")
    assert spent <= limit + allowed, (spent, limit, allowed, results)
    # The arithmetic of reservations: an admission needs a whole reservation of room.
    most = max(k for k in range(BURST + 1) if (2 + k - 1) * per + reserve <= limit + allowed)
    assert admitted <= most, (admitted, most)

    # The log lines agree: one per request, charged the same, counted in the expected mode
    # (on Spin every limit is counted by the exact counter: "exact").
    rids = [f"{prefix}-pre{i}" for i in range(2)] + [f"{prefix}-b{i}" for i in range(BURST)]

    def all_lines():
        found = [r for r in log_records(gw, prefix) if r.get("request_id") in rids]
        return found if len(found) == len(rids) else None

    lines = wait_until(all_lines, timeout=20)
    assert lines, f"{len(log_records(gw, prefix))} log lines of {len(rids)}"
    ok = [r for r in lines if r["status"] == 200]
    assert len(ok) == 2 + admitted
    assert sum(r["prompt_tokens"] for r in ok) == total["prompt_tokens"]
    assert sum(r["completion_tokens"] for r in ok) == total["completion_tokens"]
    assert {r["limits"] for r in ok} == {"exact" if exact_counting else "kv"}, {r["limits"] for r in ok}
    assert sorted(r["error"] for r in lines if r["status"] == 429) == [code] * refused


def test_reservation_is_the_endpoint_ceiling_or_the_default_max_tokens(gw):
    """No max_tokens: the endpoint's `limits.max_tokens` ceiling (budget-capped: 16) is
    reserved; on an endpoint without one, limits.default_max_tokens (4096)."""
    fresh_minute(20)
    limit = 1000
    key, _ = new_key(gw, tpm=limit)
    capped = chat_body("budget-capped", "hello ceiling")
    r = post(gw, key, capped)
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-remaining-tokens"] == str(limit - prompt_estimate(capped) - 16)
    used = r.json()["usage"]["total_tokens"]

    plain = chat_body(CHAT, "hello default")
    err = error_of(post(gw, key, plain), 429, "rate_limit_exceeded")
    assert (f"{limit} tokens per minute (used or reserved {used}; "
            f"this request may use up to {prompt_estimate(plain) + 4096} tokens (lower max_tokens to fit)") \
        in err["message"], err
    r = post(gw, key, {**plain, "max_tokens": 20})
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-remaining-tokens"] == str(limit - used - prompt_estimate(plain) - 20)


# --- 2. a stream stopped at the cap -----------------------------------------------------------

WORDS = 300          # the echoed answer: 301 words, one event each
OUTPUT_ROOM = 40     # completion tokens the cap leaves the stream after its prompt estimate
PACE_MS = 25         # the origin's gap between events (so each is read on its own)
# Events the gateway may read together in one chunk past the crossing one (a busy machine):
# the crossing is checked per chunk read.
SLACK = 2
LONG = " ".join(["w"] * WORDS)
FULL_ANSWER = "echo: " + LONG


def capped_key(gw, kind, body):
    """A key whose room is the request's prompt estimate + OUTPUT_ROOM output tokens: in
    tokens (tpm) or in USD at the endpoint's price. Returns (key, id, estimate, room, code)."""
    estimate = prompt_estimate(body)
    if kind == "tokens":
        room = estimate + OUTPUT_ROOM
        key, key_id = new_key(gw, tpm=room)
        return key, key_id, estimate, room, "rate_limit_exceeded"
    room = nusd(PRICED_MODEL, estimate, OUTPUT_ROOM)
    key, key_id = new_key(gw, budget_usd=room / 1e9, budget_period="day")
    return key, key_id, estimate, room, "budget_exceeded"


def cap_message(kind, room):
    if kind == "tokens":
        return f"the stream was stopped at the API key's token limit of {room} tokens per minute"
    return f"the stream was stopped at the API key's daily budget ({usd_text(room)} left when the request started)"


def check_stopped_stream(gw, origin, kind, model, key, key_id, estimate, room, code, rid, deltas):
    """After a capped stream: the log line, the origin's cancelled stream, the charge (about
    the cap, not the whole answer) and the key's counter (the next request is refused)."""
    # The cap is crossed by the (OUTPUT_ROOM + 1)th content delta: prompt estimate + deltas.
    assert OUTPUT_ROOM + 1 <= deltas <= OUTPUT_ROOM + 1 + SLACK, deltas
    record = log_of(gw, rid)
    assert record["stream"] is True and record["stream_completed"] is False, record
    assert record["stream_stopped"] == code, record
    # Charged: the prompt estimate and what was sent (the origin never got to its usage).
    assert (record["prompt_tokens"], record["completion_tokens"]) == (estimate, deltas), record
    wait_until(lambda: origin.stats()["streams_abandoned"] >= 1, timeout=10)
    assert origin.stats()["streams_abandoned"] == 1, origin.stats()
    total = usage_when(gw, key_id, 1)
    assert (total["prompt_tokens"], total["completion_tokens"]) == (estimate, deltas), total
    charged_cost = nusd(model, estimate, deltas)
    assert round(total["cost_usd"] * 1e9) == charged_cost, total
    if kind == "tokens":
        charged = estimate + deltas
        assert room < charged <= room + 1 + SLACK, (charged, room)
        assert charged < WORDS + len(FULL_ANSWER.split())  # far below the whole answer
    else:
        per_token = nusd(PRICED_MODEL, 0, 1)
        assert room < charged_cost <= room + (1 + SLACK) * per_token, (charged_cost, room)
    # The settled charge is on the key's counter: nothing more fits.
    r = post(gw, key, chat_body(model_endpoint(kind), "again", max_tokens=1))
    error_of(r, 429, code)
    if kind == "tokens":
        assert r.headers["x-ratelimit-remaining-tokens"] == "0"


def model_endpoint(kind):
    return CHAT if kind == "tokens" else PRICED


def provider_model(kind):
    return CHAT_MODEL if kind == "tokens" else PRICED_MODEL


@pytest.mark.parametrize("kind", ["tokens", "usd"])
def test_stream_stopped_at_the_cap_raw_sse(gw, origin, kind):
    if kind == "tokens":
        fresh_minute(30)  # the tpm window must not roll over mid-test
    body = chat_body(model_endpoint(kind), LONG, stream=True)
    key, key_id, estimate, room, code = capped_key(gw, kind, body)
    origin.fault("slow_stream", times=1, delay_ms=PACE_MS)
    rid = f"cap-raw-{kind}-{gw.name}-{time.time_ns()}"
    started = time.time()
    r = post(gw, key, body, rid=rid, stream=True)
    assert r.status_code == 200, r.text
    if kind == "tokens":
        # The stream was granted all the room left (its worst case, prompt + 4096, did not fit).
        assert r.headers["x-ratelimit-limit-tokens"] == str(room)
        assert r.headers["x-ratelimit-remaining-tokens"] == "0"
    events = sse_events(r)
    elapsed = time.time() - started
    data = [d for _, d in events]
    assert data[-1] == "[DONE]", data[-3:]
    error = json.loads(data[-2])["error"]
    assert error["code"] == code and error["type"] == "rate_limit_error", error
    assert error["message"] == cap_message(kind, room), error
    chunks = [json.loads(d) for d in data[:-2]]
    finishes = [c["choices"][0].get("finish_reason") for c in chunks if c.get("choices")]
    assert finishes[-1] == "length" and not any(finishes[:-1]), finishes[-3:]
    assert chunks[-1]["choices"][0]["delta"] == {}, chunks[-1]
    assert not any(c.get("usage") for c in chunks), "the client did not ask for usage"
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks if c.get("choices")]
    deltas = sum(1 for p in pieces if p)
    text = "".join(p or "" for p in pieces)
    assert FULL_ANSWER.startswith(text) and len(text) < len(FULL_ANSWER) // 5, text
    # Stopped early, not after the whole paced answer (301 events × PACE_MS).
    assert elapsed < WORDS * PACE_MS / 1000 / 2, elapsed
    check_stopped_stream(gw, origin, kind, provider_model(kind), key, key_id, estimate, room, code, rid, deltas)


@pytest.mark.parametrize("kind", ["tokens", "usd"])
def test_stream_stopped_at_the_cap_openai_sdk(gw, origin, kind):
    if kind == "tokens":
        fresh_minute(30)  # the tpm window must not roll over mid-test
    body = chat_body(model_endpoint(kind), LONG, stream=True)
    key, key_id, estimate, room, code = capped_key(gw, kind, body)
    origin.fault("slow_stream", times=1, delay_ms=PACE_MS)
    rid = f"cap-sdk-{kind}-{gw.name}-{time.time_ns()}"
    client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=key, max_retries=0, timeout=60)
    chunks = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in client.chat.completions.create(model=body["model"], messages=body["messages"], stream=True,
                                                    extra_headers={"x-request-id": rid}):
            chunks.append(chunk)
    assert raised.value.code == code, raised.value.body
    assert raised.value.message == cap_message(kind, room)
    assert chunks and chunks[-1].choices[0].finish_reason == "length"
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert FULL_ANSWER.startswith(text) and len(text) < len(FULL_ANSWER) // 5, text
    deltas = sum(1 for c in chunks if c.choices[0].delta.content)
    check_stopped_stream(gw, origin, kind, provider_model(kind), key, key_id, estimate, room, code, rid, deltas)


@pytest.mark.parametrize("client", ["anthropic_sdk", "raw"])
def test_stream_stopped_at_the_cap_anthropic_messages(gw, origin, client):
    """An Anthropic Messages client (/v1/messages) of an OpenAI-format endpoint: the stream
    ends the Messages way (`message_delta` with stop_reason `max_tokens`, `message_stop`), then
    an `error` event naming the cap."""
    fresh_minute(30)
    # The Messages request becomes this chat request (string content stays a string).
    key, key_id, estimate, room, code = capped_key(gw, "tokens", chat_body(CHAT, LONG, max_tokens=1000, stream=True))
    origin.fault("slow_stream", times=1, delay_ms=PACE_MS)
    rid = f"cap-anthropic-{client}-{gw.name}-{time.time_ns()}"
    messages = [{"role": "user", "content": LONG}]
    if client == "anthropic_sdk":
        claude = anthropic.Anthropic(base_url=gw.base_url, api_key=key, max_retries=0, timeout=60)
        events = []
        with pytest.raises(anthropic.APIStatusError) as raised:
            for event in claude.messages.create(model=CHAT, max_tokens=1000, messages=messages, stream=True,
                                                extra_headers={"x-request-id": rid}):
                events.append(event)
        assert raised.value.body["type"] == "error", raised.value.body
        assert raised.value.body["error"]["type"] == "rate_limit_error", raised.value.body
        assert raised.value.body["error"]["message"] == f"{cap_message('tokens', room)} ({code})"
        kinds = [e.type for e in events]
        assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"], kinds[-5:]
        assert events[-2].delta.stop_reason == "max_tokens"
        texts = [e.delta.text for e in events if e.type == "content_block_delta"]
    else:
        r = post(gw, key, {"model": CHAT, "max_tokens": 1000, "messages": messages, "stream": True},
                 rid=rid, stream=True, path="/v1/messages")
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-remaining-tokens"] == "0"
        events = [(name, json.loads(d)) for name, d in sse_events(r)]
        names = [n for n, _ in events]
        assert names[-4:] == ["content_block_stop", "message_delta", "message_stop", "error"], names[-6:]
        assert events[-3][1]["delta"]["stop_reason"] == "max_tokens"
        assert events[-1][1] == {"type": "error", "error": {"type": "rate_limit_error",
                                                            "message": f"{cap_message('tokens', room)} ({code})"}}
        texts = [d["delta"]["text"] for n, d in events if n == "content_block_delta"]
    text = "".join(texts)
    assert FULL_ANSWER.startswith(text) and len(text) < len(FULL_ANSWER) // 5, text
    check_stopped_stream(gw, origin, "tokens", CHAT_MODEL, key, key_id, estimate, room, code, rid, len(texts))


# --- 3. a stream without a usage chunk is still charged --------------------------------------

@pytest.mark.parametrize("client", ["raw-include-false", "raw-no-options", "openai-sdk-include-false"])
def test_stream_without_usage_chunk_is_still_charged(gw, origin, client):
    fresh_minute(20)
    limit = 10_000
    key, key_id = new_key(gw, tpm=limit)
    content = "count these five words"
    prompt, completion = 4, 5          # the mock's words: prompt, and "echo: " + prompt
    rid = f"nousage-{client}-{gw.name}-{time.time_ns()}"
    body = chat_body(CHAT, content, stream=True)
    if client != "raw-no-options":
        body["stream_options"] = {"include_usage": False}
    if client.startswith("raw"):
        r = post(gw, key, body, rid=rid, stream=True)
        assert r.status_code == 200, r.text
        data = [d for _, d in sse_events(r)]
        assert data[-1] == "[DONE]"
        chunks = [json.loads(d) for d in data[:-1]]
        assert all(c.get("choices") for c in chunks), "no usage-only chunk"
        assert not any(c.get("usage") for c in chunks)
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    else:
        sdk = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=key, max_retries=0, timeout=30)
        chunks = list(sdk.chat.completions.create(model=CHAT, messages=body["messages"], stream=True,
                                                  stream_options={"include_usage": False},
                                                  extra_headers={"x-request-id": rid}))
        assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert chunks[-1].choices[0].finish_reason == "stop"
    assert text == "echo: " + content
    # The origin was asked for usage whatever the client said.
    sent = [q for q in origin.requests() if q["path"] == "/v1/chat/completions"][-1]["body"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}, sent

    # Charged the origin's usage (not the gateway's estimate): the log line and admin usage.
    record = log_of(gw, rid)
    assert record["stream_completed"] is True and "stream_stopped" not in record, record
    assert (record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]) == \
        (prompt, completion, prompt + completion), record
    assert record["cost_usd"] == pytest.approx(cost_usd(CHAT_MODEL, prompt, completion), rel=1e-6, abs=1e-12)
    assert record["limits"] == ("kv" if gw.name == "workerd" else "exact"), record
    total = usage_when(gw, key_id, 1)
    assert (total["prompt_tokens"], total["completion_tokens"]) == (prompt, completion), total
    assert round(total["cost_usd"] * 1e9) == nusd(CHAT_MODEL, prompt, completion), total
    # ... and the key's token counter: the next request sees the stream's tokens as used.
    nxt = chat_body(CHAT, "next", max_tokens=5)
    r = post(gw, key, nxt)
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-remaining-tokens"] == str(limit - prompt - completion - prompt_estimate(nxt) - 5)


# --- last: no key in any log ------------------------------------------------------------------

def test_no_budget_key_in_any_log(gw):
    assert SEEN_KEYS
    log = gw.log_text()
    for key in SEEN_KEYS:
        assert key not in log
