"""Authentication and authorization: who a request is (an API key or a JWT), what its role may
do (one table, `RULES`), and which models it may use; and CORS. docs/security.md.

Policy:

- Off unless configured (`Settings.auth_on`: ``auth_enabled``, or a JWT key set while
  ``auth_enabled`` is not false). Off, every route answers as it always did, and
  ``hfskills serve`` warns at start when it listens beyond loopback (`loopback`).
- On, every request but those to ``auth_public_paths`` (default ``/health``, ``/ready``,
  ``/metrics``) needs credentials: ``X-API-Key: hfsk_...`` or ``Authorization: Bearer`` with an
  API key or a JWT. None, or one that does not verify: 401 with ``WWW-Authenticate: Bearer``. A
  role below what the route needs: 403. Both in the route's API family's error shape
  (errors.py), before the body is read.
- Roles are ordered, each allowed what the ones below it are: ``readonly`` (lists, reads of the
  control plane, metrics, the OpenAPI document) < ``user`` (inference, feedback, model
  selection) < ``admin`` (load, unload, switch; writes to the registry, routes and budgets;
  ``/api/keys``; the audit log). `RULES` names every route the host serves (a test checks
  it); a path it does not name needs admin.
- A key or token limited to models (a key's ``models``, a JWT's ``models`` claim) runs only
  those, each named as the client names it (a model, one of its aliases, a route, ``auto``):
  `check_model` is called where the name is known (``InferenceService.run`` and
  ``open_stream``, TGI's ``/info``); any other answers 403 naming the model. ``/v1/models``
  lists only those (`may_use`).
- A key's own limits and safety switches (host/control/keys.py) ride on its principal:
  host/limits.py counts the key by its limits, host/safety/ runs the hooks it switches
  (`safety_switches`).
- The principal (subject, role, key id, models, limits, switches) is kept in the request's scope
  (``request.state.principal``) and in the `PRINCIPAL` context variable for the code below
  the routes (`current`). Its subject, ``key:<id>`` or ``jwt:<sub>``, is the audit actor.
- API keys are checked against an in-memory snapshot of the active keys (host/control/keys.py:
  hashed, reloaded by the control plane's writer thread every ``auth_keys_refresh_s``), never
  by a query on the request path.
- JWTs: HS256 with ``auth_jwt_secret`` and/or RS256 with ``auth_jwt_public_key``; the token's
  ``alg`` picks the key, so an HS256 token is never checked against the public key. ``sub``,
  ``exp`` and ``role`` are required, ``models`` optional, ``iss`` and ``aud`` checked when
  configured. pyjwt is imported only when a JWT key is set (the ``auth`` extra).
- CORS (Starlette's middleware) only when ``cors_origins`` names origins; it sits outside
  authentication, so a browser's preflight needs no credentials.
"""

from __future__ import annotations

import contextvars
import hmac
import ipaddress
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from . import errors
from .control import db
from .control.keys import PREFIX, ROLES, KeyRecord, KeyStore, digest, key_id

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from .config import Settings
    from .control.writer import Writer

log = logging.getLogger("hfskills.host")

READONLY, USER, ADMIN = ROLES
RANK = {role: rank for rank, role in enumerate(ROLES)}

