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
import requests

from harness import BIN, MlflowModelServer, MockOrigin, SpinHost, WorkerdHost, new_workdir
from idp import TestIdp
from otlp_receiver import OtlpReceiver
from mcp_servers import McpUpstream
from py_origin import PyOrigin

# Generated per run so the log checks can prove they never leak.
PROVIDER_SECRET = "sk-e2e-" + pysecrets.token_hex(12)
ADMIN_TOKEN = "adm-e2e-" + pysecrets.token_hex(16)
OTLP_SECRET = "otlp-e2e-" + pysecrets.token_hex(12)
MCP_FILES_TOKEN = "mcp-files-" + pysecrets.token_hex(12)
SECRETS = {
    "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
    "OPENAI_API_KEY": PROVIDER_SECRET,
    "ANTHROPIC_API_KEY": PROVIDER_SECRET + "-anthropic",
    "GEMINI_API_KEY": PROVIDER_SECRET + "-gemini",
    # Provider families (test_provider_families.py). The AWS pair is AWS's documented example
    # key, which the mock accepts; VERTEX_CREDENTIALS is added by `provider_credentials`.
    "GROQ_API_KEY": PROVIDER_SECRET + "-groq",
    "TOGETHERAI_API_KEY": PROVIDER_SECRET + "-together",
    "MISTRAL_API_KEY": PROVIDER_SECRET + "-mistral",
    "AZURE_OPENAI_API_KEY": PROVIDER_SECRET + "-azure",
    "BEDROCK_API_KEY": PROVIDER_SECRET + "-bedrock",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "AWS_BAD_SECRET": "not-the-secret",  # fam-bedrock-badsig: a secret AWS does not accept
    "OTLP_AUTH": "Bearer " + OTLP_SECRET,  # the collector credential (telemetry.headers)
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


def public_names(config: dict) -> list:
    """What an anonymous client is shown (issue 12, L2): public endpoints, and traffic routes
    whose destinations are all public, in config order (endpoints first, then routes)."""
    public = {e["name"] for e in config["endpoints"] if e.get("public")}
    routes = [r["name"] for r in config.get("routes", [])
              if all(d["name"] in public for d in r["destinations"])]
    return [e["name"] for e in config["endpoints"] if e["name"] in public] + routes


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
def idp():
    """The test identity provider (idp.py): keys made here, JWKS served on loopback."""
    provider = TestIdp()
    yield provider
    provider.close()


@pytest.fixture(scope="session")
def otlp():
    """The OpenTelemetry collector the e2e config exports to (otlp_receiver.py)."""
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def mcp_upstreams(workdir):
    """The two upstream MCP servers (official Python SDK, Streamable HTTP): `tools` and `files`."""
    servers = {"tools": McpUpstream(workdir, "tools"), "files": McpUpstream(workdir, "files", token=MCP_FILES_TOKEN)}
    yield servers
    for s in servers.values():
        s.close()


@pytest.fixture(scope="session")
def config(workdir, origin, eu_origin, us_origin, mlflow_server, py_origin, idp, otlp, mcp_upstreams):
    return render_config(workdir, {
        "origin": origin.url, "eu_origin": eu_origin.url, "us_origin": us_origin.url,
        "mlflow": mlflow_server.url, "closed": CLOSED_PORT_URL, "closed_other": OTHER_CLOSED_PORT_URL,
        "py_origin": py_origin.url, "idp": idp.url, "otlp": otlp.url,
        "mcp_tools": mcp_upstreams["tools"].url, "mcp_files": mcp_upstreams["files"].url,
    })


@pytest.fixture(scope="session")
def provider_credentials(origin):
    """A throwaway Google service account whose token endpoint is the mock: its key file goes
    into the hosts' secrets as VERTEX_CREDENTIALS, its public key to the mock."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    email = "e2e-gateway@e2e-project.iam.gserviceaccount.com"
    numbers = key.public_key().public_numbers()
    origin.control("/_mock/google/keys", {"client_email": email, "n": format(numbers.n, "x"), "e": numbers.e})
    account = {"type": "service_account", "project_id": "e2e-project", "private_key_id": "e2e-key-1",
               "private_key": pem, "client_email": email, "client_id": "1", "token_uri": origin.url + "/token"}
    SECRETS["VERTEX_CREDENTIALS"] = json.dumps(account)
    return account


_HOSTS = {"workerd": WorkerdHost, "spin": SpinHost}


@pytest.fixture(scope="session", params=list(_HOSTS))
def gw(request, workdir, config, provider_credentials):
    host = _HOSTS[request.param](workdir, SECRETS)
    host.kv_put_json("config:active", config)
    host.config = config
    yield host
    host.close()


# wrangler dev's proxy answers a request it lost while the worker under it was being replaced
# with this 503 (its ProxyWorker resends only GET and HEAD itself; seen once in CI, one of
# eight concurrent POSTs, 15 ms in). The gateway never sends it and production has no such
# proxy, so the suite sends such a request once more, as its Retry-After: 0 invites, and says
# so in the summary.
WRANGLER_RESTART = "Your worker restarted mid-request."
_resent = []
_send = requests.Session.send


def _send_again_after_a_dev_restart(self, request, **kw):
    r = _send(self, request, **kw)
    if r.status_code == 503 and r.headers.get("retry-after") == "0" and r.text.startswith(WRANGLER_RESTART):
        _resent.append(f"{request.method} {request.url}")
        r = _send(self, request, **kw)
    return r


requests.Session.send = _send_again_after_a_dev_restart


def pytest_terminal_summary(terminalreporter):
    if _resent:
        terminalreporter.write_line(
            f"wrangler dev lost {len(_resent)} request(s) while replacing the worker; each was sent again: {_resent}")


# A failed test's report shows at most this many lines of its gateway's log: the first and
# the last half of what the test's requests logged.
GATEWAY_LOG_LINES = 300
# Where the gateway's log stood when a test's setup ended.
_LOG_START = pytest.StashKey[int]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report ends with what its gateway logged while it ran (the compiled
    host's stdout and stderr: a line per request, with status and error code), so a failure
    seen only in CI can be read from CI's output."""
    outcome = yield
    report = outcome.get_result()
    host = getattr(item, "funcargs", {}).get("gw")
    log = getattr(host, "log", None)
    if log is None or not log.exists():
        return
    if report.when == "setup":
        item.stash[_LOG_START] = log.stat().st_size
    elif report.when == "call" and report.failed:
        with log.open("rb") as f:
            f.seek(item.stash.get(_LOG_START, 0))
            lines = f.read().decode(errors="replace").splitlines()
        half = GATEWAY_LOG_LINES // 2
        if len(lines) > GATEWAY_LOG_LINES:
            lines = lines[:half] + [f"... ({len(lines) - 2 * half} lines left out) ..."] + lines[-half:]
        report.sections.append((f"{host.name} gateway log while the test ran", "\n".join(lines)))


@pytest.fixture(autouse=True)
def clean_origins(request):
    for name in ("origin", "eu_origin", "us_origin", "py_origin"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()
    yield
