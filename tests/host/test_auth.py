"""Authentication and authorization over real HTTP (host/auth.py, docs/security.md): 401 and
403 per role on every route family in its API's error shape, the public paths, a key limited
to models, a revoked key, JWTs (HS256, RS256, expired, forged), `hfskills keys` against the
server's database, the admin API, the audit actor, CORS preflight, the openai SDK with a key,
and HTTPS (TLS 1.2 at least) with a certificate made here, through `hfskills serve` itself.

The tests that write and read the keys' table (the admin API, the CLI, a key limited to models)
run on SQLite and on a real PostgreSQL (`keyed`; tests/databases.py)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import openai
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hfskills.host import auth, tls
from hfskills.host.app import build_app
from hfskills.host.cli import main
from hfskills.host.config import load_settings
from hfskills.host.control.keys import KeyStore
from tests.databases import BACKENDS

from .conftest import entry, start

REPO = Path(__file__).resolve().parents[2]
SECRET = "a-test-secret-of-at-least-32-bytes-long"
ORIGIN = "https://app.example"
#: Most seconds a wait for the server's key snapshot may take.
WAIT_S = 20


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _authed(root: Path, url: str, task_checkpoint, rsa_key) -> dict[str, Any]:
    """A server with authentication on, its database at ``url``: API keys (one per role, one
    limited to ``emb``), HS256 and RS256 JWTs, CORS for ORIGIN."""
    public = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (root / "jwt.pub").write_bytes(public)
    embedder = task_checkpoint("bert", "text_embedding")
    config = root / "hfskills.toml"  # what `hfskills keys --config` reads: the same database
    config.write_text(f'database_url = "{url}"\n')
    settings = load_settings(
        models=[
            entry("emb", embedder, aliases=["emb-alias"]),
            entry("other", embedder),
            entry("gen", task_checkpoint("llama", "text_generation")),
        ],
        embedded_default=False,
        database_url=url,
        auth_enabled=True,
        auth_keys_refresh_s=0.2,
        auth_jwt_secret=SECRET,
        auth_jwt_public_key=str(root / "jwt.pub"),
        cors_origins=[ORIGIN],
    )
    server = start(settings)
    store = KeyStore(server.host.control.engine)
    made = {role: store.create(f"{role}-key", role) for role in ("admin", "user", "readonly")}
    limited = store.create("limited", "user", ["emb"])
    server.app.state.auth.reload()
    return {
        "server": server,
        "config": config,
        "store": store,
        "keys": {role: key for role, (_, key) in made.items()},
        "ids": {role: record.id for role, (record, _) in made.items()},
        "limited": limited[1],
    }


@pytest.fixture(scope="module")
def authed(tmp_path_factory, task_checkpoint, rsa_key) -> Iterator[dict[str, Any]]:
    """The server with authentication on, on a SQLite file."""
    root = tmp_path_factory.mktemp("auth")
    made = _authed(root, f"sqlite:///{root / 'control.db'}", task_checkpoint, rsa_key)
    yield made
    made["server"].stop()


@pytest.fixture(scope="module", params=BACKENDS)
def keyed(
    request, authed, fresh_database, tmp_path_factory, task_checkpoint, rsa_key
) -> Iterator[dict[str, Any]]:
    """`authed` for the tests that write and read the keys' table, on each backend: SQLite is
    `authed` itself, PostgreSQL the same server on a fresh database (skipped, with the reason,
    where PostgreSQL is not installed: tests/databases.py)."""
    if request.param == "sqlite":
        yield authed
        return
    url = fresh_database(request.param)
    made = _authed(tmp_path_factory.mktemp("auth-pg"), url, task_checkpoint, rsa_key)
    yield made
    made["server"].stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


#: One request per route family: (family, method, path, body, least role).
CASES = [
    ("openai", "POST", "/v1/embeddings", {"model": "emb", "input": "hi"}, "user"),
    ("openai", "GET", "/v1/models", None, "readonly"),
    ("hf", "POST", "/models/emb", {"inputs": "hi"}, "user"),
    ("tgi", "POST", "/generate", {"inputs": "hi", "parameters": {"max_new_tokens": 2}}, "user"),
    ("tei", "POST", "/embed", {"inputs": "hi", "model": "emb"}, "user"),
    ("admin", "GET", "/admin/models", None, "readonly"),
    ("admin", "POST", "/admin/models/emb/load", None, "admin"),
    ("api", "GET", "/api/models", None, "readonly"),
    ("api", "PATCH", "/api/models/emb", {"tags": ["checked"]}, "admin"),
    ("api", "GET", "/api/keys", None, "admin"),
    ("api", "GET", "/api/audit", None, "admin"),
    ("ops", "GET", "/openapi.json", None, "readonly"),
]
RANK = {"readonly": 0, "user": 1, "admin": 2}


def assert_shape(family: str, response: httpx.Response, status: int, code: str) -> None:
    """The error body of the family: OpenAI's under /v1 and /api, TGI's elsewhere."""
    assert response.status_code == status, response.text
    body = response.json()
    if family in ("openai", "api"):
        assert body["error"]["code"] == code, body
        kind = "authentication_error" if status == 401 else "permission_error"
        assert body["error"]["type"] == kind
    else:
        assert body["error_type"] == ("unauthorized" if status == 401 else "forbidden"), body
        assert isinstance(body["error"], str) and body["error"]


def test_every_route_is_classified(authed) -> None:
    """`RULES` names every route the app serves, so none falls to the admin default unseen."""
    assert auth.unclassified(authed["server"].app.routes) == []


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[1]} {c[2]}")
def test_401_and_403_per_role_on_every_family(authed, case) -> None:
    family, method, path, body, least = case
    with authed["server"].client() as client:
        anonymous = client.request(method, path, json=body)
        assert_shape(family, anonymous, 401, "missing_credentials")
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        wrong = client.request(
            method, path, json=body, headers=bearer("hfsk_0123456789ab_" + "x" * 43)
        )
        assert_shape(family, wrong, 401, "invalid_api_key")
        for role, key in authed["keys"].items():
            answer = client.request(method, path, json=body, headers=bearer(key))
            if RANK[role] >= RANK[least]:
                assert answer.status_code < 400, (role, answer.text)
            else:
                assert_shape(family, answer, 403, "insufficient_role")
                assert repr(least) in answer.text


def test_public_paths_and_x_api_key(authed) -> None:
    with authed["server"].client() as client:
        for path in ("/health", "/ready", "/metrics"):
            assert client.get(path).status_code == 200
        key = authed["keys"]["readonly"]
        assert client.get("/v1/models", headers={"X-API-Key": key}).status_code == 200
        assert (
            client.get("/v1/models", headers={"Authorization": f"Basic {key}"}).status_code == 401
        )


def test_a_key_limited_to_models(keyed) -> None:
    headers = bearer(keyed["limited"])
    with keyed["server"].client(headers=headers) as client:
        assert client.post("/v1/embeddings", json={"model": "emb", "input": "a"}).status_code == 200
        alias = client.post("/v1/embeddings", json={"model": "emb-alias", "input": "a"})
        assert alias.status_code == 200  # an alias of an allowed model is that model
        other = client.post("/v1/embeddings", json={"model": "other", "input": "a"})
        assert other.status_code == 403 and "'other'" in other.json()["error"]["message"]
        assert other.json()["error"]["code"] == "model_not_allowed"
        tgi = client.post("/generate", json={"inputs": "a", "model": "gen"})
        assert tgi.status_code == 403 and tgi.json()["error_type"] == "forbidden"
        assert "'gen'" in tgi.json()["error"]
        assert client.post("/models/other", json={"inputs": "a"}).status_code == 403
        assert client.get("/models/gen/info").status_code == 403
        assert client.post("/models/emb", json={"inputs": "a"}).status_code == 200


def test_admin_api_create_use_revoke(keyed) -> None:
    """POST /api/keys shows the key once; it works at once; revoked, it is refused at once;
    listings never hold a key or a hash; the audit actor is the admin key's subject."""
    admin = bearer(keyed["keys"]["admin"])
    with keyed["server"].client() as client:
        made = client.post("/api/keys", json={"name": "temp", "role": "readonly"}, headers=admin)
        assert made.status_code == 201, made.text
        key, ident = made.json()["key"], made.json()["id"]
        assert key.startswith(made.json()["prefix"] + "_")
        assert client.get("/v1/models", headers=bearer(key)).status_code == 200
        listed = client.get("/api/keys", headers=admin).json()["data"]
        assert next(k for k in listed if k["id"] == ident)["revoked_at"] is None
        assert key not in json.dumps(listed) and "hash" not in listed[0]
        # its own settings (JSON columns) are written and read back on this backend
        own = {"models": ["emb", "other"], "limits": {"requests_per_minute": 1000}}
        changed = client.patch(f"/api/keys/{ident}", json=own, headers=admin)
        assert changed.status_code == 200, changed.text
        listed = client.get("/api/keys", headers=admin).json()["data"]
        mine = next(k for k in listed if k["id"] == ident)
        assert mine["models"] == own["models"] and mine["limits"] == own["limits"]
        revoked = client.delete(f"/api/keys/{ident}", headers=admin)
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        refused = client.get("/v1/models", headers=bearer(key))
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert client.delete("/api/keys/000000000000", headers=admin).status_code == 404
        bad = client.post("/api/keys", json={"name": "x", "role": "root"}, headers=admin)
        assert bad.status_code == 422
        patched = client.patch("/api/models/emb", json={"tags": ["audited"]}, headers=admin)
        assert patched.status_code == 200
        audit = client.get("/api/audit", params={"limit": 1}, headers=admin).json()["data"]
        assert audit[0]["actor"] == f"key:{keyed['ids']['admin']}"
    # the table holds the hash, never the key; its use is recorded by the writer thread
    deadline = time.monotonic() + WAIT_S
    while not [r for r in keyed["store"].records() if r.id == ident and r.last_used_at]:
        assert time.monotonic() < deadline, "last_used_at was not written"
        time.sleep(0.2)


