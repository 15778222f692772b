"""Client dialects (issue 11, items 4-6) through both hosts, driven by the official SDKs: the
`openai` SDK's Responses API (plain, streamed, a function-call round trip continued with
`previous_response_id`, retrieve, tenant scoping, passthrough to an origin that speaks
Responses), `google-genai` against OpenAI-, Anthropic- and Gemini-format origins of the
mock, and MLflow 3.x's `/gateway/...` paths.

The mock origin echoes `echo: <last user text>` and counts words as tokens."""
import json
import time

import anthropic
import openai
import pytest
import requests
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

import conftest
from admin_client import Admin, log_records

MODELS = ["chat", "claude", "gemini"]
TOOL = {"type": "function", "name": "lookup", "description": "look up",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}


def oai(gw, key="unused-client-key", base="/v1"):
    return openai.OpenAI(base_url=f"{gw.base_url}{base}", api_key=key, max_retries=0, timeout=30)


def gemini_client(gw, key="unused-client-key", base="", api_version=None):
    """google-genai 3.x calls `/v1/models/...` unless `api_version="v1beta"`; both are served.
    Keep the client referenced while using it: it closes its HTTP client when collected."""
    options = types.HttpOptions(base_url=f"{gw.base_url}{base}", timeout=30_000, api_version=api_version)
    return genai.Client(api_key=key, http_options=options)


def new_key(gw, tenant, endpoints=("keyed-dialects",)):
    return Admin(gw, conftest.ADMIN_TOKEN).create_key(tenant=tenant, endpoints=list(endpoints))["key"]


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


# --- OpenAI Responses API ------------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
def test_responses_create_on_every_wire_format(gw, model):
    r = oai(gw).responses.create(model=model, instructions="be brief", input="hello responses", max_output_tokens=50)
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status == "completed"
    assert r.output_text == "echo: hello responses"
    assert r.instructions == "be brief" and r.max_output_tokens == 50
    # "be brief" + "hello responses" = 4 prompt words; "echo: hello responses" = 3.
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (4, 3, 7)


