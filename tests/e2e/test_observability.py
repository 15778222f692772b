"""Metrics and traces in the user's stack, and the admin console (issue 13, items 3 and 4).

Real parts: an OTLP/HTTP collector in this process decoding what the gateway sends with the
official `opentelemetry-proto` package (otlp_receiver.py; the e2e config exports to it); a
real Prometheus (Debian's package) scraping `/admin/metrics` with the bearer token, read back
through its HTTP API; the console driven in Debian's headless Chromium through Selenium and
chromedriver, with a screenshot saved under target/e2e-artifacts/. Every case runs on both
hosts (the console is the same three files compiled into both builds).

Prometheus, Chromium, chromedriver and Selenium are required (scripts/setup installs them): a
missing one FAILS its test, so CI cannot pass without running it. Set
EGW_E2E_ALLOW_MISSING_TOOLS=1 to skip those tests instead (a machine without the tools)."""
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from openai import OpenAI

import conftest
from admin_client import MEMO_BOUND_S, Admin, fresh_minute, wait_until
from harness import ROOT, free_port, stop
from otlp_receiver import attrs

ADMIN_TOKEN = conftest.ADMIN_TOKEN
ARTIFACTS = Path(os.environ.get("E2E_ARTIFACTS", ROOT / "target" / "e2e-artifacts"))
ALLOW_MISSING_TOOLS = os.environ.get("EGW_E2E_ALLOW_MISSING_TOOLS") == "1"


def missing_tool(what: str) -> None:
    """A tool the suite needs is not installed: fail (skip only when explicitly allowed)."""
    message = (f"{what} is missing: run scripts/setup (it installs Debian's prometheus, chromium and "
               f"chromium-driver, and Selenium in the venv)")
    if ALLOW_MISSING_TOOLS:
        pytest.skip(f"{message} [skipped: EGW_E2E_ALLOW_MISSING_TOOLS=1]")
    pytest.fail(f"{message}; set EGW_E2E_ALLOW_MISSING_TOOLS=1 to skip instead", pytrace=False)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if not path:
        missing_tool(f"`{name}` (not on PATH)")
    return path


def admin(gw) -> Admin:
    return Admin(gw, ADMIN_TOKEN)


def tenant(gw, what: str) -> str:
    return f"{what}-{gw.name}-{secrets.token_hex(3)}"


def chat(gw, key, traceparent=None, model="keyed-chat", content="hello telemetry"):
    headers = {"traceparent": traceparent} if traceparent else {}
    client = OpenAI(base_url=gw.base_url + "/v1", api_key=key, default_headers=headers, max_retries=0)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}])


def origin_traceparents(origin):
    return [r["headers"].get("traceparent") for r in origin.requests() if r["path"].endswith("/chat/completions")]


def secrets_in_play(*extra):
    return [conftest.PROVIDER_SECRET, ADMIN_TOKEN, conftest.OTLP_SECRET, *extra]


# ---------------------------------------------------------------------------------------------
# OpenTelemetry: spans and metrics at a real OTLP decoder, trace context continued and forwarded