def token(claims: dict[str, Any], key: Any = SECRET, algorithm: str = "HS256", **extra: Any) -> str:
    exp = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    return jwt.encode({"exp": exp, **claims, **extra}, key, algorithm=algorithm)


def test_jwt_hs256_and_rs256(authed, rsa_key) -> None:
    embed = {"model": "emb", "input": "hi"}
    with authed["server"].client() as client:

        def status(tok: str, path: str = "/v1/embeddings") -> httpx.Response:
            return client.post(path, json=embed, headers=bearer(tok))

        assert status(token({"sub": "alice", "role": "user"})).status_code == 200
        assert status(token({"sub": "bob", "role": "user"}, rsa_key, "RS256")).status_code == 200
        readonly = status(token({"sub": "carol", "role": "readonly"}))
        assert (
            readonly.status_code == 403 and readonly.json()["error"]["code"] == "insufficient_role"
        )
        limited = token({"sub": "dave", "role": "user", "models": ["other"]})
        assert status(limited).status_code == 403
        expired = token({"sub": "eve", "role": "user"}, exp=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        assert status(expired).json()["error"]["code"] == "token_expired"
        forged = token({"sub": "mallory", "role": "admin"}, "another-secret-of-32-bytes-or-more!")
        assert status(forged).status_code == 401
        no_role = token({"sub": "frank"})
        assert status(no_role).status_code == 401
        unsigned = jwt.encode({"sub": "x", "role": "admin"}, None, algorithm="none")
        assert status(unsigned).status_code == 401
        # the admin's actor is the token's subject
        admin = token({"sub": "root", "role": "admin"}, rsa_key, "RS256")
        patched = client.patch("/api/models/emb", json={"tags": ["jwt"]}, headers=bearer(admin))
        assert patched.status_code == 200
        audit = client.get("/api/audit", params={"limit": 1}, headers=bearer(admin)).json()
        assert audit["data"][0]["actor"] == "jwt:root"


def test_the_cli_creates_lists_and_revokes(keyed, capsys) -> None:
    config = str(keyed["config"])
    assert main(["keys", "create", "--config", config, "--name", "cli", "--role", "user"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("hfsk_")
    with keyed["server"].client() as client:
        _until(lambda: client.get("/v1/models", headers=bearer(key)).status_code == 200)
        assert main(["keys", "list", "--config", config]) == 0
        listing = capsys.readouterr().out
        ident = key.split("_")[1]
        assert ident in listing and "cli" in listing and key not in listing
        assert main(["keys", "revoke", ident, "--config", config]) == 0
        _until(lambda: client.get("/v1/models", headers=bearer(key)).status_code == 401)
    assert main(["keys", "revoke", "ffffffffffff", "--config", config]) == 1
    with pytest.raises(SystemExit):
        main(["keys", "create", "--config", config, "--name", "x", "--role", "root"])


def test_cors_preflight_and_headers(authed) -> None:
    with authed["server"].client() as client:
        preflight = client.options(
            "/v1/chat/completions",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        refused = client.options(
            "/v1/models",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert refused.status_code == 400
        # an error answer carries the CORS headers too: the page can read why
        denied = client.get("/v1/models", headers={"Origin": ORIGIN})
        assert denied.status_code == 401
        assert denied.headers["access-control-allow-origin"] == ORIGIN


def test_the_openai_sdk_with_an_api_key(authed) -> None:
    base = authed["server"].base + "/v1"
    sdk = openai.OpenAI(base_url=base, api_key=authed["keys"]["user"], max_retries=0)
    assert len(sdk.embeddings.create(model="emb", input="hello").data[0].embedding) > 0
    assert {m.id for m in sdk.models.list()} >= {"emb", "other", "gen"}
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base, api_key="nope", max_retries=0).models.list()
    readonly = openai.OpenAI(base_url=base, api_key=authed["keys"]["readonly"], max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        readonly.embeddings.create(model="emb", input="hello")
    limited = openai.OpenAI(base_url=base, api_key=authed["limited"], max_retries=0)
    with pytest.raises(openai.PermissionDeniedError, match="other"):
        limited.embeddings.create(model="other", input="hello")


def test_settings_and_loopback() -> None:
    assert not load_settings().auth_on
    assert load_settings(auth_jwt_secret=SECRET).auth_on  # a JWT key turns it on
    assert not load_settings(auth_jwt_secret=SECRET, auth_enabled=False).auth_on
    with pytest.raises(ValueError, match="ssl_keyfile"):
        load_settings(ssl_certfile="cert.pem")
    assert auth.loopback("127.0.0.1") and auth.loopback("::1") and auth.loopback("localhost")
    assert not auth.loopback("0.0.0.0") and not auth.loopback("10.0.0.5")


def test_auth_off_answers_as_before(tmp_path, task_checkpoint) -> None:
    settings = load_settings(
        models=[entry("emb", task_checkpoint("bert", "text_embedding"))],
        embedded_default=False,
        database_url=f"sqlite:///{tmp_path / 'control.db'}",
    )
    server = start(settings)
    try:
        with server.client() as client:
            assert client.get("/admin/models").status_code == 200
            answer = client.post(
                "/v1/embeddings", json={"model": "emb", "input": "a"}, headers={"Origin": ORIGIN}
            )
            assert answer.status_code == 200
            assert "access-control-allow-origin" not in answer.headers  # no cors_origins
    finally:
        server.stop()


# -- TLS ---------------------------------------------------------------------------------------


def certificates(root: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 it signs: (ca.pem, cert.pem, key.pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hfskills test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = root / "ca.pem", root / "cert.pem", root / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_https_with_tls_1_2_at_least(tmp_path, task_checkpoint) -> None:
    """`tls.server_config` (what `hfskills serve` runs): HTTPS answers with a certificate the
    client verifies; TLS 1.1 is refused at the handshake; 1.2 and 1.3 are accepted."""
    ca, cert, key = certificates(tmp_path)
    settings = load_settings(
        models=[entry("emb", task_checkpoint("bert", "text_embedding"))],
        embedded_default=False,
        database_url=f"sqlite:///{tmp_path / 'control.db'}",
        port=0,
        ssl_certfile=cert,
        ssl_keyfile=key,
    )
    config = tls.server_config(build_app(settings), settings, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _until(lambda: server.started)
        port = server.servers[0].sockets[0].getsockname()[1]
        assert config.ssl is not None and config.ssl.minimum_version == ssl.TLSVersion.TLSv1_2
        trust = ssl.create_default_context(cafile=str(ca))
        answer = httpx.get(f"https://127.0.0.1:{port}/health", verify=trust)
        assert answer.status_code == 200
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            assert _handshake(port, ca, version) == version.name.replace("_", ".")  # TLSv1.2
        with pytest.raises(ssl.SSLError):
            _handshake(port, ca, ssl.TLSVersion.TLSv1_1)
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the CA
            httpx.get(f"https://127.0.0.1:{port}/health")
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_hfskills_serve_https_and_the_exposure_warning(tmp_path, task_checkpoint) -> None:
    """`hfskills serve --host 0.0.0.0 --ssl-certfile --ssl-keyfile`: HTTPS, and a warning that
    anyone who reaches the port may do anything (authentication is off)."""
    ca, cert, key = certificates(tmp_path)
    config = tmp_path / "hfskills.toml"
    config.write_text(
        f'embedded_default = false\ndatabase_url = "sqlite:///{tmp_path / "control.db"}"\n'
        f'[[models]]\nname = "emb"\ncheckpoint = "{task_checkpoint("bert", "text_embedding")}"\n'
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "hfskills.host.cli", "serve", "--config", str(config)]
    command += ["--host", "0.0.0.0", "--port", str(port)]
    command += ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=REPO, env=dict(os.environ), stderr=subprocess.PIPE)
    trust = ssl.create_default_context(cafile=str(ca))
    try:

        def up() -> bool:
            assert process.poll() is None, "hfskills serve exited"
            try:
                return (
                    httpx.get(f"https://127.0.0.1:{port}/health", verify=trust).status_code == 200
                )
            except httpx.TransportError:
                return False

        _until(up, 90)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    lines = stderr.decode().splitlines()
    warnings = [json.loads(line).get("message", "") for line in lines if line.startswith("{")]
    assert any("authentication is off" in w and "0.0.0.0" in w for w in warnings), warnings


# -- helpers -----------------------------------------------------------------------------------


def _handshake(port: int, ca: Path, version: ssl.TLSVersion) -> str:
    """The protocol a client limited to ``version`` negotiates with the server."""
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = context.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer it at all
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as wrapped:
            return wrapped.version() or ""


def _until(condition: Callable[[], bool], seconds: float = WAIT_S) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
