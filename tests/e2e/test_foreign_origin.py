"""The official SDKs through both hosts against a foreign origin (issue 11, items 1-2): Python's
standard-library http.server (py_origin.py) instead of the project's own Rust mock.

That origin reads request bodies by Content-Length only and refuses chunked ones (411), the way
many model servers, HTTP/1.0 servers and WAFs do, so these cases catch a host that frames its
outbound bodies as chunked. Its answers come in three framings (Content-Length, chunked,
HTTP/1.0 close-delimited), which every host must read whole. Each case checks what the client
got (content, usage) and what reached the origin (the body whole with a Content-Length, the
provider credential, never the client's key).

The other dialects go through the same origin (issue 11): the `openai` SDK's Responses API
(plain, streamed with its typed events, a function-call round trip answered with
`function_call_output`, `previous_response_id` continuing a conversation) and `google-genai`'s
`generate_content` (plain, streamed, a function call), all translated to chat completions on
the way. The origin asks for a tool when the last user text says "call tool" (as the Rust mock
does)."""
import base64
import json
import socket
import struct
import time

import anthropic
import openai
import pytest
import requests
from google import genai
from google.genai import types
from mlflow.deployments import get_deploy_client

from admin_client import Admin
from conftest import ADMIN_TOKEN, PROVIDER_SECRET
from py_origin import ANSWER_PREFIX, embedding_of, text_of

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


# --- tool calls (chat completions) --------------------------------------------------------------

TOOL_QUESTION = "please call tool now"
TOOL_ARGUMENTS = '{"text":"please call tool now"}'  # the origin's compact JSON
CHAT_TOOL = {"type": "function", "function": {"name": "lookup", "description": "look up", "parameters": {
    "type": "object", "properties": {"text": {"type": "string"}}}}}


def tool_call_id_ok(call_id: str) -> None:
    """The origin's own call id (`call_py_<digest>`), passed through, not one the gateway made up."""
    assert call_id.startswith("call_py_") and len(call_id) == len("call_py_") + 12, call_id


@pytest.mark.parametrize("model", list(FRAMED_CHAT))
def test_openai_chat_tool_call(oai, py_origin, model):
    r = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": TOOL_QUESTION}],
                                    tools=[CHAT_TOOL], max_tokens=50)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    tool_call_id_ok(call.id)
    assert (call.type, call.function.name, call.function.arguments) == ("function", "lookup", TOOL_ARGUMENTS)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (4, 4)
    sent = only_request(py_origin, "/v1/chat/completions")
    assert sent["framing"] == FRAMED_CHAT[model]
    assert sent["body"]["tools"] == [CHAT_TOOL]


@pytest.mark.parametrize("model", list(FRAMED_CHAT))
def test_openai_chat_tool_call_streamed(oai, py_origin, model):
    chunks = list(oai.chat.completions.create(model=model, messages=[{"role": "user", "content": TOOL_QUESTION}],
                                              tools=[CHAT_TOOL], max_tokens=50, stream=True))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(deltas) == 5, deltas  # the head (id, name), then the arguments word by word
    tool_call_id_ok(deltas[0].id)
    assert deltas[0].function.name == "lookup" and all(d.index == 0 for d in deltas)
    assert "".join(d.function.arguments or "" for d in deltas) == TOOL_ARGUMENTS
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert all(not (c.choices and c.choices[0].delta.content) for c in chunks)
    sent = only_request(py_origin, "/v1/chat/completions")
    assert sent["body"]["stream"] is True and sent["body"]["tools"] == [CHAT_TOOL]


# --- openai Responses API (translated to chat completions for this origin) ---------------------

