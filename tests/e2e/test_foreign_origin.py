"""The official SDKs through both hosts against a foreign origin (issue 11, items 1-2): Python's
standard-library http.server (py_origin.py) instead of the project's own Rust mock.

That origin reads request bodies by Content-Length only and refuses chunked ones (411), the way
many model servers, HTTP/1.0 servers and WAFs do, so these cases catch a host that frames its
outbound bodies as chunked. Its answers come in three framings (Content-Length, chunked,
HTTP/1.0 close-delimited), which every host must read whole. Each case checks what the client
got (content, usage) and what reached the origin (the body whole with a Content-Length, the
provider credential, never the client's key)."""
import base64
import json
import socket
import struct

import anthropic
import openai
import pytest
import requests
from mlflow.deployments import get_deploy_client

from admin_client import Admin
from conftest import ADMIN_TOKEN, PROVIDER_SECRET
from py_origin import ANSWER_PREFIX, embedding_of

CLIENT_KEY = "unused-client-key"
# The py-chat* endpoints differ only in how the origin frames its answers.
FRAMED_CHAT = {"py-chat": "cl", "py-chat-chunked": "chunked", "py-chat-http10": "http10"}
SYSTEM, USER = "be brief", "hello from the sdk"
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
ANSWER = f"{ANSWER_PREFIX} {USER}"
# The origin counts words: 2 + 4 prompt tokens, "py-echo: hello from the sdk" is 5.
PROMPT_TOKENS, COMPLETION_TOKENS = 6, 5


@pytest.fixture
def oai(gw):
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


@pytest.fixture
def claude_sdk(gw):
    return anthropic.Anthropic(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=30)


def only_request(py_origin, path: str) -> dict:
    """The one request the origin received; checks it arrived as any HTTP/1.1 origin wants it."""
    received = py_origin.requests()
    assert len(received) == 1, [(r["path"], r["transfer_encoding"], r["content_length"]) for r in received]
    sent = received[0]
    assert sent["path"] == path
    # Framed by length, whole: no chunked encoding, and the length is the body's.
    assert sent["transfer_encoding"] is None, sent["header_list"]
    assert sent["content_length"] == str(len(sent["raw_body"])) and sent["raw_body"]
    assert isinstance(sent["body"], dict), sent["raw_body"][:200]
    # The provider credential comes from the host's secrets; the client's key stays behind.
    assert sent["headers"]["authorization"] == f"Bearer {PROVIDER_SECRET}"
    assert_no_client_key(sent, CLIENT_KEY)
    return sent


def assert_no_client_key(sent: dict, key: str) -> None:
    assert all(key not in v for _, v in sent["header_list"]), sent["header_list"]
    assert key.encode() not in sent["raw_body"]


# --- openai --------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", list(FRAMED_CHAT))
def test_openai_chat(oai, py_origin, model):
    r = oai.chat.completions.create(model=model, messages=MESSAGES, max_tokens=50)
    assert r.choices[0].message.content == ANSWER
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == \
        (PROMPT_TOKENS, COMPLETION_TOKENS, PROMPT_TOKENS + COMPLETION_TOKENS)
    assert r.model == "py-gpt"
    sent = only_request(py_origin, "/v1/chat/completions")
    assert sent["framing"] == FRAMED_CHAT[model]
    assert sent["body"]["model"] == "py-gpt" and sent["body"]["max_tokens"] == 50
    assert sent["body"]["messages"] == MESSAGES
    assert not sent["body"].get("stream")