def test_otlp_span_per_request_with_genai_attributes_and_trace_context(gw, origin, otlp):
    team = tenant(gw, "otel")
    created = admin(gw).create_key(tenant=team)
    key = created["key"]
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)

    answer = chat(gw, key, traceparent=f"00-{trace_id}-{client_span}-01")
    assert answer.choices[0].message.content

    # The origin got the trace continued: same trace, the gateway's span as parent, sampled.
    forwarded = [tp for tp in origin_traceparents(origin) if tp and trace_id in tp]
    assert len(forwarded) == 1, origin_traceparents(origin)
    version, fwd_trace, gateway_span, flags = forwarded[0].split("-")
    assert (version, fwd_trace, flags) == ("00", trace_id, "01")
    assert gateway_span != client_span

    spans = wait_until(lambda: otlp.spans_of_trace(trace_id), timeout=20)
    assert len(spans) == 1, f"one span per request: {spans}"
    span = spans[0]
    a = attrs(span.attributes)
    assert span.name == "chat gpt-4o-mini"
    assert span.kind == span.SPAN_KIND_SERVER
    assert span.span_id.hex() == gateway_span, "the span the origin was told about"
    assert span.parent_span_id.hex() == client_span
    assert span.flags & 0x301 == 0x301, "sampled, remote parent"
    assert span.end_time_unix_nano >= span.start_time_unix_nano > 0
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.system"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert a["http.response.status_code"] == 200 and a["http.request.method"] == "POST"
    assert a["gateway.endpoint"] == "keyed-chat" and a["gateway.tenant"] == team
    assert a["gateway.key_id"] == created["id"]
    assert a["gateway.cache"] in ("MISS", "BYPASS") and a["gateway.stream"] is False
    assert a["gateway.cost_usd"] > 0
    attempts = [attrs(e.attributes) for e in span.events if e.name == "gateway.attempt"]
    assert [x["gateway.attempt.outcome"] for x in attempts] == ["ok"]
    assert attempts[0]["gateway.origin"].startswith(origin.url)

    # Who sent it: resource attributes and the collector headers from the secret.
    resource, _ = next((r, s) for r, s in otlp.spans() if s.trace_id.hex() == trace_id)
    assert resource["service.name"] == "edge-gateway-e2e"
    headers = [h for h, m in otlp.of("/v1/traces")]
    assert all(h["authorization"] == conftest.SECRETS["OTLP_AUTH"] for h in headers)
    assert all(h["content-type"] == "application/x-protobuf" for h in headers)

    # Nothing secret in any span, nor the collector credential in the host's log.
    text = "\n".join(str(s) for _, s in otlp.spans())
    for secret in secrets_in_play(key):
        assert secret not in text
    assert conftest.OTLP_SECRET not in gw.log_text()


