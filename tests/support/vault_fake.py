"""A minimal, faithful HTTP fake of the Vault endpoints encmigrate's provider uses.

KV v2 (read, write with check-and-set, destroy), Transit (encrypt, decrypt),
AppRole login, tokens with HCL-like policies (path globs ``*`` and ``+``,
capabilities), a sealed mode, and injected transient failures. Status codes
and error bodies follow Vault's published API: 403 ``permission denied``, 404
with an empty ``errors`` list, 400 ``check-and-set parameter did not match the
current version``, 503 ``Vault is sealed``. Started on 127.0.0.1 by tests::

    with VaultFake() as vault:
        token = vault.add_token(policies=[ADMIN])
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

Policy = dict[str, set[str]]  # path glob -> capabilities
ROOT: Policy = {"*": {"create", "read", "update", "delete", "list", "sudo"}}
_HCL_PATH = re.compile(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]\s*\}', re.S)


def parse_hcl_policy(text: str) -> Policy:
    """The path rules of a Vault policy file (the ``path "..." { capabilities = [...] }`` form)."""
    text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    policy: Policy = {}
    for glob, capabilities in _HCL_PATH.findall(text):
        policy[glob] = {c.strip().strip('"') for c in capabilities.split(",") if c.strip()}
    return policy


def load_policy(policy_file: Path, **names: str) -> Policy:
    """A policy file with its ``<placeholder>`` resource names filled in."""
    text = policy_file.read_text()
    for key, value in names.items():
        text = text.replace(f"<{key}>", value)
    return parse_hcl_policy(text)


def _matches(glob: str, path: str) -> bool:
    pattern = "".join(
        "[^/]+" if part == "+" else re.escape(part) for part in re.split(r"(\+)", glob.rstrip("*"))
    )
    return re.fullmatch(pattern + (".*" if glob.endswith("*") else ""), path) is not None


@dataclass
class _Secret:
    versions: dict[int, dict[str, Any] | None] = field(default_factory=dict)  # None: destroyed
    created: dict[int, str] = field(default_factory=dict)

    @property
    def current(self) -> int:
        return max(self.versions, default=0)


class VaultFake:
    """The fake server; ``url`` once started. Not thread-safe beyond its one lock (enough)."""

    def __init__(self) -> None:
        self.sealed = False
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, token
        self.namespaces: list[str | None] = []  # X-Vault-Namespace of each request
        self._lock = threading.Lock()
        self._tokens: dict[str, Policy] = {}
        self._approles: dict[tuple[str, str], list[Policy]] = {}
        self._secrets: dict[tuple[str, str], _Secret] = {}
        self._transit: dict[tuple[str, str], bytes] = {}
        self._failures: list[int] = []
        self._server: ThreadingHTTPServer | None = None

    # -- set-up ---------------------------------------------------------------

    def add_token(self, policies: list[Policy] | None = None) -> str:
        token = "hvs." + base64.urlsafe_b64encode(os.urandom(18)).decode()
        merged: Policy = {}
        for policy in policies or [ROOT]:
            for glob, capabilities in policy.items():
                merged.setdefault(glob, set()).update(capabilities)
        self._tokens[token] = merged
        return token

    def add_approle(self, role_id: str, secret_id: str, policies: list[Policy]) -> None:
        self._approles[(role_id, secret_id)] = policies

    def fail_next(self, status: int, count: int = 1) -> None:
        """The next ``count`` requests answer ``status`` (429, 500, 502, 503 standby...)."""
        self._failures.extend([status] * count)

    def versions(self, mount: str, path: str) -> dict[int, dict[str, Any] | None]:
        return dict(self._secrets.get((mount, path), _Secret()).versions)

    # -- server -----------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> VaultFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._serve(self, "GET")

            def do_POST(self) -> None:
                fake._serve(self, "POST")

            def do_PUT(self) -> None:
                fake._serve(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path, _, query = handler.path.partition("?")
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length) or b"{}") if length else {}
        token = handler.headers.get("X-Vault-Token")
        with self._lock:
            self.requests.append((method, path, token))
            self.namespaces.append(handler.headers.get("X-Vault-Namespace"))
            status, answer = self._route(method, path.removeprefix("/v1/"), query, body, token)
        data = b"" if answer is None else json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    # -- the API ----------------------------------------------------------------

    def _route(
        self, method: str, path: str, query: str, body: dict[str, Any], token: str | None
    ) -> tuple[int, dict[str, Any] | None]:
        if self._failures:
            status = self._failures.pop(0)
            return status, {"errors": [f"injected failure {status}"]}
        if self.sealed:
            return 503, {"errors": ["Vault is sealed"]}
        if path == "auth/approle/login" and method == "POST":
            return self._login(body)
        policy = self._tokens.get(token or "")
        if policy is None:
            return 403, {"errors": ["permission denied"]}
        parts = path.split("/")
        if len(parts) >= 3 and parts[1] == "data":
            mount, rest = parts[0], "/".join(parts[2:])
            if method == "GET":
                return self._guard(policy, "read", path) or self._read(mount, rest, query)
            exists = self._secrets.get((mount, rest), _Secret()).current > 0
            need = "update" if exists else "create"
            return self._guard(policy, need, path) or self._write(mount, rest, body)
        if len(parts) >= 3 and parts[1] == "destroy" and method == "POST":
            mount, rest = parts[0], "/".join(parts[2:])
            return self._guard(policy, "update", path) or self._destroy(mount, rest, body)
        if len(parts) == 3 and parts[1] in ("encrypt", "decrypt") and method == "POST":
            return self._guard(policy, "update", path) or self._transit_op(parts, body)
        return 404, {"errors": []}

    @staticmethod
    def _guard(
        policy: Policy, capability: str, path: str
    ) -> tuple[int, dict[str, Any] | None] | None:
        # Vault picks the most specific matching rule; longest glob is close enough here.
        rules = sorted((g for g in policy if _matches(g, path)), key=len, reverse=True)
        if rules and ("deny" not in policy[rules[0]]) and capability in policy[rules[0]]:
            return None
        return 403, {"errors": ["1 error occurred:\n\t* permission denied\n\n"]}

    def _login(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        policies = self._approles.get((body.get("role_id", ""), body.get("secret_id", "")))
        if policies is None:
            return 400, {"errors": ["invalid role or secret ID"]}
        token = self.add_token(policies)
        return 200, {"auth": {"client_token": token, "lease_duration": 3600, "renewable": True}}

    def _read(self, mount: str, path: str, query: str) -> tuple[int, dict[str, Any]]:
        secret = self._secrets.get((mount, path))
        if secret is None or not secret.versions:
            return 404, {"errors": []}
        match = re.search(r"version=(\d+)", query)
        number = int(match.group(1)) if match and int(match.group(1)) else secret.current
        if number not in secret.versions:
            return 404, {"errors": []}
        data = secret.versions[number]
        metadata = {
            "created_time": secret.created[number],
            "custom_metadata": None,
            "deletion_time": "",
            "destroyed": data is None,
            "version": number,
        }
        if data is None:
            return 404, {"data": {"data": None, "metadata": metadata}}
        return 200, {"data": {"data": data, "metadata": metadata}}

    def _write(self, mount: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        secret = self._secrets.setdefault((mount, path), _Secret())
        cas = (body.get("options") or {}).get("cas")
        if cas is not None and int(cas) != secret.current:
            return 400, {
                "errors": ["check-and-set parameter did not match the current version"],
            }
        number = secret.current + 1
        secret.versions[number] = dict(body.get("data") or {})
        secret.created[number] = dt.datetime.now(dt.UTC).isoformat()
        return 200, {
            "data": {
                "created_time": secret.created[number],
                "custom_metadata": None,
                "deletion_time": "",
                "destroyed": False,
                "version": number,
            }
        }

    def _destroy(self, mount: str, path: str, body: dict[str, Any]) -> tuple[int, None]:
        secret = self._secrets.get((mount, path), _Secret())
        for number in body.get("versions", []):
            if number in secret.versions:
                secret.versions[number] = None
        return 204, None

    def _transit_op(self, parts: list[str], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        mount, op, name = parts
        key = self._transit.get((mount, name))
        if op == "encrypt":
            if key is None:  # Vault creates the key on first encrypt (upsert)
                key = self._transit[(mount, name)] = AESGCM.generate_key(256)
            nonce = os.urandom(12)
            sealed = AESGCM(key).encrypt(nonce, base64.b64decode(body["plaintext"]), None)
            ciphertext = "vault:v1:" + base64.b64encode(nonce + sealed).decode()
            return 200, {"data": {"ciphertext": ciphertext, "key_version": 1}}
        if key is None:
            return 400, {"errors": ["encryption key not found"]}
        try:
            raw = base64.b64decode(str(body["ciphertext"]).removeprefix("vault:v1:"))
            plaintext = AESGCM(key).decrypt(raw[:12], raw[12:], None)
        except (InvalidTag, ValueError):
            return 400, {"errors": ["cipher: message authentication failed"]}
        return 200, {"data": {"plaintext": base64.b64encode(plaintext).decode()}}


def iter_policies(folder: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(folder.glob("*.hcl")):
        yield path.stem, path
