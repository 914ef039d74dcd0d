"""A bearer-token service for a registry started with token_auth() (tests/support/docker.py), as registries use
(Docker Hub's auth.docker.io, distribution's `auth: token`).

GET /token?service=S&scope=repository:NAME:ACTIONS with basic auth mlship:right-password answers an ES256 JWT that
the registry checks against the certificate in its rootcertbundle (the x5c header carries it). POST /token with an
OAuth2 form grant_type=refresh_token (the token spec's oauth.md: how identity tokens are used) answers
{"access_token": JWT} when the refresh token is one of `refresh_tokens`; with `oauth=False` POST answers 404, as
token services without OAuth2 do, and GET then takes basic auth "<token>:REFRESH_TOKEN" too.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any


class TokenService:
    def __init__(self, folder: Path, refresh_tokens: tuple[str, ...] = ()) -> None:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlship-test-token")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1)).sign(self.key, hashes.SHA256()))
        self.bundle = folder / "token.pem"
        self.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.issued: list[str] = []
        self.refresh_tokens = refresh_tokens
        self.oauth = True
        self.requests: list[str] = []  # "GET" or "POST grant_type", in order

    def granted(self, repository: str) -> list[set[str]]:
        """The actions of each token issued for REPOSITORY (the registry orders them either way: pull,push)."""
        prefix = f"repository:{repository}:"
        return [set(scope.removeprefix(prefix).split(",")) for scope in self.issued if scope.startswith(prefix)]

    def jwt(self, service: str, scope: str) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        def part(data: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        kind, name, actions = scope.split(":", 1)[0], scope.split(":", 1)[1].rsplit(":", 1)[0], scope.rsplit(":", 1)[1]
        now = int(time.time())
        claims = {"iss": "mlship-test-issuer", "sub": "mlship", "aud": service, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": uuid.uuid4().hex,
                  "access": [{"type": kind, "name": name, "actions": actions.split(",")}]}
        signing = f"{part({'typ': 'JWT', 'alg': 'ES256', 'x5c': [self.x5c]})}.{part(claims)}"
        r, s = decode_dss_signature(self.key.sign(signing.encode(), ec.ECDSA(hashes.SHA256())))
        signature = base64.urlsafe_b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).rstrip(b"=").decode()
        self.issued.append(scope)
        return f"{signing}.{signature}"

    def serve(self) -> tuple[Any, str]:
        import http.server
        import threading
        import urllib.parse

        service = self

        def basic(user: str, password: str) -> str:
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                service.requests.append("GET")
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                accepted = {basic("mlship", "right-password")}
                if not service.oauth:
                    accepted |= {basic("<token>", token) for token in service.refresh_tokens}
                if self.headers.get("Authorization") not in accepted:
                    self.answer(401, {})
                    return
                self.answer(200, {"token": service.jwt(query["service"][0], query["scope"][0])})

            def do_POST(self) -> None:  # noqa: N802
                form = urllib.parse.parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
                grant = form.get("grant_type", [""])[0]
                service.requests.append(f"POST {grant}")
                if not service.oauth:
                    self.answer(404, {})
                elif grant != "refresh_token" or form.get("refresh_token", [""])[0] not in service.refresh_tokens \
                        or not form.get("client_id"):
                    self.answer(401, {"error": "invalid_grant"})
                else:
                    self.answer(200, {"access_token": service.jwt(form["service"][0], form["scope"][0]),
                                      "expires_in": 300})

            def answer(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}/token"
