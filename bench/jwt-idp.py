"""The identity provider of scripts/bench's JWT rows: the e2e suite's TestIdp (an RSA-2048 and a
P-256 key generated per run, tokens signed with PyJWT, the JWKS served on loopback), its JWKS
cacheable for a day so that the gateways read it once in a whole run.

usage: python3 bench/jwt-idp.py <dir>
Writes into <dir>: `issuer`, `jwks_url`, `audience`, and one token per algorithm (`RS256`,
`ES256`, valid for 2 hours, each the same caller), then serves the JWKS until it is stopped.
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from idp import AUDIENCE, TestIdp  # noqa: E402


def main() -> None:
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    idp = TestIdp(max_age=86_400)
    expires = int(time.time()) + 7_200
    files = {
        "issuer": idp.issuer,
        "jwks_url": idp.url + "/jwks.json",
        "audience": AUDIENCE,
        "RS256": idp.token(idp.rsa, sub="bench-user", exp=expires),
        "ES256": idp.token(idp.ec, sub="bench-user", exp=expires),
    }
    for name, text in files.items():
        with open(os.path.join(out, name + ".tmp"), "w") as f:
            f.write(text)
        os.replace(os.path.join(out, name + ".tmp"), os.path.join(out, name))
    print(f"serving {files['jwks_url']}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
