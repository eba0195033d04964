"""The API keys' admin routes: ``GET /api/keys``, ``POST /api/keys`` (the key is in this
answer only), ``PATCH /api/keys/{id}`` (its name, role, models, own limits and safety
switches), ``DELETE /api/keys/{id}`` (revokes; the row stays). host/auth.py's `RULES` give
them to admins. A change reloads this process's snapshot of the active keys at once; other
processes see it within ``auth_keys_refresh_s``. Each change writes one log line naming the
key's id and who made it (never the key).
"""

from __future__ import annotations

import json
import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..auth import Authenticator
from ..control.keys import KeyRecord
from ..openapi import protocol
from ..protocol import keys as proto
from .common import parse
from .registry import actor

log = logging.getLogger("hfskills.host")


def _auth(request: Request) -> Authenticator:
    return request.app.state.auth


def _out(record: KeyRecord, **extra: str) -> dict:
    out = proto.KeyOut.model_validate(record.out()).model_dump(mode="json")
    return {**out, **extra}


def _logged(action: str, record: KeyRecord, request: Request, **more: object) -> None:
    line = {"event": f"api_key.{action}", "key_id": record.id, "role": record.role, **more}
    log.info(json.dumps({**line, "actor": actor(request)}))


@protocol(None, proto.KeyListOut)
async def list_keys(request: Request) -> Response:
    """List the API keys (revoked ones too), without the keys."""
    records = await run_in_threadpool(_auth(request).store.records)
    return JSONResponse({"object": "list", "data": [_out(r) for r in records]})


@protocol(proto.KeyCreate, proto.KeyCreatedOut)
async def create_key(request: Request) -> Response:
    """Create an API key; the answer holds the key, shown this once."""
    body = await parse(request, proto.KeyCreate)
    auth = _auth(request)
    limits = body.limits.stored() if body.limits is not None else None
    record, key = await run_in_threadpool(
        auth.store.create, body.name, body.role, body.models, limits, body.safety
    )
    await run_in_threadpool(auth.reload)
    _logged("created", record, request)
    return JSONResponse(_out(record, key=key), status_code=201)


@protocol(proto.KeyUpdate, proto.KeyOut)
async def update_key(request: Request) -> Response:
    """Change an API key's name, role, models, own limits or safety switches (the fields the
    body gives); 404 when no key has the id, 409 when it is revoked."""
    body = await parse(request, proto.KeyUpdate)
    auth = _auth(request)
    changes = body.changes()
    record = await run_in_threadpool(auth.store.update, request.path_params["key_id"], changes)
    await run_in_threadpool(auth.reload)
    _logged("updated", record, request, changed=sorted(changes))
    return JSONResponse(_out(record))


@protocol(None, proto.KeyOut)
async def revoke_key(request: Request) -> Response:
    """Revoke an API key (again: nothing changes); 404 when no key has the id."""
    auth = _auth(request)
    record = await run_in_threadpool(auth.store.revoke, request.path_params["key_id"])
    await run_in_threadpool(auth.reload)
    _logged("revoked", record, request)
    return JSONResponse(_out(record))


routes = [
    Route("/api/keys", list_keys, methods=["GET"]),
    Route("/api/keys", create_key, methods=["POST"]),
    Route("/api/keys/{key_id}", update_key, methods=["PATCH"]),
    Route("/api/keys/{key_id}", revoke_key, methods=["DELETE"]),
]