@pytest.mark.parametrize("model", MODELS)
def test_responses_stream_typed_events(gw, model):
    client = oai(gw)
    events = list(client.responses.create(model=model, input=[{"role": "user", "content": "stream this please"}],
                                          stream=True))
    types_seen = [e.type for e in events]
    assert types_seen[:2] == ["response.created", "response.in_progress"]
    for expected in ["response.output_item.added", "response.content_part.added", "response.output_text.delta",
                     "response.output_text.done", "response.output_item.done"]:
        assert expected in types_seen, types_seen
    assert types_seen[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "echo: stream this please"
    final = events[-1].response
    assert final.output_text == text and final.usage.output_tokens == 4
    # The SDK's own stream accumulator agrees, and the stored response is the final one.
    with client.responses.stream(model=model, input="accumulate me") as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        accumulated = stream.get_final_response()
    assert deltas == accumulated.output_text == "echo: accumulate me"
    stored = eventually(lambda: client.responses.retrieve(accumulated.id))
    assert stored.output_text == "echo: accumulate me"


def test_a_stored_response_is_continued_from_the_isolate_that_stored_it(gw):
    """A client chaining `previous_response_id` (the Agents SDK does, at once) must not depend
    on the KV write after the response having landed: the isolate that stored a response
    remembers it for a minute. Shown with the stored entry made unreadable: workerd's isolate
    still continues and retrieves it; Spin (a fresh instance per request, which writes the
    entry before answering) reads KV and answers 503 kv_unavailable."""
    from test_faults import kv_entry_file, kv_entry_unreadable

    client = oai(gw)
    first = client.responses.create(model="chat", input="remember me")
    key = f"resp:public:{first.id}"
    deadline = time.time() + 10
    while True:  # the write after the response, for the fault to replace
        try:
            kv_entry_file(gw, key)
            break
        except AssertionError:
            assert time.time() < deadline, f"{key} was never written"
            time.sleep(0.2)
    with kv_entry_unreadable(gw, key):
        if gw.name == "workerd":
            second = client.responses.create(model="chat", input="and more", previous_response_id=first.id)
            assert second.previous_response_id == first.id and second.output_text == "echo: and more"
            assert client.responses.retrieve(first.id).output_text == "echo: remember me"
        else:
            with pytest.raises(openai.APIStatusError) as err:
                client.responses.create(model="chat", input="and more", previous_response_id=first.id)
            assert err.value.status_code == 503 and err.value.body["code"] == "kv_unavailable", err.value.body
    # The store answers again: every instance continues it.
    again = client.responses.create(model="chat", input="again", previous_response_id=first.id)
    assert again.previous_response_id == first.id


@pytest.mark.parametrize("model", MODELS)
def test_responses_function_call_round_trip(gw, origin, model):
    client = oai(gw)
    first = client.responses.create(model=model, input="please call tool now", tools=[TOOL])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "lookup"
    assert json.loads(calls[0].arguments) == {"text": "please call tool now"}
    second = client.responses.create(
        model=model, previous_response_id=first.id, tools=[TOOL],
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "42"}])
    assert second.previous_response_id == first.id
    # After a tool result the mock answers the last user text again.
    assert second.output_text == "echo: please call tool now"
    if model == "chat":
        sent = origin.requests()[-1]["body"]["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
        assert sent[1]["tool_calls"][0]["id"] == calls[0].call_id
        assert sent[2] == {"role": "tool", "tool_call_id": calls[0].call_id, "content": "42"}
    assert client.responses.retrieve(first.id).id == first.id


def test_responses_streamed_function_call(gw):
    events = list(oai(gw).responses.create(model="chat", input="please call tool now", tools=[TOOL], stream=True))
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    done = [e for e in events if e.type == "response.function_call_arguments.done"][0]
    assert json.loads(done.arguments) == {"text": "please call tool now"}
    assert events[-1].response.output[-1].type == "function_call"


def test_responses_are_scoped_to_the_tenant(gw):
    key_a, key_b = new_key(gw, "dialects-a"), new_key(gw, "dialects-b")
    mine = oai(gw, key_a).responses.create(model="keyed-dialects", input="tenant a only")
    assert oai(gw, key_a).responses.retrieve(mine.id).output_text == "echo: tenant a only"
    with pytest.raises(openai.NotFoundError) as err:
        oai(gw, key_b).responses.retrieve(mine.id)
    assert err.value.body["code"] == "response_not_found"
    with pytest.raises(openai.NotFoundError) as err:
        oai(gw, key_b).responses.create(model="keyed-dialects", input="peek", previous_response_id=mine.id)
    assert err.value.body["code"] == "previous_response_not_found"
    assert err.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        oai(gw).responses.retrieve(mine.id)  # no key: the public tenant's store
    # store=false: nothing to retrieve.
    unstored = oai(gw, key_a).responses.create(model="keyed-dialects", input="forget me", store=False)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError):
        oai(gw, key_a).responses.retrieve(unstored.id)
    # Deleting is the tenant's too.
    with pytest.raises(openai.NotFoundError):
        oai(gw, key_b).responses.delete(mine.id)
    oai(gw, key_a).responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        oai(gw, key_a).responses.retrieve(mine.id)


def test_responses_errors_in_openai_shape(gw):
    client = oai(gw)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="chat", input=[{"role": "user", "content": [{"type": "input_audio"}]}])
    assert err.value.body["param"] == "input.0.content.0.type"
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="chat", input="x", tools=[{"type": "web_search"}])
    assert err.value.body["code"] == "unsupported_parameter"
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model="no-such-endpoint", input="x")
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="embeddings", input="x")
    assert err.value.body["code"] == "endpoint_type_mismatch"


def test_responses_passthrough_to_an_origin_that_speaks_responses(gw, origin):
    client = oai(gw)
    r = client.responses.create(model="responses-native", instructions="be brief", input="native please")
    assert r.id.startswith("resp_mock") and r.output_text == "echo: native please"
    sent = origin.requests()[-1]
    assert sent["path"] == "/v1/responses"
    assert sent["body"]["model"] == "gpt-4.1-mini" and sent["body"]["instructions"] == "be brief"
    assert sent["headers"]["authorization"] == f"Bearer {conftest.PROVIDER_SECRET}"
    assert client.responses.retrieve(r.id).output_text == "echo: native please"
    again = client.responses.create(model="responses-native", input="continue", previous_response_id=r.id)
    assert origin.requests()[-1]["body"]["previous_response_id"] == r.id
    assert again.previous_response_id == r.id
    events = list(client.responses.create(model="responses-native", input="native stream", stream=True))
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: native stream"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="responses-native", input="x", previous_response_id="resp_not_ours")


def until(fn, timeout=10.0):
    """Polls `fn` until it returns a truthy value (cache fills happen after the response)."""
    deadline = time.time() + timeout
    while True:
        value = fn()
        if value or time.time() > deadline:
            return value
        time.sleep(0.2)