#: Who each route is for: (methods, path, least role), first match wins; HEAD counts as GET.
#: Paths are regular expressions over the whole path. Not named here: admin.
RULES: tuple[tuple[str, str, str], ...] = (
    # OpenAI
    ("GET", r"/v1/models", READONLY),
    ("GET", r"/v1/hardware", READONLY),
    ("POST", r"/v1/(embeddings|completions|chat/completions|rerank)", USER),
    ("POST", r"/v1/audio/(transcriptions|speech)", USER),
    # the design's routes
    ("POST", r"/v1/(infer/.+|generate|embed|classify|detect)", USER),
    # vLLM's and TEI's tokenizer routes, TEI's rerank and predict, TGI's and TEI's root route
    ("POST", r"/(tokenize|detokenize|decode|rerank|predict)", USER),
    # vLLM's score and its Cohere v2 rerank path
    ("POST", r"/(v1/)?score|/v2/rerank", USER),
    ("POST", r"/", USER),
    # Hugging Face: the Inference API (and its per-model chat route), TGI, TEI
    ("POST", r"/models/.+", USER),
    ("GET", r"/models/.+/info", USER),  # loads the model
    ("POST", r"/(generate|generate_stream|embed)", USER),
    ("GET", r"/info", USER),  # loads the default model
    # MCP (host/mcp_server.py): its tools run models; GET and DELETE answer a user 405
    ("GET,POST,DELETE", r"/mcp", USER),
    # operations
    ("GET", r"/(health|ready|metrics)", READONLY),  # when not public
    ("GET", r"/openapi\.json", READONLY),
    ("GET", r"/benchmark/summary", READONLY),
    ("GET", r"/admin/models", READONLY),
    ("POST", r"/admin/models/.+/(load|unload)", ADMIN),
    ("POST", r"/model/switch/.+", ADMIN),
    # the control plane
    ("POST", r"/api/models/select", USER),
    ("POST", r"/api/feedback", USER),
    ("GET", r"/api/(models|models/.+|routes|routes/.+|budgets|events|feedback)", READONLY),
    ("GET", r"/api/audit", ADMIN),
    ("GET,POST,PATCH,DELETE", r"/api/keys(/.+)?", ADMIN),
    ("POST,PUT,PATCH,DELETE", r"/api/.+", ADMIN),
)
_RULES = [(frozenset(methods.split(",")), re.compile(path), role) for methods, path, role in RULES]

#: Seconds between two ``last_used_at`` writes of one key.
TOUCH_EVERY_S = 60.0
#: The writer's sink of key uses.
USED = "api_key_used"

#: The authenticated principal of the request being served (None: auth is off, or a public
#: path).
PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "hfskills_principal", default=None
)


