"""The upstream MCP servers of the e2e suite (servers.py), as processes the fixtures start."""
import subprocess
import sys
import time
from pathlib import Path

import requests

from harness import stop

SCRIPT = Path(__file__).with_name("servers.py")


class McpUpstream:
    """`python servers.py <name>` on a free loopback port; `url` is its base (the MCP endpoint
    is `url + "/mcp"`)."""

    def __init__(self, workdir: Path, name: str, token: str = ""):
        self.name = name
        self.token = token
        self.log = workdir / f"mcp-{name}.log"
        args = [sys.executable, str(SCRIPT), name]
        if token:
            args += ["--token", token]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log.open("w"), text=True,
                                     start_new_session=True)
        deadline = time.time() + 90
        line = ""
        while time.time() < deadline and not line.startswith("listening on "):
            line = self.proc.stdout.readline().strip()
            if self.proc.poll() is not None:
                break
        if not line.startswith("listening on "):
            raise RuntimeError(f"MCP server {name} did not start:\n{self.log.read_text()[-4000:]}")
        self.url = line.removeprefix("listening on ")
        self.mcp_url = self.url + "/mcp"

    def headers(self) -> dict:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def calls(self) -> list:
        """Every tool call that reached this server: [{tool, arguments}]."""
        return requests.get(self.url + "/_calls", timeout=5).json()["calls"]

    def close(self):
        stop(self.proc)
