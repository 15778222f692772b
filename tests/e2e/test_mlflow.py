"""MLflow AI Gateway drop-in (issue 3): the real `mlflow.deployments` client, MLflow's REST
surface, traffic routes, and a real `mlflow models serve` origin — on both hosts."""
import collections

import pytest
import requests
from mlflow.deployments import get_deploy_client

from conftest import public_names


@pytest.fixture
def client(gw):
    return get_deploy_client(gw.base_url)


def test_list_endpoints_matches_the_config(client, gw):
    endpoints = {e.name: e for e in client.list_endpoints()}
    assert set(endpoints) == set(public_names(gw.config))  # anonymous: public ones only
    chat = endpoints["chat"]
    assert chat.endpoint_type == "llm/v1/chat"
    assert chat.model.name == "gpt-4o-mini" and chat.model.provider == "openai"
    assert chat.endpoint_url == f"{gw.base_url}/gateway/chat/invocations"
    assert endpoints["split"].endpoint_type == "llm/v1/chat"


def test_get_endpoint(client, gw):
    e = client.get_endpoint("embeddings")
    assert (e.name, e.endpoint_type, e.model.provider) == ("embeddings", "llm/v1/embeddings", "openai")
    with pytest.raises(Exception) as err:
        client.get_endpoint("no-such-endpoint")
    assert "no-such-endpoint" in str(err.value)


def test_predict_chat_completions_embeddings(client, origin):
    chat = client.predict(endpoint="chat", inputs={"messages": [{"role": "user", "content": "hi mlflow"}]})
    assert chat["choices"][0]["message"]["content"] == "echo: hi mlflow"
    assert chat["usage"]["total_tokens"] == chat["usage"]["prompt_tokens"] + chat["usage"]["completion_tokens"]
    comp = client.predict(endpoint="completions", inputs={"prompt": "tell me", "max_tokens": 10})
    assert comp["choices"][0]["text"] == "echo: tell me"
    emb = client.predict(endpoint="embeddings", inputs={"input": ["one", "two"]})
    assert len(emb["data"]) == 2 and len(emb["data"][0]["embedding"]) == 8
    # MLflow does not pass the endpoint name to the provider: the provider model is used.
    sent = [r["body"]["model"] for r in origin.requests()]
    assert sent == ["gpt-4o-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small"]


def test_both_invocation_paths(gw):
    body = {"messages": [{"role": "user", "content": "path"}]}
    for prefix in ("endpoints", "gateway"):
        r = requests.post(f"{gw.base_url}/{prefix}/chat/invocations", json=body, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "echo: path"


def test_legacy_routes_listing(gw):
    r = requests.get(f"{gw.base_url}/api/2.0/gateway/routes/", timeout=10)
    assert r.status_code == 200
    chat = next(x for x in r.json()["routes"] if x["name"] == "chat")
    assert chat["route_type"] == "llm/v1/chat"


def test_traffic_route_splits_80_20_deterministically(client, gw):
    picks = collections.Counter()
    for i in range(100):
        body = {"messages": [{"role": "user", "content": f"request {i}"}]}
        first = requests.post(f"{gw.base_url}/gateway/split/invocations", json=body, timeout=10)
        again = requests.post(f"{gw.base_url}/gateway/split/invocations", json=body, timeout=10)
        assert first.status_code == 200, first.text
        # Same request, same destination: A/B assignments are reproducible.
        assert first.headers["x-gateway-endpoint"] == again.headers["x-gateway-endpoint"]
        assert first.json()["model"] == again.json()["model"]
        picks[first.headers["x-gateway-endpoint"]] += 1
    assert set(picks) == {"chat", "chat-b"}
    assert 65 <= picks["chat"] <= 95, picks  # 80/20 split over 100 distinct requests
    via_client = client.predict(endpoint="split", inputs={"messages": [{"role": "user", "content": "x"}]})
    assert via_client["model"] in {"gpt-4o-mini", "gpt-4o"}


def test_real_mlflow_model_scores_dataframe_split(gw, client):
    frame = {"dataframe_split": {"columns": ["amount", "risk"], "data": [[100.0, 0.5], [2000.0, 0.1]]}}
    r = requests.post(f"{gw.base_url}/endpoints/scorer/invocations", json=frame, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [0.6, 2.1]}
    assert client.predict(endpoint="scorer", inputs=frame) == {"predictions": [0.6, 2.1]}
    records = {"dataframe_records": [{"amount": 500.0, "risk": 0.25}]}
    r = requests.post(f"{gw.base_url}/gateway/scorer/invocations", json=records, timeout=30)
    assert r.json() == {"predictions": [0.75]}


def test_scoring_request_must_name_exactly_one_input(gw):
    for bad in ({}, {"dataframe_split": {}, "instances": []}, {"input": [1]}):
        r = requests.post(f"{gw.base_url}/endpoints/scorer/invocations", json=bad, timeout=10)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "invalid_scoring_request"
        assert "dataframe_split" in err["message"]


def test_type_mismatch_is_400(gw):
    r = requests.post(f"{gw.base_url}/v1/embeddings", json={"model": "chat", "input": "x"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "endpoint_type_mismatch"
