"""Provider families (issue 9 item 4, issue 11 items 3, 7, 8) through both hosts, with the
official `openai` SDK as the client: the OpenAI-compatible table (a groq-style base override,
Together's embeddings), Mistral's strict API, Azure by its MLflow provider name, Vertex AI (the
service-account token exchange against the mock's token endpoint; Gemini and Claude models),
and Bedrock (SigV4 checked by the mock; Converse, ConverseStream as an AWS event stream, a bad
checksum, STS AssumeRole, a Bedrock API key), and Databricks Model Serving (a personal access
token, and OAuth M2M: a service principal's secret exchanged at the mock's /oidc/v1/token). Plus,
without a host: the MLflow 3.x provider
fixtures through `gatewayctl validate` and through MLflow's own config loader."""
import base64
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from conftest import SECRETS
from harness import BIN, ROOT

FIXTURES = ROOT / "tests" / "fixtures"
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello from the sdk"}]


@pytest.fixture
def oai(gw):
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key="unused-client-key", max_retries=0, timeout=30)


def requests_to(origin, prefix):
    return [r for r in origin.requests() if r["path"].startswith(prefix)]


def chat_ok(oai, model, **kw):
    r = oai.chat.completions.create(model=model, messages=MESSAGES, max_tokens=50, **kw)
    assert r.choices[0].message.content == "echo: hello from the sdk"
    assert r.choices[0].finish_reason == "stop"
    # The mock counts words: "be brief" + "hello from the sdk" = 6 prompt, 5 completion.
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (6, 5, 11)
    return r


