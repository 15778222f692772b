"""Helpers for the issue-4 suite (test_keys.py): the admin API, gatewayctl, and the config
additions those tests need (merge them into conftest.gateway_config with `add_keys_config`)."""
import json
import os
import subprocess
import time

import requests

from harness import BIN

GATEWAYCTL = BIN / "gatewayctl"

# How long a revoked key may still pass in an isolate that saw it (src/gateway/auth.rs
# MEMO_TTL_MS). Local KV has no propagation delay, so this is the whole bound here.
MEMO_BOUND_S = 5.0

# USD per 1M tokens. `priced-model` is deliberately expensive so budgets trip in a few calls.
PRICES = {
    "openai/gpt-4o-mini": {"input_per_1m": 0.15, "output_per_1m": 0.6},
    "openai/text-embedding-3-small": {"input_per_1m": 0.02},
    "openai/gpt-3.5-turbo-instruct": {"input_per_1m": 1.5, "output_per_1m": 2.0},
    "openai/priced-model": {"input_per_1m": 1000, "output_per_1m": 2000},
}


def keys_endpoints(origin_url: str) -> list:
    """Endpoints that need a key (never `public`), so these tests do not depend on how the
    skeleton's endpoints are exposed."""
    def openai(name, endpoint_type, model):
        return {"name": name, "endpoint_type": endpoint_type,
                "model": {"provider": "openai", "name": model,
                          "config": {"openai_api_key": "$OPENAI_API_KEY", "openai_api_base": origin_url + "/v1"}}}

    return [
        openai("keyed-chat", "llm/v1/chat", "gpt-4o-mini"),
        openai("keyed-embeddings", "llm/v1/embeddings", "text-embedding-3-small"),
        openai("keyed-completions", "llm/v1/completions", "gpt-3.5-turbo-instruct"),
        {**openai("keyed-limited", "llm/v1/chat", "gpt-4o-mini"), "limit": {"calls": 3, "renewal_period": "minute"}},
        openai("keyed-priced", "llm/v1/chat", "priced-model"),
    ]


def add_keys_config(config: dict, origin_url: str) -> dict:
    """The e2e config plus what test_keys.py needs: the keyed endpoints and a price table."""
    config = dict(config)
    config["endpoints"] = list(config.get("endpoints", [])) + keys_endpoints(origin_url)
    config["prices"] = {**config.get("prices", {}), **PRICES}
    return config


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
        path = "/admin/keys" + (f"?tenant={tenant}" if tenant else "")
        return self.request("GET", path, expect=200).json()["keys"]

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