def test_failed_attempts_are_events_and_a_5xx_is_an_error_span(gw, otlp):
    trace_id = secrets.token_hex(16)
    r = requests.post(gw.base_url + "/v1/chat/completions", timeout=30,
                      headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
                      json={"model": "dead", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 502, r.text
    span = wait_until(lambda: otlp.spans_of_trace(trace_id), timeout=20)[0]
    a = attrs(span.attributes)
    assert a["http.response.status_code"] == 502
    assert a["error.type"] == r.json()["error"]["code"]
    assert span.status.code == span.status.STATUS_CODE_ERROR
    outcomes = [attrs(e.attributes)["gateway.attempt.outcome"] for e in span.events]
    assert outcomes and all(o == "connect_error" for o in outcomes)
    assert a["gateway.attempts"] == len(outcomes)


def test_unsampled_traces_are_forwarded_but_not_recorded(gw, origin, otlp):
    key = admin(gw).create_key(tenant=tenant(gw, "unsampled"))["key"]
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    chat(gw, key, traceparent=f"00-{trace_id}-{parent}-00")
    forwarded = [tp for tp in origin_traceparents(origin) if tp and trace_id in tp]
    assert len(forwarded) == 1 and forwarded[0].endswith("-00"), forwarded
    # A sampled request after it: once its span is in, the unsampled one had its chance.
    sampled = secrets.token_hex(16)
    chat(gw, key, traceparent=f"00-{sampled}-{parent}-01")
    assert wait_until(lambda: otlp.spans_of_trace(sampled), timeout=20)
    time.sleep(1.5)
    assert otlp.spans_of_trace(trace_id) == []


def metric_points(otlp, name, **want):
    """Data points of metric `name` whose attributes include `want` (dots as __)."""
    want = {k.replace("__", "."): v for k, v in want.items()}
    points = []
    for _, m in otlp.metrics():
        if m.name != name:
            continue
        data = m.sum.data_points if m.WhichOneof("data") == "sum" else m.histogram.data_points
        for p in data:
            a = attrs(p.attributes)
            if all(a.get(k) == v for k, v in want.items()):
                points.append((m, p))
    return points


def test_otlp_metrics_count_requests_tokens_and_latency(gw, otlp):
    team = tenant(gw, "metrics")
    key = admin(gw).create_key(tenant=team)["key"]
    answers = [chat(gw, key, content=f"metrics {i}") for i in range(3)]
    prompt = sum(a.usage.prompt_tokens for a in answers)
    completion = sum(a.usage.completion_tokens for a in answers)

    def requests_counted():
        return sum(p.as_int for _, p in metric_points(otlp, "gateway.requests", gateway__tenant=team))

    assert wait_until(lambda: requests_counted() == 3, timeout=20), requests_counted()
    m, p = metric_points(otlp, "gateway.requests", gateway__tenant=team)[0]
    assert m.sum.is_monotonic and m.sum.aggregation_temporality == 1, "DELTA"
    assert m.unit == "{request}"
    assert attrs(p.attributes)["http.response.status_code"] == 200
    assert attrs(p.attributes)["gateway.endpoint"] == "keyed-chat"

    tokens = metric_points(otlp, "gen_ai.client.token.usage", gateway__tenant=team)
    assert tokens and tokens[0][0].unit == "{token}"
    by_type = {"input": 0, "output": 0}
    for _, p in tokens:
        a = attrs(p.attributes)
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "gpt-4o-mini"
        by_type[a["gen_ai.token.type"]] += p.sum
        assert sum(p.bucket_counts) == p.count and len(p.bucket_counts) == len(p.explicit_bounds) + 1
    assert by_type == {"input": prompt, "output": completion}

    durations = [p for _, p in metric_points(otlp, "gen_ai.client.operation.duration", gateway__endpoint="keyed-chat")]
    assert durations and all(p.count >= 1 and p.sum >= 0 for p in durations)
    assert metric_points(otlp, "gateway.cost", gateway__tenant=team)


def test_telemetry_never_delays_or_fails_a_request(gw, otlp):
    key = admin(gw).create_key(tenant=tenant(gw, "slowotel"))["key"]
    chat(gw, key)  # warm: config memo, key memo
    try:
        otlp.behave(status=200, delay_s=2.0)
        started = time.time()
        chat(gw, key, content="collector is slow")
        assert time.time() - started < 1.5, "the export waits for the collector, the client does not"
        otlp.behave(status=503)
        before = gw.log_text().count("telemetry_error")
        answer = chat(gw, key, content="collector is down")
        assert answer.choices[0].message.content
        assert wait_until(lambda: gw.log_text().count("telemetry_error") > before, timeout=20), \
            "a failed export is reported in the log"
        line = [l for l in gw.log_text().splitlines() if "telemetry_error" in l][-1]
        assert "HTTP 503" in line and conftest.OTLP_SECRET not in line
    finally:
        otlp.behave()
        time.sleep(5)  # let a delayed export finish before the next case


# ---------------------------------------------------------------------------------------------
# Prometheus: a real server scraping /admin/metrics with the bearer token


def prometheus_query(base, query):
    r = requests.get(base + "/api/v1/query", params={"query": query}, timeout=5)
    r.raise_for_status()
    result = r.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_admin_metrics_in_prometheus_text(gw, origin):
    team = tenant(gw, "promtext")
    key = admin(gw).create_key(tenant=team)["key"]
    chat(gw, key)
    assert requests.get(gw.base_url + "/admin/metrics", timeout=10).status_code == 401
    r = admin(gw).request("GET", "/admin/metrics", expect=200)
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert r.headers["cache-control"] == "no-store"
    assert "# TYPE gateway_requests_total counter" in r.text
    line = f'gateway_requests_total{{endpoint="keyed-chat",tenant="{team}",status="200"}} 1'
    assert wait_until(lambda: line in admin(gw).request("GET", "/admin/metrics").text, timeout=15)


def test_prometheus_scrapes_admin_metrics_with_the_bearer_token(gw, origin, tmp_path):
    prometheus = require_binary("prometheus")
    team = tenant(gw, "prom")
    key = admin(gw).create_key(tenant=team, rpm=3)["key"]
    fresh_minute(needed_s=20)
    answers = [chat(gw, key, content=f"prom {i}") for i in range(3)]
    limited = requests.post(gw.base_url + "/v1/chat/completions", timeout=30, headers={"authorization": f"Bearer {key}"},
                            json={"model": "keyed-chat", "messages": [{"role": "user", "content": "one too many"}]})
    assert limited.status_code == 429, limited.text
    usage = wait_until(lambda: (u := admin(gw).usage(tenant=team))["total"]["requests"] == 3 and u, timeout=15)
    assert usage, "the admin API's usage for the tenant"
    prompt = sum(a.usage.prompt_tokens for a in answers)
    assert usage["total"]["prompt_tokens"] == prompt

    (tmp_path / "token").write_text(ADMIN_TOKEN)
    (tmp_path / "wrong").write_text("not-the-admin-token")
    target = gw.base_url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "gateway", "metrics_path": "/admin/metrics",
             "authorization": {"type": "Bearer", "credentials_file": str(tmp_path / "token")},
             "static_configs": [{"targets": [target]}]},
            {"job_name": "gateway-wrong-token", "metrics_path": "/admin/metrics",
             "authorization": {"type": "Bearer", "credentials_file": str(tmp_path / "wrong")},
             "static_configs": [{"targets": [target]}]},
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "prometheus.log"
    proc = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        q = lambda expr: wait_until(lambda: _safe_query(base, expr), timeout=30)  # noqa: E731
        assert q(f'up{{job="gateway"}} == 1') == 1, log.read_text()[-2000:]
        requests_total = wait_until(
            lambda: _safe_query(base, f'sum(gateway_requests_total{{tenant="{team}"}})') == 4, timeout=30)
        assert requests_total, _safe_query(base, f'sum(gateway_requests_total{{tenant="{team}"}})')
        assert _safe_query(base, f'sum(gateway_requests_total{{tenant="{team}",status="200"}})') == usage["total"]["requests"]
        assert _safe_query(base, f'gateway_errors_total{{tenant="{team}",code="rate_limit_exceeded"}}') == 1
        assert _safe_query(base, f'sum(gateway_tokens_total{{tenant="{team}",type="input"}})') == prompt
        assert _safe_query(base, f'sum(gateway_tokens_total{{tenant="{team}",type="output"}})') == usage["total"]["completion_tokens"]
        cost = _safe_query(base, f'sum(gateway_cost_usd_total{{tenant="{team}"}})')
        assert cost == pytest.approx(usage["total"]["cost_usd"], rel=1e-6)
        # The scrape with the wrong token is refused: the target is down with a 401.
        targets = requests.get(base + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        wrong = wait_until(lambda: [t for t in requests.get(base + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
                                    if t["labels"]["job"] == "gateway-wrong-token" and t["health"] == "down"], timeout=15)
        assert wrong and "401" in wrong[0]["lastError"], targets
    finally:
        stop(proc)


def _safe_query(base, expr):
    try:
        return prometheus_query(base, expr)
    except (requests.RequestException, ValueError, KeyError):
        return None


# ---------------------------------------------------------------------------------------------
# The console in headless Chromium


def require_browser_tools():
    """Chromium, chromedriver and Selenium, checked in the test body so a missing one is a
    failure of the test (not an error of a fixture)."""
    chromium, driver_bin = require_binary("chromium"), require_binary("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing_tool("the Python package `selenium` (scripts/requirements.txt)")
    return chromium, driver_bin


@pytest.fixture
def browser(tmp_path):
    chromium, driver_bin = require_browser_tools()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 "--window-size=1280,2400"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_bin), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(driver, predicate, timeout=20.0, section=None):
    """Polls `predicate` in the page; on a time-out says the status line and, given the id of
    the `section` it waited on, that section's text (the status line is overwritten by every
    later action)."""
    value = wait_until(lambda: _try(predicate), timeout=timeout, interval=0.2)
    shown = f"; {section}: {_try(lambda: driver.find_element('id', section).text)!r}" if section else ""
    assert value, f"timed out; status: {_try(lambda: driver.find_element('id', 'status').text)}{shown}"
    return value


def click(driver, element):
    """Clicks `element` after scrolling it to the middle of the window (the sticky header and
    nav would otherwise cover it); returns it."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()
    return element


def _try(f):
    try:
        return f()
    except Exception:  # noqa: BLE001 - stale elements while the page re-renders
        return None


def post_chat(gw, key, model="keyed-chat", content="from the console test"):
    """One chat call with `key`, answered as is (status codes matter here)."""
    return requests.post(gw.base_url + "/v1/chat/completions", timeout=30, headers={"authorization": f"Bearer {key}"},
                         json={"model": model, "messages": [{"role": "user", "content": content}]})


def refused_within_memo_bound(gw, key, since, what):
    """`key` gets 401 invalid_api_key, within the auth memo bound of `since`."""
    refused = wait_until(lambda: post_chat(gw, key).status_code == 401, timeout=MEMO_BOUND_S + 10, interval=0.25)
    assert refused, f"{what}: still accepted {MEMO_BOUND_S + 10:.0f}s later"
    assert time.time() - since <= MEMO_BOUND_S + 1.5, f"{what}: refused only after the memo bound"
    r = post_chat(gw, key)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", r.text
    assert key not in r.text


def test_console_in_chromium(gw, origin, request):
    # Tools first, in the test body: a missing one fails this test (see missing_tool).
    require_browser_tools()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    api = admin(gw)
    team = tenant(gw, "console")
    key = api.create_key(tenant=team)["key"]
    answers = [chat(gw, key, content=f"console {i}") for i in range(2)]
    wait_until(lambda: api.usage(tenant=team)["total"]["requests"] == 2, timeout=15)
    series = lambda: api.request("GET", "/admin/usage/series", expect=200).json()  # noqa: E731
    assert wait_until(lambda: any(s["tenant"] == team for d in series()["days"] for s in d["series"]), timeout=15)

    # A caller (an API key) asks for the approval-gated endpoint: pending, refused until approved.
    asker_name = tenant(gw, "console-asker")
    asker = api.create_key(tenant=tenant(gw, "asking"), endpoints=["id-gated"], name=asker_name)
    reason = f"console approval {gw.name}"
    refused = post_chat(gw, asker["key"], model="id-gated")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "approval_required", refused.text
    asked = requests.post(gw.base_url + "/v1/access-requests", json={"endpoint": "id-gated", "reason": reason},
                          headers={"authorization": f"Bearer {asker['key']}"}, timeout=30)
    assert asked.status_code == 201, asked.text
    access_request = asked.json()
    request_id = access_request["id"]
    assert (access_request["state"], access_request["kind"], access_request["principal"], access_request["endpoint"]) == \
        ("pending", "key", asker["id"], "id-gated")
    pending = api.request("GET", "/admin/access-requests", expect=200).json()["requests"]
    assert request_id in [r["id"] for r in pending]

    d = request.getfixturevalue("browser")
    d.get(gw.base_url + "/admin/ui")
    assert d.find_element(By.ID, "login").is_displayed()
    d.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
    click(d, d.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]"))
    wait_for(d, lambda: d.find_element(By.ID, "app").is_displayed())
    assert ADMIN_TOKEN not in d.current_url
    assert d.execute_script("return sessionStorage.getItem('egw-admin-token')") == ADMIN_TOKEN

    # Endpoints: every endpoint of the active config is listed.
    active = api.config()
    names = {e["name"] for e in active.get("endpoints", [])}
    shown_endpoints = lambda: {r.get_attribute("data-endpoint") for r in  # noqa: E731
                               d.find_elements(By.CSS_SELECTOR, "#endpoint-table tr[data-endpoint]")}
    shown = wait_for(d, lambda: shown_endpoints() or None)
    assert names <= shown, names - shown
    versions = api.request("GET", "/admin/config/versions", expect=200).json()
    assert d.find_element(By.ID, "config-version").text == (versions["active"] or "(none)")

    # Keys: create (shown once), rotate (the old key stops, the new one is shown once), revoke.
    made = tenant(gw, "made-in-console")
    form = d.find_element(By.ID, "key-form")
    form.find_element(By.NAME, "tenant").send_keys(made)
    form.find_element(By.NAME, "name").send_keys("from the console")
    form.find_element(By.NAME, "endpoints").send_keys("keyed-chat")
    click(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    new_key = wait_for(d, lambda: d.find_element(By.ID, "new-key-value").text.strip() or None)
    assert new_key.startswith("egw_")
    listed = api.keys(tenant=made)
    assert len(listed) == 1 and listed[0]["endpoints"] == ["keyed-chat"] and listed[0]["state"] == "active"
    key_id = listed[0]["id"]
    assert chat(gw, new_key).choices, "the key the console showed works"
    click(d, d.find_element(By.ID, "new-key-done"))
    assert new_key not in d.page_source, "shown once"
    d.execute_script("window.confirm = () => true;")
    key_row = lambda: d.find_element(By.CSS_SELECTOR, f'#key-table tr[data-key="{key_id}"]')  # noqa: E731

    click(d, wait_for(d, key_row).find_element(By.CSS_SELECTOR, "button[data-action=rotate]"))
    rotated_at = time.time()
    rotated = wait_for(d, lambda: d.find_element(By.ID, "new-key-value").text.strip() or None)
    assert rotated.startswith("egw_") and rotated != new_key
    assert d.find_element(By.ID, "status").text == f"{key_id}: rotated."
    listed = api.keys(tenant=made)
    assert [(k["id"], k["state"]) for k in listed] == [(key_id, "active")], "rotation keeps the record"
    assert post_chat(gw, rotated).status_code == 200, "the rotated key the console showed works"
    refused_within_memo_bound(gw, new_key, rotated_at, "the key before rotation")
    click(d, d.find_element(By.ID, "new-key-done"))
    assert rotated not in d.page_source, "shown once"

    wait_for(d, lambda: key_row().get_attribute("data-state") == "active")
    click(d, key_row().find_element(By.CSS_SELECTOR, "button[data-action=revoke]"))
    revoked_at = time.time()
    wait_for(d, lambda: key_row().get_attribute("data-state") == "revoked")
    assert not key_row().find_elements(By.CSS_SELECTOR, "button"), "no actions on a revoked key"
    assert api.keys(tenant=made)[0]["state"] == "revoked"
    refused_within_memo_bound(gw, rotated, revoked_at, "the revoked key")

    # Pending access requests: the caller's request is listed; approving it in the console
    # writes the grant, and the caller gets through on its next request.
    request_row = lambda: d.find_element(By.CSS_SELECTOR, f'#access-body tr[data-request="{request_id}"]')  # noqa: E731
    row = wait_for(d, request_row, section="access-body")
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[:4] == [request_id, asker_name, "id-gated", reason], cells
    click(d, row.find_element(By.CSS_SELECTOR, "button[data-action=approve]"))
    wait_for(d, lambda: d.find_element(By.ID, "status").text == f"{request_id}: approved.")
    wait_for(d, lambda: not d.find_elements(By.CSS_SELECTOR, f'#access-body tr[data-request="{request_id}"]'))
    decided = api.request("GET", f"/admin/access-requests/{request_id}", expect=200).json()
    assert (decided["state"], decided["principal"], decided["endpoint"]) == ("approved", asker["id"], "id-gated"), decided
    assert "expires_at" not in decided, "approved from the console: no expiry"
    pending = api.request("GET", "/admin/access-requests", expect=200).json()["requests"]
    assert request_id not in [r["id"] for r in pending]
    approved = api.request("GET", "/admin/access-requests?state=approved", expect=200).json()["requests"]
    assert request_id in [r["id"] for r in approved]
    # No negative memo for grants: the next request sees the approval.
    allowed = wait_until(lambda: post_chat(gw, asker["key"], model="id-gated").status_code == 200, timeout=1.0)
    assert allowed, post_chat(gw, asker["key"], model="id-gated").text

    # Config rollback: two versions applied through the admin API, the console rolls back to the first.
    base = json.loads(json.dumps(gw.config))
    base_version = str(base["version"])
    changed = json.loads(json.dumps(base))
    changed["version"] = f"e2e-console-{gw.name}-{time.time_ns()}"
    extra = json.loads(json.dumps(next(e for e in base["endpoints"] if e["name"] == "keyed-chat")))
    extra["name"] = "console-extra"
    changed["endpoints"].append(extra)
    viewer = api.create_key(tenant=tenant(gw, "console-viewer"))["key"]

    def models():
        r = requests.get(gw.base_url + "/v1/models", headers={"authorization": f"Bearer {viewer}"}, timeout=10)
        assert r.status_code == 200, r.text
        return [m["id"] for m in r.json()["data"]]

    version_button = lambda v: d.find_element(  # noqa: E731
        By.CSS_SELECTOR, f'#version-table tr[data-version="{v}"] button')
    try:
        assert api.request("POST", "/admin/config", base, expect=200).json()["version"] == base_version
        assert api.request("POST", "/admin/config", changed, expect=200).json()["previous"] == base_version
        assert wait_until(lambda: "console-extra" in models(), timeout=15)
        click(d, d.find_element(By.ID, "usage-refresh"))  # reloads every section
        wait_for(d, lambda: d.find_element(By.ID, "config-version").text == changed["version"])
        wait_for(d, lambda: "console-extra" in shown_endpoints())
        assert d.find_element(By.CSS_SELECTOR, f'#version-table tr[data-version="{changed["version"]}"]').text \
            .endswith("active")
        click(d, wait_for(d, lambda: version_button(base_version)))
        wait_for(d, lambda: d.find_element(By.ID, "config-version").text == base_version)
        assert d.find_element(By.ID, "status").text == f"Rolled back to {base_version}."
        versions = api.request("GET", "/admin/config/versions", expect=200).json()
        assert versions["active"] == base_version, versions
        assert {base_version, changed["version"]} <= set(versions["versions"]), versions
        assert api.config()["version"] == base_version
        wait_for(d, lambda: "console-extra" not in shown_endpoints())
        assert version_button(changed["version"]).text == "Roll back to this", "the other version can be re-activated"
        assert wait_until(lambda: "console-extra" not in models(), timeout=15), "the rollback reached the data plane"
    finally:
        if api.request("GET", "/admin/config/versions").json().get("active") != base_version:
            api.request("POST", "/admin/config/rollback", {"version": base_version}, expect=200)

    # Usage by tenant: the chart's numbers are the admin API's.
    Select(d.find_element(By.ID, "usage-group")).select_by_value("tenant")
    legend = lambda chart: d.find_element(  # noqa: E731
        By.CSS_SELECTOR, f'figure[data-chart="{chart}"] li[data-group="{team}"]')
    wait_for(d, lambda: legend("requests"))
    usage = api.usage(tenant=team)["total"]
    assert float(legend("requests").get_attribute("data-total")) == usage["requests"] == 2
    assert float(legend("tokens").get_attribute("data-total")) == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] == sum(a.usage.prompt_tokens for a in answers)
    assert float(legend("cost").get_attribute("data-total")) == pytest.approx(usage["cost_usd"], rel=1e-9)
    bars = d.find_elements(By.CSS_SELECTOR, f'figure[data-chart="requests"] rect[data-group="{team}"]')
    assert sum(float(b.get_attribute("data-value")) for b in bars) == 2
    assert f"{team}: 2" in d.find_element(By.CSS_SELECTOR, 'figure[data-chart="requests"]').text
    row = d.find_element(By.CSS_SELECTOR, f'#usage-table tr[data-group="{team}"]')
    assert row.get_attribute("data-requests") == "2"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"console-{gw.name}.png"
    d.execute_script("document.getElementById('usage').scrollIntoView()")
    assert d.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"console screenshot: {shot}")

    # Sign out forgets the token.
    click(d, d.find_element(By.ID, "logout"))
    assert d.execute_script("return sessionStorage.getItem('egw-admin-token')") is None