def test_cache_and_guardrails_apply_to_every_dialect(gw, origin):
    """They run on the internal shape: a deterministic Responses or Gemini request is answered
    from the cache (rendered in its own API), and the guarded endpoint's rules apply."""
    client = oai(gw)
    text = f"cache me {gw.name} {time.time_ns()}"
    first = client.responses.with_raw_response.create(model="cached", input=text, temperature=0)
    assert first.headers["x-gateway-cache"] == "MISS"
    hit = until(lambda: (r := client.responses.with_raw_response.create(model="cached", input=text, temperature=0))
                .headers["x-gateway-cache"] == "HIT" and r)
    assert hit and hit.parse().output_text == first.parse().output_text == f"echo: {text}"
    assert hit.parse().id != first.parse().id, "every response gets its own id"
    body = {"contents": [{"parts": [{"text": text}]}], "generationConfig": {"temperature": 0}}
    r = requests.post(f"{gw.base_url}/v1beta/models/cached:generateContent", json=body, timeout=30)
    assert r.headers["x-gateway-cache"] == "HIT", "the same request, cached once, serves every dialect"
    assert r.json()["candidates"][0]["content"]["parts"][0]["text"] == f"echo: {text}"
    assert origin.stats()["by_path"]["/v1/chat/completions"] == 1

    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="guarded", input="tell me about Project Bluebird please")
    assert err.value.body["code"] == "content_denied"
    gclient = gemini_client(gw)
    with pytest.raises(genai_errors.ClientError) as err:
        gclient.models.generate_content(model="guarded", contents="tell me about Project Bluebird please")
    assert err.value.code == 400 and "no-codenames" in err.value.message
    client.responses.create(model="guarded", input="mail jane.doe@example.com")
    sent = origin.requests()[-1]["body"]["messages"][-1]["content"]
    assert "jane.doe@example.com" not in sent and "[EMAIL]" in sent


# --- Gemini (google-genai) -----------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
def test_google_genai_generate_content(gw, model):
    client = gemini_client(gw)
    r = client.models.generate_content(
        model=model, contents="hello gemini sdk",
        config=types.GenerateContentConfig(system_instruction="be brief", max_output_tokens=50, temperature=0.3))
    assert r.text == "echo: hello gemini sdk"
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    # "be brief" + "hello gemini sdk" = 5 prompt words; the answer 4.
    assert (r.usage_metadata.prompt_token_count, r.usage_metadata.candidates_token_count,
            r.usage_metadata.total_token_count) == (5, 4, 9)


@pytest.mark.parametrize("model", MODELS)
def test_google_genai_generate_content_stream(gw, model):
    client = gemini_client(gw, api_version="v1beta")
    chunks = list(client.models.generate_content_stream(model=model, contents="stream gemini please"))
    assert "".join(c.text or "" for c in chunks) == "echo: stream gemini please"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.candidates_token_count == 4


@pytest.mark.parametrize("model", MODELS)
def test_google_genai_function_calling(gw, model):
    client = gemini_client(gw)
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(
        name="lookup", description="look up",
        parameters=types.Schema(type=types.Type.OBJECT, properties={"text": types.Schema(type=types.Type.STRING)}))])
    config = types.GenerateContentConfig(tools=[tool], max_output_tokens=50)
    question = types.Content(role="user", parts=[types.Part.from_text(text="please call tool now")])
    r = client.models.generate_content(model=model, contents=[question], config=config)
    assert r.function_calls[0].name == "lookup"
    assert r.function_calls[0].args == {"text": "please call tool now"}
    answer = types.Content(role="user", parts=[types.Part.from_function_response(name="lookup", response={"result": "42"})])
    r2 = client.models.generate_content(model=model, contents=[question, r.candidates[0].content, answer], config=config)
    assert r2.text == "echo: please call tool now"


def test_google_genai_length_and_errors(gw):
    client = gemini_client(gw)
    r = client.models.generate_content(model="chat", contents="one two three four five",
                                       config=types.GenerateContentConfig(max_output_tokens=2))
    assert r.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    with pytest.raises(genai_errors.ClientError) as err:
        client.models.generate_content(model="no-such-endpoint", contents="x")
    assert err.value.code == 404 and err.value.status == "NOT_FOUND"
    with pytest.raises(genai_errors.ClientError) as err:
        client.models.generate_content(model="chat", contents="x", config=types.GenerateContentConfig(candidate_count=2))
    assert err.value.code == 400 and err.value.status == "INVALID_ARGUMENT"
    with pytest.raises(genai_errors.ClientError) as err:
        client.models.generate_content(model="keyed-dialects", contents="x")
    assert err.value.code == 401 and err.value.status == "UNAUTHENTICATED"


