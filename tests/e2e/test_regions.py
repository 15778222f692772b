"""Regional origins, residency pinning and ordered failover (issue 3), on both hosts. The
client's region comes from the configured `x-gateway-region` header here (wrangler dev's
`request.cf` is a placeholder, used by the last test only; Spin has no geo data). `x-gateway-origin` names the origin's
region and its index in the endpoint's `origins` (never its host: issue 12, L2)."""
import copy
import time

import requests

CHAT = {"messages": [{"role": "user", "content": "where am i"}]}


def chat(gw, model, region=None):
    headers = {"x-gateway-region": region} if region else {}
    return requests.post(f"{gw.base_url}/v1/chat/completions", json={**CHAT, "model": model},
                         headers=headers, timeout=20)


def test_client_region_picks_the_regional_origin(gw, eu_origin, us_origin):
    eu = chat(gw, "regional", "eu")
    us = chat(gw, "regional", "us")
    assert eu.status_code == us.status_code == 200
    assert eu.headers["x-gateway-origin"] == "eu#0"
    assert us.headers["x-gateway-origin"] == "us#1"
    assert eu.json()["id"].startswith("chatcmpl-eu-") and us.json()["id"].startswith("chatcmpl-us-")
    # Without a region the config's default region (us) is used.
    assert chat(gw, "regional").headers["x-gateway-origin"] == "us#1"


def test_failover_in_order_skips_a_refusing_origin(gw, us_origin):
    # The EU client's own region comes first; its only origin refuses connections.
    r = chat(gw, "failover", "eu")
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-attempts"] == "2"
    assert r.headers["x-gateway-origin"] == "us#1"
    assert us_origin.stats()["count"] == 1


def test_failover_on_5xx_and_429_but_not_4xx(gw, eu_origin, us_origin):
    eu_origin.fault("status_503", times=1)
    r = chat(gw, "regional", "eu")
    assert r.status_code == 200 and r.headers["x-gateway-origin"] == "us#1"
    eu_origin.fault("status_429", times=1, retry_after=1)
    r = chat(gw, "regional", "eu")
    assert r.status_code == 200 and r.headers["x-gateway-attempts"] == "2"
    # A 4xx is the request's fault: no other origin is tried.
    bad = requests.post(f"{gw.base_url}/v1/chat/completions", json={"model": "regional", "messages": "nope"},
                        headers={"x-gateway-region": "eu"}, timeout=20)
    assert bad.status_code == 400, bad.text
    assert bad.headers["x-gateway-attempts"] == "1"
    assert us_origin.stats()["by_path"].get("/v1/chat/completions", 0) == 2


def test_residency_pin_never_leaves_the_region(gw, eu_origin, us_origin):
    r = chat(gw, "eu-only", "us")  # a US client still stays in the EU
    assert r.status_code == 200
    assert r.headers["x-gateway-origin"] == "eu#0"
    eu_origin.fault("status_503", times=5)
    r = chat(gw, "eu-only", "us")
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "region_unavailable" and '"eu"' in err["message"]
    assert us_origin.stats()["count"] == 0


def test_geo_data_places_a_client_without_the_header(gw):
    """Without the header, a client's continent (workerd: `request.cf`, read only when routing
    needs it; wrangler dev gives a placeholder, the real one elsewhere) picks the region; Spin
    has no geo data, so the config's default applies. A config where every continent maps to
    `us` and the default is `eu` tells the two apart."""
    config = copy.deepcopy(gw.config)
    config["regions"] = {"eu": {}, "us": {"continents": ["AF", "AN", "AS", "EU", "NA", "OC", "SA"]}}
    config["default_region"] = "eu"
    probe = copy.deepcopy(next(e for e in config["endpoints"] if e["name"] == "regional"))
    probe["name"] = "regional-geo"  # answers only once this config is the active one
    config["endpoints"].append(probe)
    gw.kv_put_json("config:active", config)
    try:
        deadline = time.time() + 15
        while (r := chat(gw, "regional-geo")).status_code == 404 and time.time() < deadline:
            time.sleep(0.3)
        assert r.status_code == 200, r.text
        assert r.headers["x-gateway-origin"] == ("us#1" if gw.name == "workerd" else "eu#0")
        # The header still wins over geo data.
        assert chat(gw, "regional-geo", "eu").headers["x-gateway-origin"] == "eu#0"
    finally:
        gw.kv_put_json("config:active", gw.config)
    deadline = time.time() + 15
    while chat(gw, "regional-geo").status_code != 404:
        assert time.time() < deadline, "config restore was not picked up"
        time.sleep(0.3)
