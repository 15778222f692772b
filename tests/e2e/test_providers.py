"""Translation between APIs (issues 3 and 6) through both hosts, driven by the official SDKs:
the `openai` SDK against OpenAI-, Anthropic- and Gemini-format origins (content, usage and
finish reasons verified), streaming translation, and the `anthropic` SDK against `/v1/messages`."""
import anthropic
import openai
import pytest

from conftest import SECRETS


@pytest.fixture
def oai(gw):
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="unused-client-key", max_retries=0, timeout=30)


@pytest.fixture
def claude_sdk(gw):
    return anthropic.Anthropic(base_url=gw.base_url, api_key="unused-client-key", max_retries=0, timeout=30)


MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello from the sdk"}]


@pytest.mark.parametrize("model", ["chat", "claude", "gemini"])
def test_openai_sdk_chat_on_every_wire_format(oai, origin, model):
    r = oai.chat.completions.create(model=model, messages=MESSAGES, max_tokens=50)
    assert r.choices[0].message.content == "echo: hello from the sdk"
    assert r.choices[0].finish_reason == "stop"
    # The mock counts words: "be brief" + "hello from the sdk" = 6 prompt, 5 completion.
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (6, 5, 11)
    sent = origin.requests()[-1]
    if model == "claude":
        assert sent["path"] == "/v1/messages"
        assert sent["headers"]["x-api-key"] == SECRETS["ANTHROPIC_API_KEY"]
        assert sent["body"]["system"] == "be brief" and sent["body"]["max_tokens"] == 50
    elif model == "gemini":
        assert sent["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"
        assert sent["headers"]["x-goog-api-key"] == SECRETS["GEMINI_API_KEY"]
        assert "key=" not in sent["query"]  # the key never travels in a URL


@pytest.mark.parametrize("model", ["chat", "claude", "gemini"])
def test_length_finish_reason_is_translated(oai, model):
    r = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "one two three four five"}],
                                    max_tokens=2)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 2


@pytest.mark.parametrize("model", ["completions", "claude-completions", "gemini-completions"])
def test_openai_sdk_completions(oai, model):
    r = oai.completions.create(model=model, prompt="complete me", max_tokens=20)
    assert r.choices[0].text == "echo: complete me"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0


@pytest.mark.parametrize("model", ["embeddings", "gemini-embeddings"])
def test_openai_sdk_embeddings(oai, model):
    r = oai.embeddings.create(model=model, input=["alpha beta", "gamma"], encoding_format="float")
    assert [d.index for d in r.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in r.data)


@pytest.mark.parametrize("model", ["chat", "claude", "gemini"])
def test_tool_calls_translate(oai, model):
    tools = [{"type": "function", "function": {"name": "lookup", "description": "look up",
                                               "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}]
    r = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "please call tool now"}],
                                    tools=tools, max_tokens=50)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "lookup"
    assert '"please call tool now"' in call.function.arguments


@pytest.mark.parametrize("model", ["chat", "claude", "gemini"])
def test_openai_sdk_stream_from_every_wire_format(oai, model):
    chunks = list(oai.chat.completions.create(model=model, messages=MESSAGES, max_tokens=50, stream=True,
                                              stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello from the sdk"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].total_tokens == 11


@pytest.mark.parametrize("model", ["chat", "claude", "gemini"])
def test_anthropic_sdk_via_messages_api(claude_sdk, model):
    r = claude_sdk.messages.create(model=model, max_tokens=50, system="be brief",
                                   messages=[{"role": "user", "content": "hello from the sdk"}])
    assert r.content[0].type == "text" and r.content[0].text == "echo: hello from the sdk"
    assert r.stop_reason == "end_turn"
    assert (r.usage.input_tokens, r.usage.output_tokens) == (6, 5)


@pytest.mark.parametrize("model", ["chat", "claude", "gemini"])
def test_anthropic_sdk_streams_via_messages_api(claude_sdk, model):
    with claude_sdk.messages.stream(model=model, max_tokens=50,
                                    messages=[{"role": "user", "content": "stream to anthropic"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: stream to anthropic"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4


def test_anthropic_sdk_sees_anthropic_shaped_errors(claude_sdk):
    with pytest.raises(anthropic.NotFoundError) as err:
        claude_sdk.messages.create(model="no-such-endpoint", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert "no-such-endpoint" in str(err.value)
