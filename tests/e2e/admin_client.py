"""Helpers for the issue-4 suite (test_keys.py): the admin API, gatewayctl, and the price
table of the e2e config (tests/e2e/gateway.yaml, which also holds the keyed-* endpoints)."""
import json
import os
import subprocess
import time
from pathlib import Path

import requests

from harness import BIN

GATEWAYCTL = BIN / "gatewayctl"

# How long a revoked key may still pass in an isolate that saw it (src/gateway/auth.rs
# MEMO_TTL_MS). Local KV has no propagation delay, so this is the whole bound here.
MEMO_BOUND_S = 5.0

def _prices() -> dict:
    """The price table of tests/e2e/gateway.yaml, for computing expected costs."""
    import yaml  # mlflow depends on PyYAML
    text = (Path(__file__).with_name("gateway.yaml")).read_text()
    return yaml.safe_load(text.replace("$", ""))["prices"]


PRICES = _prices()


def price_of(model: str) -> dict:
    return PRICES.get(f"openai/{model}", {})


def cost_usd(model: str, prompt: int, completion: int) -> float:
    p = price_of(model)
    return (prompt * p.get("input_per_1m", 0) + completion * p.get("output_per_1m", 0)) / 1e6


class Admin:
    """The admin API of one host, with the e2e admin token."""

    def __init__(self, gw, token: str):
        self.gw = gw
        self.token = token

    def request(self, method: str, path: str, body=None, token=None, expect=None):
        headers = {"authorization": f"Bearer {self.token if token is None else token}"}
        r = requests.request(method, self.gw.base_url + path, json=body, headers=headers, timeout=30)
        if expect is not None:
            assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
        return r

    def create_key(self, **spec) -> dict:
        spec.setdefault("tenant", "e2e")
        return self.request("POST", "/admin/keys", spec, expect=201).json()

    def revoke(self, key_id: str) -> dict:
        return self.request("POST", f"/admin/keys/{key_id}/revoke", expect=200).json()

    def rotate(self, key_id: str) -> dict:
        return self.request("POST", f"/admin/keys/{key_id}/rotate", expect=200).json()

    def keys(self, tenant=None) -> list:
        """Every key (the admin API answers in pages: follows `next_cursor`)."""
        keys, cursor = [], None
        while True:
            query = {k: v for k, v in {"tenant": tenant, "cursor": cursor}.items() if v}
            path = "/admin/keys" + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
            page = self.request("GET", path, expect=200).json()
            keys += page["keys"]
            cursor = page.get("next_cursor")
            if not cursor:
                return keys

    def usage(self, key=None, tenant=None, frm=None, to=None) -> dict:
        query = {k: v for k, v in {"key": key, "tenant": tenant, "from": frm, "to": to}.items() if v}
        path = "/admin/usage?" + "&".join(f"{k}={v}" for k, v in query.items())
        return self.request("GET", path, expect=200).json()

    def config(self) -> dict:
        return self.request("GET", "/admin/config", expect=200).json()


def gatewayctl(gw, *args: str, token: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, GATEWAY_URL=gw.base_url, GATEWAY_ADMIN_TOKEN=token)
    out = subprocess.run([str(GATEWAYCTL), *args], env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert out.returncode == 0, f"gatewayctl {' '.join(args)}: rc={out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


def wait_until(predicate, timeout: float, interval: float = 0.2):
    """Polls `predicate` until it returns a truthy value; returns it, or the last falsy one."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value or time.time() > deadline:
            return value
        time.sleep(interval)


def fresh_minute(needed_s: float = 20.0) -> None:
    """Minute windows are fixed (aligned to the clock): start a rate-limit run early enough
    in a minute that the window does not roll over mid-test."""
    left = 60.0 - time.time() % 60.0
    if left < needed_s:
        time.sleep(left + 0.3)


def log_records(gw, needle: str) -> list:
    """Structured log lines (JSON objects) containing `needle`."""
    records = []
    for line in gw.log_text().splitlines():
        if needle in line and "{" in line:
            try:
                records.append(json.loads(line[line.index("{"):]))
            except ValueError:
                pass
    return records
