"""The walking skeleton's behaviour, identical on both hosts (issue 2)."""
import json
import time

import requests

from conftest import PROVIDER_SECRET, public_names


def post(gw, path, body=None, raw=None, headers=None, **kw):
    data = raw if raw is not None else json.dumps(body)
    h = {"content-type": "application/json", **(headers or {})}
    return requests.post(gw.base_url + path, data=data, headers=h, timeout=kw.get("timeout", 30), stream=kw.get("stream", False))


def assert_error(r, status, code):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code, err
    assert err["type"] and err["message"]
    return err


CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello edge"}]}


def test_health(gw):
    r = requests.get(gw.base_url + "/health", timeout=10)
    assert r.status_code == 200
    assert r.json() == {"status": "OK"}


def test_chat_completion_is_forwarded(gw, origin):
    r = post(gw, "/v1/chat/completions", CHAT, headers={"authorization": "Bearer client-key-123"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "echo: hello edge"
    assert body["model"] == "gpt-4o-mini"  # the provider model, not the endpoint name
    assert body["usage"]["prompt_tokens"] == 2
    sent = origin.requests()
    assert len(sent) == 1
    assert sent[0]["path"] == "/v1/chat/completions"
    # The provider credential comes from the host secret; the client's key is never forwarded.
    assert sent[0]["headers"]["authorization"] == f"Bearer {PROVIDER_SECRET}"
    assert sent[0]["body"]["model"] == "gpt-4o-mini"
    assert sent[0]["body"]["max_tokens"] == 64  # endpoint parameter applied as a default


def test_embeddings_are_forwarded(gw, origin):
    r = post(gw, "/v1/embeddings", {"model": "embeddings", "input": ["a b", "c"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 8 for d in body["data"])
    assert origin.stats()["by_path"] == {"/v1/embeddings": 1}


def test_completions_are_forwarded(gw):
    r = post(gw, "/v1/completions", {"model": "completions", "prompt": "say hi"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == "echo: say hi"


def test_stream_passes_through_as_sse(gw):
    r = post(gw, "/v1/chat/completions", {**CHAT, "stream": True}, stream=True)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in r.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1] if json.loads(e)["choices"])
    assert text.split() == ["echo:", "hello", "edge"]


def test_models_lists_endpoints(gw):
    r = requests.get(gw.base_url + "/v1/models", timeout=10)
    assert r.status_code == 200
    # Anonymous clients see the public endpoints only (issue 12, L2).
    assert [m["id"] for m in r.json()["data"]] == public_names(gw.config)
    assert "keyed-chat" not in public_names(gw.config)


def test_malformed_json_is_400(gw):
    err = assert_error(post(gw, "/v1/chat/completions", raw='{"model": "chat", '), 400, "invalid_json")
    assert "not valid JSON" in err["message"]


def test_a_body_of_too_many_json_values_is_413_naming_the_limit(gw):
    # 160 KB, under the byte limit, but 20,000 objects: ~14 MB as a tree; refused while read.
    err = assert_error(post(gw, "/v1/chat/completions", {**CHAT, "x": [{"a": 1}] * 20_000}), 413, "request_too_large")
    assert "more than 4096 JSON object keys" in err["message"], err
    assert post(gw, "/v1/chat/completions", {**CHAT, "x": [{"a": 1}] * 1_000}).status_code == 200
    # 80 KB of numbers: no memory of their own, but each read, written and freed (CPU).
    err = assert_error(post(gw, "/v1/chat/completions", {**CHAT, "x": [1] * 40_000}), 413, "request_too_large")
    assert "more than 32768 JSON values and keys" in err["message"], err
    assert post(gw, "/v1/chat/completions", {**CHAT, "x": [1] * 30_000}).status_code == 200


def test_unknown_model_is_404_naming_it(gw):
    err = assert_error(post(gw, "/v1/chat/completions", {**CHAT, "model": "gpt-9"}), 404, "model_not_found")
    assert '"gpt-9"' in err["message"]


def test_endpoint_type_mismatch_is_400(gw):
    assert_error(post(gw, "/v1/embeddings", {"model": "chat", "input": "x"}), 400, "endpoint_type_mismatch")


def test_unknown_route_is_404(gw):
    assert_error(post(gw, "/v1/nothing", {}), 404, "route_not_found")


def test_unreachable_origin_is_502(gw):
    err = assert_error(post(gw, "/v1/chat/completions", {**CHAT, "model": "dead"}), 502, "origin_unreachable")
    assert PROVIDER_SECRET not in err["message"]


def test_hanging_origin_is_504_within_the_timeout(gw, origin):
    origin.fault("hang", times=1)
    started = time.time()
    assert_error(post(gw, "/v1/chat/completions", CHAT), 504, "origin_timeout")
    assert time.time() - started < 10


def test_origin_error_status_is_reported(gw, origin):
    origin.fault("status_500", times=1)
    err = assert_error(post(gw, "/v1/chat/completions", CHAT), 502, "origin_error")
    assert "500" in err["message"]


def test_missing_config_is_503_naming_the_kv_entry(gw):
    gw.kv_delete("config:active")
    try:
        deadline = time.time() + 15
        while True:  # the isolate may serve its memo for config_ttl_ms (1 s here)
            r = post(gw, "/v1/chat/completions", CHAT)
            if r.status_code != 200 or time.time() > deadline:
                break
            time.sleep(0.3)
        err = assert_error(r, 503, "config_missing")
        assert "config:active" in err["message"]
    finally:
        gw.kv_put_json("config:active", gw.config)
    deadline = time.time() + 15
    while post(gw, "/v1/chat/completions", CHAT).status_code != 200:
        assert time.time() < deadline, "config restore was not picked up"
        time.sleep(0.3)


def test_request_id_is_echoed_or_generated(gw):
    r = post(gw, "/v1/chat/completions", CHAT, headers={"x-request-id": "e2e-trace-42"})
    assert r.headers["x-request-id"] == "e2e-trace-42"
    r = post(gw, "/v1/chat/completions", CHAT)
    assert len(r.headers["x-request-id"]) == 24


def test_one_structured_log_line_per_request_without_secrets(gw):
    rid = f"e2e-log-{gw.name}-{time.time_ns()}"
    post(gw, "/v1/chat/completions", CHAT, headers={"x-request-id": rid, "authorization": "Bearer client-secret-999"})
    deadline = time.time() + 10
    lines = []
    while not lines and time.time() < deadline:
        lines = [l for l in gw.log_text().splitlines() if rid in l]
        time.sleep(0.2)
    assert len(lines) == 1, lines
    record = json.loads(lines[0][lines[0].index("{"):])
    assert record["endpoint"] == "chat" and record["status"] == 200 and record["provider"] == "openai"
    assert record["origin"].startswith("http://127.0.0.1:")
    assert isinstance(record["latency_ms"], int)
    log = gw.log_text()
    assert PROVIDER_SECRET not in log
    assert "client-secret-999" not in log