def stream_ok(oai, model):
    chunks = list(oai.chat.completions.create(model=model, messages=MESSAGES, max_tokens=50, stream=True,
                                              stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello from the sdk"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].total_tokens == 11
    return chunks


def floats_of(b64):
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def embeddings_both_ways(oai, model):
    """Floats asked for explicitly; base64 asked for explicitly (decoded here); and the SDK's
    default, which asks base64 and decodes itself: all three the same vectors."""
    floats = oai.embeddings.create(model=model, input=["alpha beta", "gamma"], encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1] and all(len(d.embedding) == 8 for d in floats.data)
    raw = oai.embeddings.create(model=model, input=["alpha beta", "gamma"], encoding_format="base64")
    assert all(isinstance(d.embedding, str) for d in raw.data)
    default = oai.embeddings.create(model=model, input=["alpha beta", "gamma"])
    for f, r, d in zip(floats.data, raw.data, default.data):
        assert floats_of(r.embedding) == pytest.approx(f.embedding, abs=1e-6)
        assert d.embedding == pytest.approx(f.embedding, abs=1e-6)
    return floats


# ---- the OpenAI-compatible table ------------------------------------------------------------

def test_groq_style_base_override(oai, origin):
    chat_ok(oai, "fam-groq")
    sent = requests_to(origin, "/openai/v1/")[-1]
    assert sent["path"] == "/openai/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer " + SECRETS["GROQ_API_KEY"]
    assert sent["body"]["model"] == "llama-3.3-70b-versatile"
    stream_ok(oai, "fam-groq")
    assert requests_to(origin, "/openai/v1/")[-1]["body"]["stream_options"] == {"include_usage": True}


def test_openai_compatible_embeddings_pass_base64_through(oai, origin):
    embeddings_both_ways(oai, "fam-together-embeddings")
    sent = [r["body"] for r in requests_to(origin, "/v1/embeddings")]
    assert any(b.get("encoding_format") == "base64" for b in sent), "the origin answers base64 itself"
    assert requests_to(origin, "/v1/embeddings")[-1]["headers"]["authorization"] == \
        "Bearer " + SECRETS["TOGETHERAI_API_KEY"]


# ---- Mistral ------------------------------------------------------------------------------------

def test_mistral_gets_only_its_own_fields(oai, origin):
    chat_ok(oai, "fam-mistral", seed=7, user="someone", logit_bias={"1": 1})
    sent = requests_to(origin, "/mistral/v1/")[-1]
    assert sent["headers"]["authorization"] == "Bearer " + SECRETS["MISTRAL_API_KEY"]
    assert sent["body"]["random_seed"] == 7
    assert not {"seed", "user", "logit_bias", "stream_options"} & set(sent["body"])
    stream_ok(oai, "fam-mistral")
    assert "stream_options" not in requests_to(origin, "/mistral/v1/")[-1]["body"]


def test_mistral_embeddings_in_base64_are_encoded_by_the_gateway(oai, origin):
    embeddings_both_ways(oai, "fam-mistral-embeddings")
    for r in requests_to(origin, "/mistral/v1/embeddings"):
        assert "encoding_format" not in r["body"]


# ---- Azure ------------------------------------------------------------------------------------

def test_azure_as_a_provider_name(oai, origin):
    chat_ok(oai, "fam-azure")
    sent = requests_to(origin, "/openai/deployments/")[-1]
    assert sent["path"] == "/openai/deployments/gpt-4o-e2e/chat/completions"
    assert sent["query"] == "api-version=2024-10-21"
    assert sent["headers"]["api-key"] == SECRETS["AZURE_OPENAI_API_KEY"]
    assert "authorization" not in sent["headers"] and "model" not in sent["body"]
    stream_ok(oai, "fam-azure")


# ---- Vertex AI --------------------------------------------------------------------------------

VERTEX = "/v1/projects/e2e-project/locations/"


def check_token_exchange(gw, origin, model_requests):
    exchanges = requests_to(origin, "/token")
    assert exchanges, "a token was exchanged"
    form = exchanges[-1]["body"]
    assert form.startswith("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=")
    for r in model_requests:
        assert re.fullmatch(r"Bearer ya29\.mock-main-\d+", r["headers"]["authorization"]), r["headers"]
    if gw.name == "workerd":
        # One isolate serves these requests: the token is reused, not exchanged per call.
        assert len(exchanges) == 1, [r["path"] for r in origin.requests()]


def test_vertex_gemini_with_a_service_account(gw, oai, origin):
    chat_ok(oai, "fam-vertex-gemini")
    stream_ok(oai, "fam-vertex-gemini")
    sent = requests_to(origin, VERTEX)
    assert [r["path"] for r in sent] == [
        VERTEX + "us-central1/publishers/google/models/gemini-2.0-flash:generateContent",
        VERTEX + "us-central1/publishers/google/models/gemini-2.0-flash:streamGenerateContent",
    ]
    assert sent[1]["query"] == "alt=sse"
    assert "x-goog-api-key" not in sent[0]["headers"]
    check_token_exchange(gw, origin, sent)


def test_vertex_claude_with_a_service_account(gw, oai, origin):
    chat_ok(oai, "fam-vertex-claude")
    stream_ok(oai, "fam-vertex-claude")
    sent = requests_to(origin, VERTEX)
    base = VERTEX + "us-east5/publishers/anthropic/models/claude-3-5-haiku@20241022"
    assert [r["path"] for r in sent] == [base + ":rawPredict", base + ":streamRawPredict"]
    assert sent[0]["body"]["anthropic_version"] == "vertex-2023-10-16" and "model" not in sent[0]["body"]
    check_token_exchange(gw, origin, sent)


def test_vertex_embeddings(oai, origin):
    embeddings_both_ways(oai, "fam-vertex-embeddings")
    sent = requests_to(origin, VERTEX)[-1]
    assert sent["path"] == VERTEX + "global/publishers/google/models/text-embedding-005:predict"
    assert sent["body"]["instances"] == [{"content": "alpha beta"}, {"content": "gamma"}]


# ---- Bedrock ----------------------------------------------------------------------------------

def check_signed(request, key_id, service="bedrock", region="us-east-1"):
    auth = request["headers"]["authorization"]
    assert re.match(rf"AWS4-HMAC-SHA256 Credential={key_id}/\d{{8}}/{region}/{service}/aws4_request, ", auth), auth


def test_bedrock_converse_signed_with_sigv4(oai, origin):
    chat_ok(oai, "fam-bedrock")
    sent = requests_to(origin, "/model/")[-1]
    assert sent["path"] == "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    check_signed(sent, "AKIDEXAMPLE")  # and the mock checked the signature itself: a 200


def test_bedrock_converse_stream_decoded_as_it_arrives(oai, origin):
    stream_ok(oai, "fam-bedrock")
    sent = requests_to(origin, "/model/")[-1]
    assert sent["path"].endswith("/converse-stream")
    assert sent["headers"]["accept"] == "application/vnd.amazon.eventstream"


def test_bedrock_stream_tool_calls(oai):
    tools = [{"type": "function", "function": {"name": "lookup", "description": "look up",
                                               "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}]
    chunks = list(oai.chat.completions.create(model="fam-bedrock", messages=[{"role": "user", "content": "please call tool now"}],
                                              tools=tools, max_tokens=50, stream=True))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "lookup"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"text": "please call tool now"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_bedrock_bad_checksum_ends_the_stream_with_an_error(oai, origin):
    origin.fault("corrupt_stream", times=1, path="/model/")
    with pytest.raises(openai.APIError) as err:
        for _ in oai.chat.completions.create(model="fam-bedrock", messages=MESSAGES, stream=True):
            pass
    assert "checksum mismatch" in str(err.value)


def test_bedrock_wrong_signature_is_refused_by_the_origin(oai, origin):
    """The mock checks SigV4 and answers 403; an origin's 401/403 concerns the gateway's own
    credential, so the client gets a 502 origin_auth_failed without the origin's text."""
    with pytest.raises(openai.InternalServerError) as err:
        oai.chat.completions.create(model="fam-bedrock-badsig", messages=MESSAGES)
    assert err.value.status_code == 502
    assert err.value.body["code"] == "origin_auth_failed" and "(HTTP 403)" in err.value.body["message"]
    assert "signature" not in str(err.value).lower()
    sent = requests_to(origin, "/model/")
    assert len(sent) == 1, "refused, not retried"
    check_signed(sent[0], "AKIDEXAMPLE")


def test_bedrock_role_assumed_through_sts(gw, oai, origin):
    chat_ok(oai, "fam-bedrock-role")
    stream_ok(oai, "fam-bedrock-role")
    sts = [r for r in origin.requests() if r["path"] == "/"]
    assert sts, "STS was called"
    check_signed(sts[-1], "AKIDEXAMPLE", service="sts")
    assert "Action=AssumeRole" in sts[-1]["body"] and "DurationSeconds=900" in sts[-1]["body"]
    model_calls = requests_to(origin, "/model/amazon.nova-lite-v1%3A0/")
    for call in model_calls:
        check_signed(call, r"ASIAMOCK\d+")
        assert call["headers"]["x-amz-security-token"].startswith("FwoGZXIvYXdzEMock")
    if gw.name == "workerd":
        assert len(sts) == 1, "the role's credentials are cached per isolate"


def test_bedrock_api_key(oai, origin):
    chat_ok(oai, "fam-bedrock-bearer")
    sent = requests_to(origin, "/model/")[-1]
    assert sent["headers"]["authorization"] == "Bearer " + SECRETS["BEDROCK_API_KEY"]
    assert "x-amz-date" not in sent["headers"]


def test_bedrock_titan_embeddings(oai, origin):
    embeddings = oai.embeddings.create(model="fam-bedrock-embeddings", input="alpha beta", encoding_format="float")
    assert len(embeddings.data[0].embedding) == 8 and embeddings.usage.prompt_tokens == 2
    default = oai.embeddings.create(model="fam-bedrock-embeddings", input="alpha beta")
    assert default.data[0].embedding == pytest.approx(embeddings.data[0].embedding, abs=1e-6)
    sent = requests_to(origin, "/model/")[-1]
    assert sent["path"] == "/model/amazon.titan-embed-text-v2%3A0/invoke"
    assert sent["body"] == {"inputText": "alpha beta"}
    check_signed(sent, "AKIDEXAMPLE")


# ---- Databricks Model Serving --------------------------------------------------------------------

SERVING = "/serving-endpoints/"


def check_serving_calls(calls, model, authorization):
    assert [r["path"] for r in calls] == [SERVING + "chat/completions"] * 2
    assert [r["method"] for r in calls] == ["POST", "POST"]
    for r in calls:
        assert r["body"]["model"] == model
        assert authorization(r["headers"]["authorization"]), r["headers"]["authorization"]
        assert "unused-client-key" not in json.dumps(r["headers"])
    assert "stream" not in calls[0]["body"] or calls[0]["body"]["stream"] is False
    assert calls[0]["body"]["max_tokens"] == 50 and calls[0]["body"]["messages"] == MESSAGES
    assert calls[1]["body"]["stream"] is True and calls[1]["body"]["stream_options"] == {"include_usage": True}


def test_databricks_personal_access_token(oai, origin):
    r = chat_ok(oai, "fam-databricks")
    assert r.model == "databricks-meta-llama-3-3-70b-instruct"  # the serving endpoint's answer
    stream_ok(oai, "fam-databricks")
    check_serving_calls(requests_to(origin, "/serving-endpoints/"), "databricks-meta-llama-3-3-70b-instruct",
                        lambda auth: auth == "Bearer " + SECRETS["TOGETHERAI_API_KEY"])
    assert not requests_to(origin, "/oidc/"), "a personal access token needs no exchange"
    assert [r["path"] for r in origin.requests()] == [SERVING + "chat/completions"] * 2


def test_databricks_oauth_m2m(gw, oai, origin):
    chat_ok(oai, "fam-databricks-m2m")
    stream_ok(oai, "fam-databricks-m2m")
    exchanges = requests_to(origin, "/oidc/v1/token")
    assert exchanges, "the service principal's secret was exchanged for a token"
    basic = base64.b64encode(f"e2e-service-principal:{SECRETS['MISTRAL_API_KEY']}".encode()).decode()
    for exchange in exchanges:
        assert exchange["method"] == "POST"
        assert exchange["headers"]["authorization"] == "Basic " + basic
        assert exchange["headers"]["content-type"].startswith("application/x-www-form-urlencoded")
        assert exchange["body"] == "grant_type=client_credentials&scope=all-apis"
    # The configured host ends in /serving-endpoints/: dropped, so neither path doubles it.
    check_serving_calls(requests_to(origin, SERVING), "e2e-chat-serving",
                        lambda auth: re.fullmatch(r"Bearer dbx-oauth\.mock-main-\d+", auth))
    assert {r["path"] for r in origin.requests()} == {"/oidc/v1/token", SERVING + "chat/completions"}
    if gw.name == "workerd":
        # One isolate serves both calls: the token is reused, not exchanged per call.
        assert len(exchanges) == 1, [r["path"] for r in origin.requests()]


# ---- MLflow 3.x provider fixtures (no host) ---------------------------------------------------

def gatewayctl(*args):
    return subprocess.run([str(BIN / "gatewayctl"), *args], capture_output=True, text=True)


def test_served_provider_fixture_validates():
    out = gatewayctl("validate", str(FIXTURES / "mlflow3-providers.yaml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok (26 endpoint(s)" in out.stdout


REFUSED = {
    "palm": "Google shut the PaLM API down",
    "mosaicml": "MosaicML's inference API was shut down",
    "litellm": "LiteLLM is a Python library",
    "ai21labs": "Jurassic-2 models",
    "typesafe": "passthrough-only API",
    "sap-ai-core": "MLFLOW_GENAI_JUDGE_BASE_URL",
}


def test_refused_provider_fixture_says_why_at_each_path():
    out = gatewayctl("validate", str(FIXTURES / "mlflow3-refused.yaml"))
    assert out.returncode != 0
    lines = [line.strip() for line in (out.stdout + out.stderr).splitlines() if "model.provider" in line]
    assert len(lines) == len(REFUSED), out.stdout + out.stderr
    for i, (name, reason) in enumerate(REFUSED.items()):
        assert lines[i].startswith(f'endpoints[{i}].model.provider: "{name}" is not served: '), lines[i]
        assert reason in lines[i]


LOADER = """
import json, sys, warnings
warnings.filterwarnings("ignore")
from mlflow.gateway.config import _load_gateway_config
config = _load_gateway_config(sys.argv[1])
print(json.dumps([[e.name, str(getattr(e.model.provider, "value", e.model.provider)),
                   type(e.model.config).__name__,
                   type(getattr(e.model.config, "aws_config", None)).__name__] for e in config.endpoints]))
"""


def test_mlflow_itself_accepts_the_served_provider_fixture():
    path = FIXTURES / "mlflow3-providers.yaml"
    names = set(re.findall(r"\$([A-Z_][A-Z0-9_]*)", path.read_text()))
    env = {**os.environ, **{n: f"value-of-{n}" for n in names}, "MLFLOW_GATEWAY_RESOLVE_API_KEY_FROM_ENV": "true"}
    out = subprocess.run([sys.executable, "-c", LOADER, str(path)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    endpoints = {name: (provider, config, aws) for name, provider, config, aws in json.loads(out.stdout)}
    assert len(endpoints) == 26
    assert endpoints["azure-chat"][:2] == ("azure", "OpenAIConfig")
    assert endpoints["vertex-claude"][:2] == ("vertex_ai", "VertexAIConfig")
    assert endpoints["groq-chat"][:2] == ("groq", "_OpenAICompatibleConfig")
    assert endpoints["ollama-chat"][:2] == ("ollama", "OllamaConfig")
    # Each aws_config form is the one MLflow itself reads it as.
    assert endpoints["bedrock-keys"][2] == "AWSIdAndKey"
    assert endpoints["bedrock-role"][2] == "AWSRole"
    assert endpoints["bedrock-bearer"][2] == "AWSBearerToken"
    assert endpoints["bedrock-region-only"][2] == "AWSBaseConfig"
    served = {p for p, _, _ in endpoints.values()}
    assert served == {"openai", "azure", "anthropic", "cohere", "gemini", "vertex_ai", "bedrock", "amazon-bedrock",
                      "databricks", "databricks-model-serving", "mistral", "togetherai", "groq", "deepseek", "xai",
                      "openrouter", "ollama", "portkey", "huggingface-text-generation-inference",
                      "mlflow-model-serving"}
