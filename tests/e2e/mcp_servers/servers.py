"""Two upstream MCP servers for the e2e suite, written with the official Python SDK (`mcp` 2.x,
where FastMCP is now `mcp.server.mcpserver.MCPServer`) and served over Streamable HTTP.

    python servers.py tools --port 9101            # SSE answers; dual-era (2026-07-28 + initialize)
    python servers.py files --port 9102 --token T  # JSON answers; needs `Authorization: Bearer T`
    python servers.py tools --json                 # JSON answers (scripts/bench)

`tools`: echo, add, slow (sleeps), progress (reports progress), fail (raises: an isError
result), contact (a result with an email address); a prompt and a resource. `files`: read_file, write_file, search, slow_read; a resource.
Both record every tool call's name and arguments, readable at GET /_calls (the suite checks
what reached the upstream: refused calls never do; redacted arguments arrive redacted).
Prints `listening on http://127.0.0.1:<port>` once it accepts connections.
"""
import argparse
import asyncio
import json
import socket
import sys

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse

CALLS: list = []


def record(tool: str, **arguments) -> None:
    CALLS.append({"tool": tool, "arguments": arguments})


def tools_server() -> MCPServer:
    mcp = MCPServer("tools", instructions="Small tools for the gateway's e2e suite.")

    @mcp.tool()
    def echo(text: str) -> str:
        """Returns its text."""
        record("echo", text=text)
        return text

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Adds two integers."""
        record("add", a=a, b=b)
        return a + b

    @mcp.tool()
    async def slow(seconds: float) -> str:
        """Waits, then answers."""
        record("slow", seconds=seconds)
        await asyncio.sleep(seconds)
        return f"slept {seconds}s"

    @mcp.tool()
    async def progress(steps: int, ctx: Context) -> str:
        """Reports progress `steps` times, a little apart, then answers."""
        record("progress", steps=steps)
        for i in range(1, steps + 1):
            await ctx.report_progress(i, steps, f"step {i}")
            await asyncio.sleep(0.05)
        return f"{steps} steps done"

    @mcp.tool()
    def fail(message: str) -> str:
        """Always fails."""
        record("fail", message=message)
        raise ValueError(f"failed on purpose: {message}")

    @mcp.tool()
    def contact() -> str:
        """Who to write to (a result with an email address in it)."""
        record("contact")
        return "write to help@example.com"

    @mcp.prompt()
    def greet(name: str) -> str:
        """A greeting prompt."""
        return f"Say hello to {name}."

    @mcp.resource("config://tools/version")
    def version() -> str:
        """The server's version."""
        return "tools 1.0"

    return mcp


FILES = {"/readme.txt": "hello from the files server", "/notes/todo.txt": "ship the MCP gateway"}


def files_server() -> MCPServer:
    mcp = MCPServer("files", instructions="An in-memory file store.")

    @mcp.tool()
    def read_file(path: str) -> str:
        """Reads a file."""
        record("read_file", path=path)
        if path not in FILES:
            raise FileNotFoundError(path)
        return FILES[path]

    @mcp.tool()
    def write_file(path: str, text: str) -> str:
        """Writes a file."""
        record("write_file", path=path, text=text)
        FILES[path] = text
        return f"wrote {len(text)} bytes"

    @mcp.tool()
    def search(query: str) -> list[str]:
        """Paths whose content contains `query`."""
        record("search", query=query)
        return sorted(p for p, t in FILES.items() if query in t)

    @mcp.tool()
    async def slow_read(seconds: float) -> str:
        """Waits before reading (the gateway's timeout case)."""
        record("slow_read", seconds=seconds)
        await asyncio.sleep(seconds)
        return "late"

    @mcp.resource("files://readme")
    def readme() -> str:
        """The readme."""
        return FILES["/readme.txt"]

    return mcp


class RequireToken:
    """ASGI middleware: `Authorization: Bearer <token>` on every HTTP request but /_calls."""

    def __init__(self, app, token: str):
        self.app = app
        self.token = f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] != "/_calls":
            if dict(scope["headers"]).get(b"authorization") != self.token:
                body = b'{"error":"unauthorized"}'
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name", choices=["tools", "files"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="")
    parser.add_argument("--json", action="store_true", help="JSON answers (default: SSE for tools)")
    args = parser.parse_args()

    mcp = tools_server() if args.name == "tools" else files_server()

    @mcp.custom_route("/_calls", methods=["GET", "DELETE"])
    async def calls(request: Request) -> JSONResponse:
        if request.method == "DELETE":
            CALLS.clear()
        return JSONResponse({"calls": CALLS})

    app = mcp.streamable_http_app(json_response=args.json or args.name == "files", host="127.0.0.1")
    if args.token:
        app = RequireToken(app, args.token)
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say they are TCP. With
    # `socket.socket()` (proto 0) an answer's head and body went out as two writes that Nagle
    # held for the client's delayed ACK: ~40 ms per answer on a kept-alive connection.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning")
    server = uvicorn.Server(config)

    async def serve():
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.02)
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        await task

    asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
