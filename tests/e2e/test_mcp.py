"""MCP at the edge (issue 14), on both hosts: `/mcp` in front of two upstream MCP servers
written with the official Python SDK (tests/e2e/mcp_servers/servers.py), driven by the official
client (`streamable_http_client` + `ClientSession`) in both protocol eras — 2026-07-28
(stateless, `discover`) and 2025-11-25 (`initialize`, a session the gateway keeps in KV).

Config: tests/e2e/gateway.yaml `mcp_servers` / `mcp_policies`. The `mcp-team` tenant may use
every `tools` tool, files.read_file/search/slow_read and the `down` server; a key of another
tenant gets its own grant."""
import asyncio
import json
import subprocess
import time
from contextlib import asynccontextmanager

import pytest
import requests
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

import conftest
from admin_client import GATEWAYCTL, Admin, fresh_minute, gatewayctl, log_records, wait_until

TEAM_TOOLS = {"tools__echo", "tools__add", "tools__slow", "tools__progress", "tools__fail", "tools__contact",
              "files__read_file", "files__search", "files__slow_read"}


def new_key(gw, **spec) -> tuple:
    spec.setdefault("tenant", "mcp-team")
    created = Admin(gw, conftest.ADMIN_TOKEN).create_key(**spec)
    return created["key"], created["id"]


@asynccontextmanager
async def connect(url: str, headers: dict, era: str = "legacy"):
    """An official-SDK client session: `legacy` runs the initialize handshake, `modern` the
    2026-07-28 discover probe."""
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                if era == "legacy":
                    await session.initialize()
                else:
                    await session.discover()
                yield session


def gateway(gw, key, era="legacy", server=None):
    path = "/mcp" if server is None else f"/mcp/{server}"
    return connect(gw.base_url + path, {"authorization": f"Bearer {key}"}, era)


def direct(upstream, era="legacy"):
    return connect(upstream.mcp_url, upstream.headers(), era)


def run(coro):
    """Runs a client coroutine; an error raised inside the SDK's task groups comes out as itself
    (not wrapped in exception groups)."""
    try:
        return asyncio.run(coro)
    except BaseExceptionGroup as group:
        leaf = group
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise leaf from None


def same(a, b):
    """A tool result as a client sees it: content, structured content and the error flag."""
    dump = lambda r: (r.model_dump(mode="json", exclude={"meta", "result_type"}))
    assert dump(a) == dump(b), (dump(a), dump(b))


# --- listing and calling ----------------------------------------------------------------------

@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_tools_are_the_union_filtered_per_key(gw, era):
    team, _ = new_key(gw)
    reader, _ = new_key(gw, tenant="mcp-readers", mcp={"servers": ["files"], "tools": ["files.read_*"]})

    async def names(key):
        async with gateway(gw, key, era) as s:
            return {t.name for t in (await s.list_tools()).tools}

    assert run(names(team)) == TEAM_TOOLS
    assert run(names(reader)) == {"files__read_file"}
    # The same grant through gatewayctl.
    out = gatewayctl(gw, "keys", "create", "--tenant", "mcp-readers", "--mcp-servers", "files", "--mcp-tools",
                     "files.search", token=conftest.ADMIN_TOKEN)
    assert run(names(json.loads(out.stdout)["key"])) == {"files__search"}


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_allowed_calls_answer_as_the_upstream_does(gw, mcp_upstreams, era):
    key, _ = new_key(gw)
    cases = [("tools", "echo", {"text": "hello"}), ("tools", "add", {"a": 2, "b": 40}),
             ("tools", "fail", {"message": "x"}), ("files", "read_file", {"path": "/readme.txt"}),
             ("files", "search", {"query": "MCP"}), ("files", "read_file", {"path": "/missing"})]

    async def through_gateway():
        async with gateway(gw, key, era) as s:
            await s.list_tools()
            return [await s.call_tool(f"{server}__{tool}", args) for server, tool, args in cases]

    async def directly():
        out = []
        for server, tool, args in cases:
            async with direct(mcp_upstreams[server], era) as s:
                await s.list_tools()
                out.append(await s.call_tool(tool, args))
        return out

    got, want = run(through_gateway()), run(directly())
    for g, w in zip(got, want):
        same(g, w)
    assert got[1].structured_content == {"result": 42}
    assert got[2].is_error and got[5].is_error  # failing tools are the tools' answers


