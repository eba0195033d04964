"""The request path's one question to the registry: may this served model answer?

`Gate` holds an immutable snapshot, served model name -> (version, status), of the catalog's
models whose registration is not plainly servable, swapped whole after every registry write
(never a database query per request). `Gate.check` is one dict lookup: ``retired`` refuses
the request (404, code ``model_retired``); ``deprecated`` answers and notes the model for
`DeprecationNotices`, which adds ``Warning`` and ``X-HFSkills-Deprecated`` headers to the
response. ``active`` and ``testing`` pass as if there were no registry.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hfskills.skillset.runtime.errors import HFSkillsError

#: The deprecated models a request used (name -> version), set per request by the middleware.
_NOTICES: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "deprecation_notices", default=None
)


class ModelRetired(HFSkillsError):
    code = "model_retired"
    status = 404


class Gate:
    def __init__(self) -> None:
        self._marked: Mapping[str, tuple[str, str]] = {}
        self.any_deprecated = False

    def update(self, statuses: Mapping[str, tuple[str, str]]) -> None:
        """Replace the snapshot: served name -> (version, status), for every served model."""
        marked = {n: vs for n, vs in statuses.items() if vs[1] in ("retired", "deprecated")}
        self._marked = marked  # one assignment: a request sees the old or the new, whole
        self.any_deprecated = any(status == "deprecated" for _, status in marked.values())

    def status(self, name: str) -> str | None:
        """``retired`` or ``deprecated``; None for a model served as usual."""
        found = self._marked.get(name)
        return found[1] if found is not None else None

    def retired(self, name: str) -> bool:
        return self.status(name) == "retired"

    def check(self, name: str) -> None:
        """Refuse a retired model; note a deprecated one for the response's headers."""
        found = self._marked.get(name)
        if found is None:
            return
        version, status = found
        if status == "retired":
            raise ModelRetired(
                f"model {name!r} (version {version}) is retired and no longer served; "
                "GET /api/models lists the registered models and their status",
                param="model",
            )
        notices = _NOTICES.get()
        if notices is not None:
            notices[name] = version


class DeprecationNotices:
    """ASGI middleware: a response that a deprecated model answered carries ``Warning: 299``
    and ``X-HFSkills-Deprecated: name@version``. Passes requests straight through while no
    served model is deprecated."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app, self.gate = app, gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.gate.any_deprecated:
            return await self.app(scope, receive, send)
        notices: dict[str, str] = {}
        token = _NOTICES.set(notices)

        async def send_with_notices(message: Message) -> None:
            if message["type"] == "http.response.start" and notices:
                headers = list(message.get("headers", []))
                for name, version in notices.items():
                    text = f'299 hfskills "model {name} version {version} is deprecated"'
                    headers.append((b"warning", text.encode("latin-1", "replace")))
                    headers.append(
                        (b"x-hfskills-deprecated", f"{name}@{version}".encode("latin-1", "replace"))
                    )
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_notices)
        finally:
            _NOTICES.reset(token)