@dataclass(frozen=True)
class Principal:
    #: ``key:<id>`` or ``jwt:<sub>``: the audit actor.
    subject: str
    role: str
    key_id: str | None = None
    #: Names it may run; None: every model.
    models: frozenset[str] | None = None
    #: A key's own limits (host/limits.py); None: the server's per-key settings.
    limits: Mapping[str, int] | None = None
    #: A key's safety switches, hook name -> on (host/safety/); None: the defaults.
    safety: Mapping[str, bool] | None = None

    def may(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


class Denied(Exception):
    """A request refused: 401 (who it is is unknown) or 403 (it may not)."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def current() -> Principal | None:
    return PRINCIPAL.get()


def principal_of(request: Request) -> Principal | None:
    return request.scope.get("state", {}).get("principal")


def rule(method: str, path: str) -> str | None:
    """The least role `RULES` names for ``method`` on ``path``, None when no rule names it."""
    method = "GET" if method == "HEAD" else method
    for methods, pattern, role in _RULES:
        if method in methods and pattern.fullmatch(path):
            return role
    return None


def required_role(method: str, path: str) -> str:
    return rule(method, path) or ADMIN


def may_use(asked: str, model: Any = None) -> bool:
    """Whether the request's principal may run ``asked``; ``model``: the served model the name
    resolves to (its name and aliases count as the same model; a LoRA adapter on it is a
    model of its own)."""
    principal = PRINCIPAL.get()
    if principal is None or principal.models is None:
        return True
    names = {asked}
    if model is not None and asked not in getattr(model, "adapters", ()):
        names.update((model.name, *model.aliases))
    return bool(names & principal.models)


def check_model(asked: str, model: Any = None) -> None:
    """403 unless the request's principal may run ``asked`` (`may_use`)."""
    if may_use(asked, model):
        return
    principal = PRINCIPAL.get()
    allowed = ", ".join(sorted(principal.models or ())) if principal is not None else ""
    raise errors.APIError(
        403,
        f"model {asked!r} is not one this credential may use (it may use: {allowed})",
        code="model_not_allowed",
        param="model",
    )


def safety_switches(ctx: object) -> Mapping[str, bool]:
    """host/safety/'s per-key seam (`Safety.switches`): the request's key's switches."""
    principal = PRINCIPAL.get()
    return principal.safety if principal is not None and principal.safety else {}


def loopback(host: str) -> bool:
    """Whether ``host`` (an address to listen on) is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Authenticator:
    """Checks credentials: API keys against the active keys' snapshot, JWTs with pyjwt."""

    def __init__(self, settings: Settings, store: KeyStore) -> None:
        self.enabled = settings.auth_on
        self.public = frozenset(settings.auth_public_paths)
        self.refresh_s = settings.auth_keys_refresh_s
        self.store = store
        #: id -> (hash, record) of the active keys.
        self.keys: dict[str, tuple[str, KeyRecord]] = {}
        self.jwt = JWTVerifier(settings) if self.enabled and settings.jwt_configured else None
        self._writer: Writer | None = None
        self._touched: dict[str, float] = {}
        # one reload at a time: a reload that read the table before a revocation can never
        # replace the snapshot of one that read it after
        self._loading = threading.Lock()

    def attach(self, writer: Writer) -> None:
        """Load the keys now; then ``writer``'s thread reloads them and writes their use."""
        self.reload()
        self._writer = writer
        writer.sink(USED, KeyStore.touch)
        writer.every(self.refresh_s, self.reload_in)

    def reload(self) -> None:
        with db.transaction(self.store.sessions) as session:
            self.reload_in(session)

    def reload_in(self, session: Any) -> None:
        with self._loading:
            self.keys = KeyStore.active(session)

    def authenticate(self, headers: Headers) -> Principal:
        """The principal the request's credentials name, or `Denied` (401)."""
        given = headers.get("x-api-key")
        if given is not None:
            token, header = given.strip(), "X-API-Key"
        else:
            authorization = headers.get("authorization")
            if authorization is None:
                raise Denied(
                    401,
                    "credentials required: an API key (X-API-Key, or Authorization: Bearer) or "
                    "a bearer token",
                    "missing_credentials",
                )
            scheme, _, value = authorization.strip().partition(" ")
            token, header = value.strip(), "Authorization"
            if scheme.lower() != "bearer" or not token:
                raise Denied(
                    401, "the Authorization header must be 'Bearer <credential>'", "invalid_api_key"
                )
        if token.startswith(PREFIX):
            return self._key(token)
        if header == "X-API-Key" or self.jwt is None:
            raise Denied(401, "invalid API key", "invalid_api_key")
        return self.jwt.verify(token)

    def _key(self, key: str) -> Principal:
        ident = key_id(key)
        entry = self.keys.get(ident) if ident is not None else None
        if entry is None or not hmac.compare_digest(digest(key), entry[0]):
            raise Denied(401, "invalid or revoked API key", "invalid_api_key")
        record = entry[1]
        self._used(record.id)
        models = frozenset(record.models) if record.models is not None else None
        return Principal(
            f"key:{record.id}", record.role, record.id, models, record.limits, record.safety
        )

    def _used(self, ident: str) -> None:
        at = time.monotonic()
        if self._writer is not None and at - self._touched.get(ident, -TOUCH_EVERY_S) >= (
            TOUCH_EVERY_S
        ):
            self._touched[ident] = at
            self._writer.put(USED, (ident, datetime.now(UTC)))


class JWTVerifier:
    """Bearer JWTs: HS256 (``auth_jwt_secret``) and/or RS256 (``auth_jwt_public_key``)."""

    def __init__(self, settings: Settings) -> None:
        try:
            import jwt
        except ImportError:
            raise ImportError(
                "JWT authentication needs pyjwt: pip install 'hfskills[auth]'"
            ) from None
        self.jwt = jwt
        self.keys: dict[str, Any] = {}
        if settings.auth_jwt_secret is not None:
            self.keys["HS256"] = settings.auth_jwt_secret.get_secret_value()
        if settings.auth_jwt_public_key is not None:
            pem = settings.auth_jwt_public_key
            if not pem.lstrip().startswith("-----BEGIN"):
                pem = Path(pem).expanduser().read_text()
            # parsed now: a bad key fails start-up, not each request
            rsa = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256)
            self.keys["RS256"] = rsa.prepare_key(pem)
        self.issuer, self.audience = settings.auth_jwt_issuer, settings.auth_jwt_audience

    def verify(self, token: str) -> Principal:
        jwt = self.jwt
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError:
            raise Denied(
                401, "invalid bearer token: not an API key or a JWT", "invalid_token"
            ) from None
        key = self.keys.get(algorithm)
        if key is None:
            raise Denied(
                401,
                f"invalid bearer token: algorithm {algorithm!r} is not accepted here "
                f"(accepted: {', '.join(self.keys)})",
                "invalid_token",
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp", "sub", "role"], "verify_aud": bool(self.audience)},
            )
        except jwt.ExpiredSignatureError:
            raise Denied(401, "the bearer token has expired", "token_expired") from None
        except jwt.InvalidTokenError as error:
            raise Denied(401, f"invalid bearer token: {error}", "invalid_token") from None
        role, models = claims["role"], claims.get("models")
        if role not in ROLES:
            raise Denied(
                401, f"invalid bearer token: role must be one of {list(ROLES)}", "invalid_token"
            )
        if models is not None and not (
            isinstance(models, list) and all(isinstance(m, str) for m in models)
        ):
            raise Denied(
                401, "invalid bearer token: models must be a list of names", "invalid_token"
            )
        allowed = frozenset(models) if models is not None else None
        return Principal(f"jwt:{claims['sub']}", role, None, allowed)


