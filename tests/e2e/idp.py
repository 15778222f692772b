"""A test identity provider for test_identity.py (and scripts/bench's JWT rows): RSA-2048 and
P-256 keys generated per run with `cryptography`, tokens signed with PyJWT, and the JWKS served
by Python's http.server on loopback (`Cache-Control: max-age=300` unless told otherwise),
counting every fetch so the suite can assert how often the gateway refetched it."""
import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

AUDIENCE = "edge-gateway-e2e"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    def __init__(self, kind: str, kid: str):
        self.kind, self.kid = kind, kid
        if kind == "RSA":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.alg = "RS256"
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.alg = "ES256"

    def jwk(self) -> dict:
        algorithm = jwt.algorithms.RSAAlgorithm if self.kind == "RSA" else jwt.algorithms.ECAlgorithm
        jwk = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return jwk


class TestIdp:
    def __init__(self, max_age: int = 300):
        self.rsa = SigningKey("RSA", "rsa-" + secrets.token_hex(4))
        self.ec = SigningKey("EC", "ec-" + secrets.token_hex(4))
        self.published = [self.rsa, self.ec]
        self._lock = threading.Lock()
        self._fetches = 0
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/jwks.json":
                    self.send_error(404)
                    return
                with idp._lock:
                    idp._fetches += 1
                    body = json.dumps({"keys": [k.jwk() for k in idp.published]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("cache-control", f"public, max-age={max_age}")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.issuer = self.url + "/idp"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fetches(self) -> int:
        with self._lock:
            return self._fetches

    def publish(self, key: SigningKey) -> None:
        """Rotates a key into the JWKS (as an identity provider does before using it)."""
        with self._lock:
            self.published.append(key)

    def claims(self, **overrides) -> dict:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": "alice@example.com", "aud": AUDIENCE, "iat": now, "nbf": now,
                  "exp": now + 600, "org_id": "acme-e2e", "groups": ["gw:id-chat", "gw:id-gated", "staff"]}
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, key: SigningKey = None, kid: str = "default", **overrides) -> str:
        key = key or self.rsa
        headers = {"kid": key.kid if kid == "default" else kid} if kid is not None else {}
        return jwt.encode(self.claims(**overrides), key.private, algorithm=key.alg, headers=headers)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def none_token(claims: dict) -> str:
    """An unsigned token (`alg: none`), as RFC 7519 §6 allows and the gateway must refuse."""
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64url(json.dumps(claims).encode())}."


def tampered(token: str, **changes) -> str:
    """The same signature over different claims."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
