"""Fixtures: one mock origin and both compiled hosts per session; every test that takes
`gw` runs once per host, so the report lists each case as `[workerd]` and `[spin]`."""
import secrets as pysecrets

import pytest

from harness import MockOrigin, SpinHost, WorkerdHost, new_workdir

# Generated per run so the log checks can prove it never leaks.
PROVIDER_SECRET = "sk-e2e-" + pysecrets.token_hex(12)
CLOSED_PORT_URL = "http://127.0.0.1:9/v1"  # discard port: nothing listens, connect is refused


def gateway_config(origin_url: str) -> dict:
    def openai(name, endpoint_type, model, base):
        return {"name": name, "endpoint_type": endpoint_type,
                "model": {"provider": "openai", "name": model,
                          "config": {"openai_api_key": "$OPENAI_API_KEY", "openai_api_base": base}}}

    base = origin_url + "/v1"
    return {
        "version": "e2e-1",
        # Short memo so KV edits show quickly; short origin timeout so the 504 case is quick.
        "settings": {"config_ttl_ms": 1000, "origin_timeout_ms": 2000},
        "endpoints": [
            {**openai("chat", "llm/v1/chat", "gpt-4o-mini", base), "parameters": {"max_tokens": 64}},
            openai("completions", "llm/v1/completions", "gpt-3.5-turbo-instruct", base),
            openai("embeddings", "llm/v1/embeddings", "text-embedding-3-small", base),
            openai("dead", "llm/v1/chat", "gpt-4o-mini", CLOSED_PORT_URL),
        ],
    }


@pytest.fixture(scope="session")
def workdir():
    return new_workdir()


@pytest.fixture(scope="session")
def origin(workdir):
    o = MockOrigin(workdir)
    yield o
    o.close()


@pytest.fixture(scope="session")
def config(origin):
    return gateway_config(origin.url)


_HOSTS = {"workerd": WorkerdHost, "spin": SpinHost}


@pytest.fixture(scope="session", params=list(_HOSTS))
def gw(request, workdir, config):
    host = _HOSTS[request.param](workdir, {"OPENAI_API_KEY": PROVIDER_SECRET})
    host.kv_put_json("config:active", config)
    host.config = config
    yield host
    host.close()


@pytest.fixture(autouse=True)
def clean_origin(request):
    if "origin" in request.fixturenames:
        origin = request.getfixturevalue("origin")
        origin.reset()
    yield
