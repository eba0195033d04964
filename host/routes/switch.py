"""``POST /model/switch/{version}``: switch a route to another registered version of its model
at run time (the policy: host/control/switch.py; docs/control-plane.md#switching-versions).

The body names the route (``{"route": NAME, "model_id"?: ID}``); the answer is the switch's
report (`SwitchOut`). Errors answer in the OpenAI shape, as under ``/api/``. The actor of the
audited route write is the ``X-User-Id`` header, else ``anonymous``.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..control.switch import Switcher
from ..errors import APIError
from ..openapi import protocol
from ..protocol.switch import SwitchBody, SwitchOut
from .common import host, parse
from .registry import actor

#: A version as the registry spells it (host/protocol/registry.py's ``Version``).
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")


def switcher(request: Request) -> Switcher:
    """The app's one `Switcher` (made on first use: it holds which routes are switching)."""
    state = request.app.state
    if getattr(state, "switcher", None) is None:
        h = host(request)
        state.switcher = Switcher(
            h.control,
            h.loader,
            h.scheduler,
            h.settings.switch_drain_timeout_s,
            h.settings.request_timeout_s,
        )
    return state.switcher


@protocol(SwitchBody, SwitchOut)
async def switch(request: Request) -> Response:
    """Load and warm a registered version, make it the route's target, drain and unload the
    old version; the report says what each step took and the memory freed."""
    version = request.path_params["version"]
    if not VERSION.match(version):
        raise APIError(
            400,
            "version: 1-64 letters, digits and ._+- starting with a letter or digit",
            param="version",
        )
    body = await parse(request, SwitchBody)
    report = await switcher(request).switch(body.route, version, body.model_id, actor(request))
    return JSONResponse(report.model_dump(mode="json", by_alias=True))


routes = [Route("/model/switch/{version}", switch, methods=["POST"])]