def test_progress_notifications_stream_through(gw):
    key, _ = new_key(gw)

    async def call():
        seen = []

        async def on_progress(progress, total, message):
            seen.append((progress, total, message, time.monotonic()))

        async with gateway(gw, key, "modern") as s:
            result = await s.call_tool("tools__progress", {"steps": 4}, progress_callback=on_progress)
        return result, seen

    result, seen = run(call())
    assert result.content[0].text == "4 steps done"
    assert [(p, t, m) for p, t, m, _ in seen] == [(i, 4, f"step {i}") for i in range(1, 5)]


def test_one_server_endpoint_keeps_the_servers_names(gw):
    key, _ = new_key(gw)

    async def go():
        async with gateway(gw, key, "legacy", server="files") as s:
            names = {t.name for t in (await s.list_tools()).tools}
            text = (await s.call_tool("read_file", {"path": "/notes/todo.txt"})).content[0].text
            resources = [str(r.uri) for r in (await s.list_resources()).resources]
            return names, text, resources

    names, text, resources = run(go())
    assert names == {"read_file", "search", "slow_read"}
    assert text == "ship the MCP gateway"
    assert resources == ["files://readme"]


def test_prompts_and_resources_pass_through(gw):
    key, _ = new_key(gw)

    async def go():
        async with gateway(gw, key, "modern") as s:
            prompts = [p.name for p in (await s.list_prompts()).prompts]
            prompt = await s.get_prompt("tools__greet", {"name": "Ada"})
            read = await s.read_resource("files://readme")
            return prompts, prompt, read

    prompts, prompt, read = run(go())
    assert prompts == ["tools__greet"]
    assert "Ada" in prompt.messages[0].content.text
    assert read.contents[0].text == "hello from the files server"


# --- governance -------------------------------------------------------------------------------

def expect_error(coro, code):
    with pytest.raises(MCPError) as raised:
        run(coro)
    assert raised.value.code == code, (raised.value.code, raised.value.message, raised.value.data)
    return raised.value


async def one_call(gw, key, name, args, era="legacy"):
    async with gateway(gw, key, era) as s:
        return await s.call_tool(name, args)


def test_a_refused_tool_never_reaches_the_upstream(gw, mcp_upstreams):
    key, _ = new_key(gw)
    e = expect_error(one_call(gw, key, "files__write_file", {"path": "/x", "text": "pwned"}), 403)
    assert e.message == 'tool "files__write_file" is not allowed for this API key'
    assert not [c for c in mcp_upstreams["files"].calls() if c["tool"] == "write_file"]
    expect_error(one_call(gw, key, "nope__tool", {}), -32602)


def test_a_rate_limited_tool_gets_retry_timing(gw):
    key, _ = new_key(gw)
    fresh_minute()

    async def three():
        async with gateway(gw, key, "modern") as s:
            out = [await s.call_tool("tools__add", {"a": 1, "b": i}) for i in range(2)]
            try:
                await s.call_tool("tools__add", {"a": 1, "b": 2})
            except MCPError as e:
                return out, e
        return out, None

    ok, e = run(three())
    assert [r.structured_content["result"] for r in ok] == [1, 2]
    assert e is not None and e.code == 429, e
    assert 1 <= e.data["retry_after"] <= 60
    assert "tools__add" in e.message and "2 calls per minute" in e.message
    # Other tools are not limited.
    assert run(one_call(gw, key, "tools__echo", {"text": "still here"})).content[0].text == "still here"


def test_arguments_are_redacted_or_denied(gw, mcp_upstreams):
    key, _ = new_key(gw)
    marker = f"ann.{time.time_ns()}@example.com"
    result = run(one_call(gw, key, "tools__echo", {"text": f"mail {marker} today"}))
    assert result.content[0].text == "mail [EMAIL] today"
    seen = [c["arguments"]["text"] for c in mcp_upstreams["tools"].calls() if c["tool"] == "echo"]
    assert "mail [EMAIL] today" in seen and not any(marker in t for t in seen)
    e = expect_error(one_call(gw, key, "tools__echo", {"text": "about Project Falcon"}, "modern"), 403)
    assert e.data["code"] == "content_denied" and "Falcon" not in e.message
    # Results get the same rules (`output: true`): an email in a result is redacted too.
    assert run(one_call(gw, key, "tools__contact", {})).content[0].text == "write to [EMAIL]"