def test_gemini_keys_from_header_or_query_never_logged_or_forwarded(gw, origin):
    key = new_key(gw, "dialects-g")
    client = gemini_client(gw, key)
    r = client.models.generate_content(model="keyed-dialects", contents="with a header key")
    assert r.text == "echo: with a header key"
    body = {"contents": [{"parts": [{"text": "with a query key"}]}]}
    url = f"{gw.base_url}/v1beta/models/keyed-dialects:generateContent?key={key}"
    r = requests.post(url, json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["candidates"][0]["content"]["parts"][0]["text"] == "echo: with a query key"
    # Without `alt=sse` Gemini streams one JSON array.
    r = requests.post(f"{gw.base_url}/v1beta/models/keyed-dialects:streamGenerateContent?key={key}", json=body, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    array = r.json()
    assert "".join(p["text"] for item in array for p in item["candidates"][0]["content"]["parts"]) == "echo: with a query key"
    sent = origin.requests()[-1]
    assert key not in json.dumps(sent), "the client's key never reaches an origin"
    # Log lines are written after the response (the host's after-response work): wait for them.
    deadline = time.time() + 10
    while not log_records(gw, "keyed-dialects") and time.time() < deadline:
        time.sleep(0.2)
    assert log_records(gw, "keyed-dialects"), "the calls were logged"
    assert key not in gw.log_text(), "nor any line of the host's log"


# --- MLflow 3.x gateway paths --------------------------------------------------------------

def test_mlflow3_unified_invocations(gw):
    r = requests.post(f"{gw.base_url}/gateway/chat/mlflow/invocations",
                      json={"messages": [{"role": "user", "content": "unified chat"}]}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "echo: unified chat"
    r = requests.post(f"{gw.base_url}/gateway/embeddings/mlflow/invocations", json={"input": ["unified embeddings", "c"]}, timeout=30)
    assert r.status_code == 200, r.text
    assert [d["index"] for d in r.json()["data"]] == [0, 1]
    r = requests.post(f"{gw.base_url}/gateway/chat/mlflow/invocations", json={"prompt": "x"}, timeout=30)
    assert r.status_code == 400 and "chat" in r.json()["error"]["message"]


def test_mlflow3_openai_style_routes_with_sdk_base_urls(gw):
    mlflow_base = oai(gw, base="/gateway/mlflow/v1")
    r = mlflow_base.chat.completions.create(model="chat", messages=[{"role": "user", "content": "mlflow route"}])
    assert r.choices[0].message.content == "echo: mlflow route"
    ids = [m.id for m in mlflow_base.models.list()]
    assert ids == sorted(ids) and {"chat", "claude", "gemini", "embeddings"} <= set(ids)
    assert all(m.owned_by == "mlflow" for m in mlflow_base.models.list())

    openai_base = oai(gw, base="/gateway/openai/v1")
    r = openai_base.chat.completions.create(model="claude", messages=[{"role": "user", "content": "passthrough chat"}])
    assert r.choices[0].message.content == "echo: passthrough chat"
    e = openai_base.embeddings.create(model="embeddings", input=["mlflow3 alpha"], encoding_format="float")
    assert len(e.data[0].embedding) == 8
    resp = openai_base.responses.create(model="gemini", input="passthrough responses")
    assert resp.output_text == "echo: passthrough responses"
    assert openai_base.responses.retrieve(resp.id).id == resp.id


def test_mlflow3_anthropic_and_gemini_routes(gw):
    claude = anthropic.Anthropic(base_url=f"{gw.base_url}/gateway/anthropic", api_key="unused-client-key",
                                 max_retries=0, timeout=30)
    r = claude.messages.create(model="gemini", max_tokens=50, messages=[{"role": "user", "content": "anthropic route"}])
    assert r.content[0].text == "echo: anthropic route"
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="no-such-endpoint", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    for api_version in ["v1beta", None]:  # MLflow's own path, and google-genai's default
        client = gemini_client(gw, base="/gateway/gemini", api_version=api_version)
        assert client.models.generate_content(model="claude", contents="gemini route").text == "echo: gemini route"
        chunks = client.models.generate_content_stream(model="chat", contents="gemini route stream")
        assert "".join(c.text or "" for c in chunks) == "echo: gemini route stream"
