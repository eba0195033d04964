"""What one served call was, for whoever keeps accounts of calls: `Call`.

The request core (host/inference.py) builds one `Call` when a call ends (each run of a model,
each stream) and hands it to the `Ledger` (costs, budgets, events) and to its observers
(e.g. automatic benchmarking). A request that fails over makes one call per target it tried.
Observers run on the event loop: they must be quick and must not block or raise (an
observer's exception is logged and never reaches the request).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Who asked for a call (`RequestContext.origin`): a client, or the host itself.
CLIENT, SHADOW, BENCH = "client", "shadow", "bench"


@dataclass(frozen=True)
class Call:
    #: The request's id (``X-Request-Id``); empty for the host's own calls.
    request_id: str
    #: The served model that ran (or was asked for, when it failed before running).
    model: str
    #: Its registered version; None for a model the registry does not know (on demand).
    version: str | None
    task: str | None
    hardware: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    #: ``ok``, ``error``, ``timeout`` or ``cancelled``.
    status: str
    #: The route that chose the model, None when the request named it.
    route: str | None
    user: str | None
    #: ``client``, ``shadow`` (a challenger's copy) or ``bench`` (automatic benchmarking).
    origin: str
    #: When the call ended (``time.time()``).
    at: float

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