@pytest.mark.parametrize("model", list(FRAMED_CHAT))
def test_openai_chat_streamed(oai, py_origin, model):
    chunks = list(oai.chat.completions.create(model=model, messages=MESSAGES, max_tokens=50, stream=True,
                                              stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = [c.usage for c in chunks if c.usage]
    assert len(usage) == 1
    assert (usage[0].prompt_tokens, usage[0].completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    sent = only_request(py_origin, "/v1/chat/completions")
    assert sent["body"]["stream"] is True and sent["body"]["stream_options"] == {"include_usage": True}
    assert sent["body"]["messages"] == MESSAGES


def test_openai_chat_length_limit_reaches_the_origin(oai, py_origin):
    r = oai.chat.completions.create(model="py-chat", messages=[{"role": "user", "content": "one two three four"}],
                                    max_tokens=2)
    assert r.choices[0].message.content == f"{ANSWER_PREFIX} one"
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 2
    assert only_request(py_origin, "/v1/chat/completions")["body"]["max_tokens"] == 2


def test_large_request_body_arrives_whole(oai, py_origin):
    """A body of many write chunks (the Spin host writes 4 KiB at a time) still arrives whole,
    with a Content-Length that is its exact size."""
    big = " ".join(f"w{i}" for i in range(12_000))  # ~70 KB of JSON
    r = oai.chat.completions.create(model="py-chat-chunked", messages=[{"role": "user", "content": big}])
    assert r.choices[0].message.content == f"{ANSWER_PREFIX} {big}"
    assert r.usage.prompt_tokens == 12_000
    sent = only_request(py_origin, "/v1/chat/completions")
    assert int(sent["content_length"]) > 64 * 1024
    assert sent["body"]["messages"][0]["content"] == big


@pytest.mark.parametrize("model", ["py-embeddings", "py-embeddings-http10"])
def test_openai_embeddings_float(oai, py_origin, model):
    inputs = ["alpha beta", "gamma"]
    r = oai.embeddings.create(model=model, input=inputs, encoding_format="float")
    assert [d.index for d in r.data] == [0, 1]
    assert [d.embedding for d in r.data] == [embedding_of(t) for t in inputs]
    assert r.usage.prompt_tokens == 3 and r.usage.total_tokens == 3
    sent = only_request(py_origin, "/v1/embeddings")
    assert sent["body"] == {"model": "py-embedder", "input": inputs, "encoding_format": "float"}


def test_openai_embeddings_base64_explicit(oai, py_origin):
    r = oai.embeddings.create(model="py-embeddings", input="delta epsilon", encoding_format="base64")
    raw = base64.b64decode(r.data[0].embedding)
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == embedding_of("delta epsilon")
    assert only_request(py_origin, "/v1/embeddings")["body"]["encoding_format"] == "base64"


def test_openai_embeddings_sdk_default_is_base64_on_the_wire(oai, py_origin):
    """Without `encoding_format` the openai SDK asks for base64 and decodes it itself."""
    r = oai.embeddings.create(model="py-embeddings", input=["zeta"])
    assert r.data[0].embedding == embedding_of("zeta")
    assert only_request(py_origin, "/v1/embeddings")["body"]["encoding_format"] == "base64"


def test_client_gateway_key_never_reaches_the_origin(gw, py_origin):
    created = Admin(gw, ADMIN_TOKEN).create_key(tenant="foreign")
    key = created["key"]
    try:
        client = openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=key, max_retries=0, timeout=30)
        r = client.chat.completions.create(model="py-keyed-chat", messages=[{"role": "user", "content": "keyed"}])
        assert r.choices[0].message.content == f"{ANSWER_PREFIX} keyed"
        sent = py_origin.requests()[-1]
        assert sent["headers"]["authorization"] == f"Bearer {PROVIDER_SECRET}"
        assert_no_client_key(sent, key)
        assert sent["transfer_encoding"] is None and sent["content_length"] == str(len(sent["raw_body"]))
    finally:
        Admin(gw, ADMIN_TOKEN).revoke(created["id"])


# --- anthropic (/v1/messages on an endpoint backed by the OpenAI-format origin) -----------------

@pytest.mark.parametrize("model", ["py-chat", "py-chat-http10"])
def test_anthropic_messages(claude_sdk, py_origin, model):
    r = claude_sdk.messages.create(model=model, max_tokens=50, system=SYSTEM,
                                   messages=[{"role": "user", "content": USER}])
    assert r.content[0].type == "text" and r.content[0].text == ANSWER
    assert r.stop_reason == "end_turn"
    assert (r.usage.input_tokens, r.usage.output_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    sent = only_request(py_origin, "/v1/chat/completions")
    # Translated to OpenAI's shape on the way: the system prompt is the first message.
    assert [m["role"] for m in sent["body"]["messages"]] == ["system", "user"]
    assert sent["body"]["max_tokens"] == 50
    assert "x-api-key" not in sent["headers"]


@pytest.mark.parametrize("model", ["py-chat", "py-chat-chunked"])
def test_anthropic_messages_streamed(claude_sdk, py_origin, model):
    with claude_sdk.messages.stream(model=model, max_tokens=50,
                                    messages=[{"role": "user", "content": "stream to anthropic"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == f"{ANSWER_PREFIX} stream to anthropic"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 4)
    sent = only_request(py_origin, "/v1/chat/completions")
    assert sent["body"]["stream"] is True


# --- mlflow.deployments -------------------------------------------------------------------------

def test_mlflow_predict_chat(gw, py_origin):
    client = get_deploy_client(gw.base_url)
    r = client.predict(endpoint="py-chat", inputs={"messages": [{"role": "user", "content": "hi mlflow"}]})
    assert r["choices"][0]["message"]["content"] == f"{ANSWER_PREFIX} hi mlflow"
    assert r["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    sent = only_request(py_origin, "/v1/chat/completions")
    assert sent["body"]["model"] == "py-gpt"


def test_mlflow_predict_embeddings(gw, py_origin):
    client = get_deploy_client(gw.base_url)
    r = client.predict(endpoint="py-embeddings", inputs={"input": ["one", "two three"]})
    assert [d["embedding"] for d in r["data"]] == [embedding_of("one"), embedding_of("two three")]
    assert r["usage"]["prompt_tokens"] == 3
    sent = only_request(py_origin, "/v1/embeddings")
    assert sent["body"]["input"] == ["one", "two three"]


# --- the origin itself (no gateway): it really is as strict as the cases above assume ---------

def _raw_exchange(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_origin_refuses_a_chunked_request_body(py_origin):
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]}).encode()
    r = requests.post(f"{py_origin.url}/v1/chat/completions", data=iter([body]),
                      headers={"authorization": f"Bearer {PROVIDER_SECRET}", "content-type": "application/json"},
                      timeout=10)
    assert r.status_code == 411, r.text
    assert r.json()["error"]["code"] == "length_required"
    assert py_origin.requests()[-1]["transfer_encoding"] == "chunked"


def test_origin_frames_answers_three_ways(py_origin):
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "frame"}]}).encode()
    head = (f"Authorization: Bearer {PROVIDER_SECRET}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    for prefix, expect in (("", b"content-length:"), ("/chunked", b"transfer-encoding: chunked"),
                           ("/http10", b"connection: close")):
        raw = _raw_exchange(py_origin.url, f"POST {prefix}/v1/chat/completions HTTP/1.1\r\nHost: x\r\n".encode() + head + body)
        status, _, rest = raw.partition(b"\r\n")
        headers, _, payload = rest.partition(b"\r\n\r\n")
        assert expect in headers.lower(), headers
        if prefix == "/http10":
            assert status.startswith(b"HTTP/1.0 200")
            assert b"content-length" not in headers.lower() and b"transfer-encoding" not in headers.lower()
            assert json.loads(payload)["choices"][0]["message"]["content"] == f"{ANSWER_PREFIX} frame"
        else:
            assert status.startswith(b"HTTP/1.1 200")


def test_origin_models_and_auth(py_origin):
    ok = requests.get(f"{py_origin.url}/v1/models", headers={"authorization": f"Bearer {PROVIDER_SECRET}"}, timeout=5)
    assert ok.status_code == 200
    assert ok.json()["object"] == "list" and [m["id"] for m in ok.json()["data"]] == ["py-gpt", "py-embedder"]
    denied = requests.get(f"{py_origin.url}/v1/models", headers={"authorization": "Bearer wrong"}, timeout=5)
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