RESP_TOOL = {"type": "function", "name": "lookup", "description": "look up",
             "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}


def eventually(fetch, timeout=10.0):
    """A streamed response is stored once its stream ended (after-response work): poll."""
    deadline = time.time() + timeout
    while True:
        try:
            return fetch()
        except openai.NotFoundError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def max_tokens_of(body: dict):
    return body.get("max_tokens", body.get("max_completion_tokens"))


@pytest.mark.parametrize("model", list(FRAMED_CHAT))
def test_openai_responses_create(oai, py_origin, model):
    r = oai.responses.create(model=model, instructions=SYSTEM, input=USER, max_output_tokens=50)
    assert r.object == "response" and r.id.startswith("resp_") and r.status == "completed"
    assert r.output_text == ANSWER
    assert [item.type for item in r.output] == ["message"]
    assert r.output[0].role == "assistant" and r.output[0].content[0].type == "output_text"
    assert r.instructions == SYSTEM and r.max_output_tokens == 50
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == \
        (PROMPT_TOKENS, COMPLETION_TOKENS, PROMPT_TOKENS + COMPLETION_TOKENS)
    sent = only_request(py_origin, "/v1/chat/completions")
    assert sent["framing"] == FRAMED_CHAT[model]
    assert sent["body"]["model"] == "py-gpt" and sent["body"]["messages"] == MESSAGES
    assert max_tokens_of(sent["body"]) == 50
    assert not sent["body"].get("stream")
    assert oai.responses.retrieve(r.id).output_text == ANSWER


@pytest.mark.parametrize("model", list(FRAMED_CHAT))
def test_openai_responses_streamed_typed_events(oai, py_origin, model):
    events = list(oai.responses.create(model=model, instructions=SYSTEM, input=USER, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    # Every event the SDKs expect of one text message, once each and in order, deltas between.
    singles = ["response.output_item.added", "response.content_part.added", "response.output_text.done",
               "response.content_part.done", "response.output_item.done"]
    assert [k for k in kinds if k in singles] == singles, kinds
    first_delta, last_delta = kinds.index("response.output_text.delta"), len(kinds) - 1 - kinds[::-1].index(
        "response.output_text.delta")
    assert kinds.index("response.content_part.added") < first_delta
    assert last_delta < kinds.index("response.output_text.done")
    assert "".join(e.delta for e in deltas) == ANSWER
    assert [e for e in events if e.type == "response.output_text.done"][0].text == ANSWER
    final = events[-1].response
    assert final.status == "completed" and final.output_text == ANSWER
    assert events[0].response.id == final.id
    assert (final.usage.input_tokens, final.usage.output_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    sent = only_request(py_origin, "/v1/chat/completions")
    assert sent["framing"] == FRAMED_CHAT[model]
    assert sent["body"]["stream"] is True and sent["body"]["stream_options"] == {"include_usage": True}
    assert sent["body"]["messages"] == MESSAGES
    stored = eventually(lambda: oai.responses.retrieve(final.id))
    assert stored.output_text == ANSWER and stored.usage.output_tokens == COMPLETION_TOKENS


def check_function_call(response) -> str:
    """The response is one call of `lookup` with the origin's arguments; returns its call_id."""
    calls = [item for item in response.output if item.type == "function_call"]
    assert [item.type for item in response.output] == ["function_call"], response.output
    assert calls[0].name == "lookup" and calls[0].arguments == TOOL_ARGUMENTS
    tool_call_id_ok(calls[0].call_id)
    return calls[0].call_id


def check_tool_round_trip(py_origin, call_id: str) -> None:
    """The origin got the whole conversation: the question, its call, and the tool's result."""
    sent = py_origin.requests()[-1]
    assert sent["transfer_encoding"] is None and sent["content_length"] == str(len(sent["raw_body"]))
    messages = sent["body"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"], messages
    assert messages[0]["content"] == TOOL_QUESTION
    assert messages[1]["tool_calls"] == [
        {"id": call_id, "type": "function", "function": {"name": "lookup", "arguments": TOOL_ARGUMENTS}}]
    assert not messages[1].get("content")
    assert messages[2] == {"role": "tool", "tool_call_id": call_id, "content": "42"}
    assert sent["body"]["tools"] == [CHAT_TOOL]


@pytest.mark.parametrize("model", ["py-chat", "py-chat-chunked"])
def test_openai_responses_function_call_round_trip(oai, py_origin, model):
    first = oai.responses.create(model=model, input=TOOL_QUESTION, tools=[RESP_TOOL])
    call_id = check_function_call(first)
    assert first.status == "completed" and (first.usage.input_tokens, first.usage.output_tokens) == (4, 4)
    asked = only_request(py_origin, "/v1/chat/completions")
    assert asked["body"]["tools"] == [CHAT_TOOL]
    assert asked["body"]["messages"] == [{"role": "user", "content": TOOL_QUESTION}]
    py_origin.reset()
    second = oai.responses.create(model=model, previous_response_id=first.id, tools=[RESP_TOOL],
                                  input=[{"type": "function_call_output", "call_id": call_id, "output": "42"}])
    assert second.previous_response_id == first.id
    assert second.output_text == f"{ANSWER_PREFIX} {TOOL_QUESTION}"  # after a tool result: the echo
    only_request(py_origin, "/v1/chat/completions")
    check_tool_round_trip(py_origin, call_id)


def test_openai_responses_streamed_function_call(oai, py_origin):
    events = list(oai.responses.create(model="py-chat-http10", input=TOOL_QUESTION, tools=[RESP_TOOL], stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "response.output_text.delta" not in kinds
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert "".join(deltas) == TOOL_ARGUMENTS and len(deltas) == 4
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and done[0].arguments == TOOL_ARGUMENTS
    final = events[-1].response
    call_id = check_function_call(final)
    added = [e.item for e in events if e.type == "response.output_item.added"]
    assert [(i.type, i.name, i.call_id) for i in added] == [("function_call", "lookup", call_id)]
    sent = only_request(py_origin, "/v1/chat/completions")
    assert sent["body"]["stream"] is True and sent["body"]["tools"] == [CHAT_TOOL]
    # Continued once stored (after the stream): the round trip reaches the origin whole.
    eventually(lambda: oai.responses.retrieve(final.id))
    py_origin.reset()
    second = oai.responses.create(model="py-chat-http10", previous_response_id=final.id, tools=[RESP_TOOL],
                                  input=[{"type": "function_call_output", "call_id": call_id, "output": "42"}])
    assert second.output_text == f"{ANSWER_PREFIX} {TOOL_QUESTION}"
    only_request(py_origin, "/v1/chat/completions")
    check_tool_round_trip(py_origin, call_id)


def test_openai_responses_previous_response_id(oai, py_origin):
    first = oai.responses.create(model="py-chat", instructions=SYSTEM, input="remember alpha")
    assert first.output_text == f"{ANSWER_PREFIX} remember alpha"
    second = oai.responses.create(model="py-chat-chunked", previous_response_id=first.id, input="and beta")
    assert second.previous_response_id == first.id
    assert second.output_text == f"{ANSWER_PREFIX} and beta"
    # Instructions do not carry over (OpenAI's rule); the earlier turns do, the answer included.
    sent = py_origin.requests()
    assert len(sent) == 2 and [r["framing"] for r in sent] == ["cl", "chunked"]
    assert sent[1]["body"]["messages"] == [
        {"role": "user", "content": "remember alpha"},
        {"role": "assistant", "content": f"{ANSWER_PREFIX} remember alpha"},
        {"role": "user", "content": "and beta"},
    ]
    # "remember alpha" + "py-echo: remember alpha" + "and beta": 7 words.
    assert second.usage.input_tokens == 7
    third = oai.responses.create(model="py-chat", previous_response_id=second.id, instructions="be terse",
                                 input=[{"role": "user", "content": [{"type": "input_text", "text": "and gamma"}]}])
    assert third.output_text == f"{ANSWER_PREFIX} and gamma"
    messages = py_origin.requests()[-1]["body"]["messages"]
    assert messages[0] == {"role": "system", "content": "be terse"}
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [text_of(m["content"]) for m in messages[1:]] == [
        "remember alpha", f"{ANSWER_PREFIX} remember alpha", "and beta", f"{ANSWER_PREFIX} and beta", "and gamma"]
    for r in py_origin.requests():
        assert r["headers"]["authorization"] == f"Bearer {PROVIDER_SECRET}"
        assert r["transfer_encoding"] is None and r["content_length"] == str(len(r["raw_body"]))


# --- google-genai (Gemini's generateContent, translated to chat completions) -------------------

def gemini_client(gw, api_version=None):
    """google-genai calls `/v1/models/...` unless `api_version="v1beta"`; both are served.
    Keep the client referenced while using it: it closes its HTTP client when collected."""
    options = types.HttpOptions(base_url=gw.base_url, timeout=30_000, api_version=api_version)
    return genai.Client(api_key=CLIENT_KEY, http_options=options)


@pytest.mark.parametrize("model", list(FRAMED_CHAT))
def test_google_genai_generate_content(gw, py_origin, model):
    client = gemini_client(gw)
    r = client.models.generate_content(
        model=model, contents=USER,
        config=types.GenerateContentConfig(system_instruction=SYSTEM, max_output_tokens=50, temperature=0.3))
    assert r.text == ANSWER
    assert len(r.candidates) == 1 and r.candidates[0].finish_reason == types.FinishReason.STOP
    assert r.candidates[0].content.role == "model"
    assert (r.usage_metadata.prompt_token_count, r.usage_metadata.candidates_token_count,
            r.usage_metadata.total_token_count) == (PROMPT_TOKENS, COMPLETION_TOKENS, PROMPT_TOKENS + COMPLETION_TOKENS)
    sent = only_request(py_origin, "/v1/chat/completions")
    assert sent["framing"] == FRAMED_CHAT[model]
    assert sent["body"]["model"] == "py-gpt" and sent["body"]["messages"] == MESSAGES
    assert max_tokens_of(sent["body"]) == 50 and sent["body"]["temperature"] == 0.3
    assert not sent["body"].get("stream")
    assert "x-goog-api-key" not in sent["headers"]


@pytest.mark.parametrize("model", list(FRAMED_CHAT))
@pytest.mark.parametrize("api_version", ["v1beta", None])
def test_google_genai_generate_content_stream(gw, py_origin, model, api_version):
    client = gemini_client(gw, api_version=api_version)
    chunks = list(client.models.generate_content_stream(
        model=model, contents=USER, config=types.GenerateContentConfig(system_instruction=SYSTEM)))
    assert len(chunks) >= 2, "streamed in pieces, not one answer"
    assert "".join(c.text or "" for c in chunks) == ANSWER
    finishes = [c.candidates[0].finish_reason for c in chunks if c.candidates and c.candidates[0].finish_reason]
    assert finishes == [types.FinishReason.STOP]
    last = chunks[-1].usage_metadata
    assert (last.prompt_token_count, last.candidates_token_count, last.total_token_count) == \
        (PROMPT_TOKENS, COMPLETION_TOKENS, PROMPT_TOKENS + COMPLETION_TOKENS)
    sent = only_request(py_origin, "/v1/chat/completions")
    assert sent["framing"] == FRAMED_CHAT[model]
    assert sent["body"]["stream"] is True and sent["body"]["stream_options"] == {"include_usage": True}
    assert sent["body"]["messages"] == MESSAGES


def test_google_genai_function_call(gw, py_origin):
    client = gemini_client(gw)
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(
        name="lookup", description="look up",
        parameters=types.Schema(type=types.Type.OBJECT, properties={"text": types.Schema(type=types.Type.STRING)}))])
    config = types.GenerateContentConfig(tools=[tool], max_output_tokens=50)
    question = types.Content(role="user", parts=[types.Part.from_text(text=TOOL_QUESTION)])
    r = client.models.generate_content(model="py-chat-chunked", contents=[question], config=config)
    assert len(r.function_calls) == 1
    assert r.function_calls[0].name == "lookup" and r.function_calls[0].args == {"text": TOOL_QUESTION}
    sent = only_request(py_origin, "/v1/chat/completions")
    [declared] = sent["body"]["tools"]
    assert declared["type"] == "function" and declared["function"]["name"] == "lookup"
    assert declared["function"]["parameters"]["properties"] == {"text": {"type": "string"}}
    py_origin.reset()
    answer = types.Content(role="user", parts=[types.Part.from_function_response(name="lookup", response={"result": "42"})])
    r2 = client.models.generate_content(model="py-chat-chunked", contents=[question, r.candidates[0].content, answer],
                                        config=config)
    assert r2.text == f"{ANSWER_PREFIX} {TOOL_QUESTION}"
    messages = only_request(py_origin, "/v1/chat/completions")["body"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"], messages
    [call] = messages[1]["tool_calls"]
    assert call["function"]["name"] == "lookup" and json.loads(call["function"]["arguments"]) == {"text": TOOL_QUESTION}
    # The tool result answers that call (OpenAI refuses a tool message whose id matches no call).
    assert messages[2]["tool_call_id"] == call["id"] and call["id"]
    assert json.loads(messages[2]["content"]) == {"result": "42"}


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


def test_origin_calls_a_tool_only_as_the_mock_does(py_origin):
    """Tools declared, `tool_choice` not "none", and the conversation ends with user text that
    says "call tool": then (and only then) a call; streamed, the arguments come in deltas."""
    def chat(**body):
        body = {"model": "m", "messages": [{"role": "user", "content": "Please CALL TOOL"}], "tools": [CHAT_TOOL],
                **body}
        return requests.post(f"{py_origin.url}/v1/chat/completions", json=body, timeout=5,
                             headers={"authorization": f"Bearer {PROVIDER_SECRET}"})

    choice = chat().json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "lookup", "arguments": '{"text":"Please CALL TOOL"}'}
    assert chat(tools=[]).json()["choices"][0]["finish_reason"] == "stop"
    assert chat(tool_choice="none").json()["choices"][0]["finish_reason"] == "stop"
    after_result = [{"role": "user", "content": "Please CALL TOOL"},
                    {"role": "assistant", "content": None, "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": call["id"], "content": "42"}]
    answered = chat(messages=after_result).json()
    assert answered["choices"][0]["message"]["content"] == f"{ANSWER_PREFIX} Please CALL TOOL"
    assert answered["usage"]["prompt_tokens"] == 4  # "Please CALL TOOL" + "42"

    streamed = chat(stream=True, stream_options={"include_usage": True}, messages=[
        {"role": "user", "content": [{"type": "text", "text": "call tool please"}]}])
    assert streamed.headers["content-type"] == "text/event-stream"
    events = [json.loads(line[6:]) for line in streamed.text.split("\n\n") if line.startswith("data: {")]
    assert streamed.text.endswith("data: [DONE]\n\n")
    head = events[0]["choices"][0]["delta"]["tool_calls"][0]
    tool_call_id_ok(head["id"])
    assert (head["index"], head["type"], head["function"]) == (0, "function", {"name": "lookup", "arguments": ""})
    pieces = [e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for e in events[1:-2]]
    assert "".join(pieces) == '{"text":"call tool please"}' and len(pieces) == 3
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert events[-1]["choices"] == [] and events[-1]["usage"] == {
        "prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