def test_upstream_down_or_slow_is_an_error_naming_the_server(gw):
    key, _ = new_key(gw)
    e = expect_error(one_call(gw, key, "down__anything", {}), 502)
    assert 'MCP server "down"' in e.message and e.data["server"] == "down"
    started = time.monotonic()
    e = expect_error(one_call(gw, key, "files__slow_read", {"seconds": 5}), 504)
    assert time.monotonic() - started < 4.5, "no hang: the server's timeout_ms bounds it"
    assert e.message == 'MCP server "files" did not answer within 1500 ms'
    # The listing still answers without the down server.
    assert "down" not in json.dumps(run(_names(gw, key)))


async def _names(gw, key):
    async with gateway(gw, key) as s:
        return sorted(t.name for t in (await s.list_tools()).tools)


# --- sessions ---------------------------------------------------------------------------------

def raw(gw, key, body, session=None, version="2025-11-25", method="POST", path="/mcp"):
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json",
               "accept": "application/json, text/event-stream", "mcp-protocol-version": version}
    if session:
        headers["mcp-session-id"] = session
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return requests.request(method, gw.base_url + path, data=data, headers=headers, timeout=30)


def rpc_result(r):
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        events = [json.loads(l[5:]) for l in r.text.splitlines() if l.startswith("data:")]
        return events[-1]
    return r.json()


def test_a_session_continues_across_requests_and_ends_with_delete(gw, mcp_upstreams):
    key, _ = new_key(gw)
    r = raw(gw, key, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                      "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
    assert r.status_code == 200, r.text
    session = r.headers["mcp-session-id"]
    assert r.json()["result"]["protocolVersion"] == "2025-11-25"
    assert raw(gw, key, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session).status_code == 202
    before = len([c for c in mcp_upstreams["files"].calls() if c["tool"] == "read_file"])
    # Each call is its own HTTP request (on Spin, its own component instance): the session and
    # the upstream session behind it come from KV.
    for i in range(3):
        r = raw(gw, key, {"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call",
                          "params": {"name": "files__read_file", "arguments": {"path": "/readme.txt"}}}, session)
        assert r.status_code == 200, r.text
        assert rpc_result(r)["result"]["content"][0]["text"] == "hello from the files server"
    assert len([c for c in mcp_upstreams["files"].calls() if c["tool"] == "read_file"]) == before + 3
    other, _ = new_key(gw)
    assert raw(gw, other, {"jsonrpc": "2.0", "id": 2, "method": "ping"}, session).status_code == 404
    assert raw(gw, key, "", session, method="DELETE").status_code == 200
    r = raw(gw, key, {"jsonrpc": "2.0", "id": 3, "method": "ping"}, session)
    assert r.status_code == 404 and r.json()["error"]["code"] == -32600


def test_the_official_client_keeps_its_session(gw):
    key, _ = new_key(gw)

    async def go():
        async with gateway(gw, key, "legacy") as s:
            texts = []
            for path in ["/readme.txt", "/notes/todo.txt", "/readme.txt"]:
                texts.append((await s.call_tool("files__read_file", {"path": path})).content[0].text)
            await s.send_ping()
            return s.protocol_version, texts

    version, texts = run(go())
    assert version == "2025-11-25"
    assert texts == ["hello from the files server", "ship the MCP gateway", "hello from the files server"]


# --- bad input --------------------------------------------------------------------------------

def test_bad_input_gets_json_rpc_errors_never_a_5xx(gw):
    key, _ = new_key(gw)
    modern = {"mcp-method": "ping"}

    def code(r):
        assert r.status_code < 500, r.text
        return r.status_code, r.json()["error"]["code"]

    assert code(raw(gw, key, "{not json", version="2026-07-28")) == (400, -32700)
    assert code(raw(gw, key, [{"jsonrpc": "2.0", "id": 1, "method": "ping"}], version="2026-07-28")) == (400, -32600)
    assert code(raw(gw, key, {"jsonrpc": "2.0", "id": 1, "method": "ping"})) == (400, -32600)  # no session
    assert code(raw(gw, key, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, session="x" * 32)) == (404, -32600)
    assert code(raw(gw, key, "x" * (2 << 20), version="2026-07-28"))[0] == 413
    envelope = {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                          "io.modelcontextprotocol/clientCapabilities": {}}}
    r = requests.post(gw.base_url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "no/such", "params": envelope},
                      headers={"authorization": f"Bearer {key}", "mcp-protocol-version": "2026-07-28", "mcp-method": "no/such"})
    assert code(r) == (404, -32601)
    r = requests.post(gw.base_url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": envelope},
                      headers={"authorization": f"Bearer {key}", "mcp-protocol-version": "2026-07-28", **modern})
    assert code(r) == (400, -32020)
    r = requests.post(gw.base_url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                      headers={"mcp-protocol-version": "2026-07-28", **modern})
    assert code(r) == (401, 401)
    assert requests.get(gw.base_url + "/mcp", headers={"authorization": f"Bearer {key}"}).status_code == 405


