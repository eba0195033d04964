"""The request path's accounts: what a call may cost before it runs, what it cost after.

The core (host/inference.py) calls the `Ledger` three times per call, all on the event loop
and without a database query:

1. `plan`, once the model that will run is known and before it is queued: its price (a local
   model without a measurement yet at ``cost_assumed_tokens_per_s``), the most the call can
   cost (a prompt estimate, ~2 characters a token, plus ``max_tokens`` per input), that amount
   reserved in its budgets (`BudgetExceeded`: 429), and ``model_call.planned``.
2. `started`, when the model holds the call: ``model_call.started``.
3. `finished`, with the `Call`: the throughput it showed, its cost at the model's price now,
   the budgets reconciled, a cost event, ``model_call.completed`` or ``model_call.failed``,
   the cost for the response's ``X-HFSkills-Cost-USD``, and the request noted for feedback.

Calls the host makes itself (shadow copies, benchmark runs) skip all three: never billed,
never counted against a budget, no events.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hfskills.skillset.runtime.generation import GenerationParams

from ..scheduler import RequestContext
from . import answer
from .budgets import Budgets, Reservation
from .calls import CLIENT, Call
from .costs import CostBook, Pricing, Throughput, usd
from .events import Events
from .feedback import FeedbackBook


@dataclass
class Hold:
    """A planned call: who runs it and what was reserved for it."""

    #: The served model (prices and throughput are per served model).
    model: str
    #: The registration it answers as: budgets, cost events, events and feedback use these.
    model_id: str
    version: str
    provider: str
    request_id: str
    estimate_usd: float | None
    reservation: Reservation | None
    #: When the model took the call (``time.time()``): its busy time starts there, not at
    #: arrival (a first call's load and any queueing are not the model's throughput).
    started: float | None = None


def prompt_tokens_at_most(item: Any) -> int:
    """A generous estimate of an input's prompt tokens (a reservation must not fall short):
    about 2 characters a token for text, the length of a token-id list, the JSON size of
    anything else (chat messages)."""
    if isinstance(item, str):
        return len(item) // 2 + 8
    if isinstance(item, list) and all(isinstance(t, int) for t in item):
        return len(item)
    return len(json.dumps(item, default=str)) // 2 + 8


class Ledger:
    def __init__(
        self,
        versions: Mapping[str, str],
        ids: Mapping[str, str],
        pricing: Pricing,
        throughput: Throughput,
        book: CostBook,
        budgets: Budgets,
        events: Events,
        feedback: FeedbackBook,
    ) -> None:
        """``versions``: served model -> its registered version; ``ids``: -> its model_id
        when that is not its served name (the registry's ``served`` and ``ids``)."""
        self.versions, self.ids = versions, ids
        self.pricing, self.throughput = pricing, throughput
        self.book, self.budgets, self.events, self.feedback = book, budgets, events, feedback

    def plan(
        self, model: str, task: str | None, inputs: list[Any], params: Any, ctx: RequestContext
    ) -> Hold | None:
        if ctx.origin != CLIENT:
            return None
        version = self.versions.get(model)
        if version is None:  # a model the registry does not know (on demand): not accounted
            return None
        request_id = answer.request_id() or ""
        model_id = self.ids.get(model, model)
        price = self.pricing.price(model, None, assume=True)
        estimate = None
        reservation = None
        if price is not None:
            most = params.max_new_tokens if isinstance(params, GenerationParams) else 0
            prompt = sum(prompt_tokens_at_most(item) for item in inputs)
            estimate = price.of(prompt, most * len(inputs))
            reservation = self.budgets.reserve(model_id, estimate)
        self.events.emit(
            "model_call.planned",
            model_id,
            version,
            request_id,
            task=task,
            route=ctx.route,
            user=ctx.user,
            estimate_usd=estimate,
            price_basis=price.basis if price is not None else None,
        )
        provider = self.pricing.profiles().get(model, ("local", None))[0]
        return Hold(model, model_id, version, provider, request_id, estimate, reservation)

    def started(self, hold: Hold | None, hardware: str) -> None:
        if hold is not None:
            hold.started = time.time()
            self.events.emit(
                "model_call.started",
                hold.model_id,
                hold.version,
                hold.request_id,
                hardware=hardware,
            )

    def finished(self, hold: Hold | None, call: Call) -> None:
        if hold is None:
            return
        self.throughput.observe(call, hold.started)
        cost: float | None = None
        price = self.pricing.price(call.model, call.hardware) if call.status == "ok" else None
        if price is not None:
            cost = price.of(call.prompt_tokens, call.completion_tokens)
        self.budgets.settle(hold.reservation, hold.model_id, cost or 0.0)
        self.book.record(call, hold.model_id, hold.version, hold.provider, cost)
        if cost is not None:
            answer.note_cost(cost)
        if call.status == "ok" and hold.request_id:
            self.feedback.note(hold.request_id, hold.model_id, hold.version)
        self.events.emit(
            "model_call.completed" if call.status == "ok" else "model_call.failed",
            hold.model_id,
            hold.version,
            hold.request_id,
            status=call.status,
            hardware=call.hardware,
            route=call.route,
            prompt_tokens=call.prompt_tokens,
            completion_tokens=call.completion_tokens,
            cost_usd=cost,
            estimate_usd=hold.estimate_usd,
            price_basis=price.basis if price is not None else None,
            tokens_per_second=price.tokens_per_second if price is not None else None,
            latency_ms=round(call.latency_s * 1000, 3),
        )

    def price_per_1k(self, model: str) -> float | None:
        """The model's measured price per 1000 tokens now (strategies' cost term)."""
        price = self.pricing.price(model, None)
        return usd(price.per_1k_tokens) if price is not None else None