class Authentication:
    """Pure ASGI middleware: 401/403 before the route runs; the principal for everything below."""

    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app, self.auth = app, auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.auth.enabled or scope["path"] in self.auth.public:
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        try:
            principal = self.auth.authenticate(Headers(scope=scope))
            needed = required_role(method, path)
            if not principal.may(needed):
                raise Denied(
                    403,
                    f"role {principal.role!r} may not {method} {path} (it needs {needed!r})",
                    "insufficient_role",
                )
        except Denied as denied:
            response = errors.error_response(path, denied.status, denied.message, denied.code)
            if denied.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="hfskills"'
            return await response(scope, receive, send)
        scope.setdefault("state", {})["principal"] = principal
        token = PRINCIPAL.set(principal)
        try:
            await self.app(scope, receive, send)
        finally:
            PRINCIPAL.reset(token)


def install(app: Starlette, settings: Settings, store: KeyStore, writer: Writer) -> Authenticator:
    """Authentication (and CORS outside it, when ``cors_origins`` names any) around ``app``'s
    middleware added so far; call it last."""
    auth = Authenticator(settings, store)
    if auth.enabled:
        auth.attach(writer)
        if not auth.keys and auth.jwt is None:
            log.warning(
                "authentication is on but there is no API key and no JWT key: every request but "
                "%s answers 401; create a key with `hfskills keys create --role admin`",
                ", ".join(sorted(auth.public)) or "none",
            )
    app.state.auth = auth
    app.add_middleware(Authentication, auth=auth)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["*"],
            expose_headers=["*"],
            max_age=600,
        )
    return auth


def unclassified(routes: Iterable[Any]) -> list[str]:
    """``METHOD path`` of each route (Starlette ``Route``) no rule names (for the tests)."""
    missing = []
    for route in routes:
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            if rule(method, path) is None:
                missing.append(f"{method} {route.path}")
    return missing