# --- observability ----------------------------------------------------------------------------

def test_one_log_line_and_one_usage_record_per_tool_call(gw):
    key, key_id = new_key(gw)
    marker = f"secret-arg-{time.time_ns()}"
    run(one_call(gw, key, "tools__echo", {"text": marker}, "modern"))
    expect_error(one_call(gw, key, "files__write_file", {"path": "/x", "text": marker}), 403)

    def lines():
        return [r for r in log_records(gw, key_id) if r.get("mcp", {}).get("method") == "tools/call"]

    found = wait_until(lambda: len(lines()) >= 2, timeout=10)
    assert found, gw.log_text()[-3000:]
    # One line each; on workerd the after-response work of the two may finish in either order.
    assert len(lines()) == 2, lines()
    ok, refused = sorted(lines(), key=lambda r: r["mcp"]["server"] != "tools")
    assert (ok["mcp"]["server"], ok["mcp"]["tool"], ok["mcp"]["status"]) == ("tools", "echo", "ok")
    assert ok["mcp"]["bytes_out"] > 0 and ok["mcp"]["latency_ms"] >= 0
    assert (refused["mcp"]["tool"], refused["mcp"]["status"]) == ("write_file", "refused")
    assert marker not in gw.log_text(), "argument values never reach the log"
    admin = Admin(gw, conftest.ADMIN_TOKEN)
    wait_until(lambda: admin.usage(key=key_id)["total"]["requests"] >= 2, timeout=10)
    usage = admin.usage(key=key_id)["total"]
    assert (usage["requests"], usage["errors"]) == (2, 1), usage


# --- config -----------------------------------------------------------------------------------

def test_gatewayctl_validate_checks_the_mcp_config(tmp_path):
    bad = tmp_path / "mcp.yaml"
    bad.write_text("""
regions: {eu: {continents: [EU]}}
mcp_servers:
  - {name: files, url: "http://127.0.0.1:1/mcp", protocol: "2025-11-26", auth: {bearer: $FILES_TOKEN}}
  - {name: "a__b", url: "ftp://x", region: europe, tool_limit: {}}
mcp_policies:
  acme: {servers: [file], tools: ["files.read_*"], tool_limits: {"files.read_*": {calls: 0, renewal_period: minute}}}
""")
    out = subprocess.run([str(GATEWAYCTL), "validate", str(bad)], capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    for line in [
        'mcp_servers[0].protocol: unknown MCP protocol version "2025-11-26" (did you mean "2025-11-25"?)',
        'mcp_servers[1].tool_limit: unknown MCP server field "tool_limit" (did you mean "tool_limits"?)',
        'mcp_servers[1].name: "a__b" is not a valid server name',
        'mcp_servers[1].url: "ftp://x" must be an http:// or https:// URL',
        'mcp_servers[1].region: unknown region "europe"',
        'mcp_policies.acme.tool_limits.files.read_*.calls: must be a whole number >= 1',
    ]:
        assert line in text, text
    good = tmp_path / "ok.yaml"
    good.write_text("mcp_servers:\n  - {name: files, url: \"http://127.0.0.1:1/mcp\"}\n"
                    "mcp_policies:\n  acme: {servers: [files]}\n")
    out = subprocess.run([str(GATEWAYCTL), "validate", str(good)], capture_output=True, text=True)
    assert out.returncode == 0 and "1 MCP server(s): files" in out.stdout, out.stdout + out.stderr
