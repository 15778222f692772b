"""Fixtures: the mock origins, a foreign origin on Python's http.server (py_origin.py), a
real `mlflow models serve`, and both compiled hosts per session. Every test that takes `gw`
runs once per host, so the report lists each case as `[workerd]` and `[spin]`.

The gateway config is an MLflow AI Gateway YAML (tests/e2e/gateway.yaml, origin URLs filled
in) that goes through `gatewayctl validate` and `gatewayctl render` into KV, exactly as an
operator's would."""
import json
import secrets as pysecrets
import subprocess

import pytest

from harness import BIN, MlflowModelServer, MockOrigin, SpinHost, WorkerdHost, new_workdir
from mcp_servers import McpUpstream
from py_origin import PyOrigin

# Generated per run so the log checks can prove they never leak.
PROVIDER_SECRET = "sk-e2e-" + pysecrets.token_hex(12)
ADMIN_TOKEN = "adm-e2e-" + pysecrets.token_hex(16)
MCP_FILES_TOKEN = "mcp-files-" + pysecrets.token_hex(12)
SECRETS = {
    "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
    "OPENAI_API_KEY": PROVIDER_SECRET,
    "ANTHROPIC_API_KEY": PROVIDER_SECRET + "-anthropic",
    "GEMINI_API_KEY": PROVIDER_SECRET + "-gemini",
    "MCP_FILES_TOKEN": MCP_FILES_TOKEN,
}
# Discard and echo ports: nothing listens, connect is refused.
CLOSED_PORT_URL = "http://127.0.0.1:9"
OTHER_CLOSED_PORT_URL = "http://127.0.0.1:7"
TEMPLATE = __import__("pathlib").Path(__file__).with_name("gateway.yaml")


def render_config(workdir, urls: dict) -> dict:
    """Fills the YAML template, validates it and renders the KV entries with gatewayctl."""
    text = TEMPLATE.read_text()
    for name, url in urls.items():
        text = text.replace("{" + name + "}", url)
    path = workdir / "gateway.yaml"
    path.write_text(text)
    check = subprocess.run([str(BIN / "gatewayctl"), "validate", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    out = subprocess.run([str(BIN / "gatewayctl"), "render", str(path)], capture_output=True, text=True, check=True)
    entries = {e["key"]: e["value"] for e in json.loads(out.stdout)}
    return json.loads(entries["config:active"])


@pytest.fixture(scope="session")
def workdir():
    return new_workdir()


def _origin(workdir, name):
    o = MockOrigin(workdir, name)
    yield o
    o.close()


@pytest.fixture(scope="session")
def origin(workdir):
    yield from _origin(workdir, "main")


@pytest.fixture(scope="session")
def eu_origin(workdir):
    yield from _origin(workdir, "eu")


@pytest.fixture(scope="session")
def us_origin(workdir):
    yield from _origin(workdir, "us")


@pytest.fixture(scope="session")
def py_origin():
    """The second, independent origin: Python's http.server (py_origin.py), which reads request
    bodies by Content-Length only and frames its answers three ways."""
    o = PyOrigin(api_key=PROVIDER_SECRET)
    yield o
    o.close()


@pytest.fixture(scope="session")
def mlflow_server(workdir):
    server = MlflowModelServer(workdir)
    yield server
    server.close()


@pytest.fixture(scope="session")
def mcp_upstreams(workdir):
    """The two upstream MCP servers (official Python SDK, Streamable HTTP): `tools` and `files`."""
    servers = {"tools": McpUpstream(workdir, "tools"), "files": McpUpstream(workdir, "files", token=MCP_FILES_TOKEN)}
    yield servers
    for s in servers.values():
        s.close()


@pytest.fixture(scope="session")
def config(workdir, origin, eu_origin, us_origin, mlflow_server, py_origin, mcp_upstreams):
    return render_config(workdir, {
        "origin": origin.url, "eu_origin": eu_origin.url, "us_origin": us_origin.url,
        "mlflow": mlflow_server.url, "closed": CLOSED_PORT_URL, "closed_other": OTHER_CLOSED_PORT_URL,
        "py_origin": py_origin.url, "mcp_tools": mcp_upstreams["tools"].url, "mcp_files": mcp_upstreams["files"].url,
    })


_HOSTS = {"workerd": WorkerdHost, "spin": SpinHost}


@pytest.fixture(scope="session", params=list(_HOSTS))
def gw(request, workdir, config):
    host = _HOSTS[request.param](workdir, SECRETS)
    host.kv_put_json("config:active", config)
    host.config = config
    yield host
    host.close()


@pytest.fixture(autouse=True)
def clean_origins(request):
    for name in ("origin", "eu_origin", "us_origin", "py_origin"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()
    yield
