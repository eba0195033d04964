"""A circuit breaker per served model: a failing model fails fast instead of failing slowly.

The policy, stated once:

- **Closed** (``circuit_breaker_state{model}`` 0): requests run. Each failure and success of
  the model is timed; when ``breaker_failures`` failures fall within ``breaker_window_s`` and
  they are at least ``breaker_failure_ratio`` of its calls in that window, the breaker opens.
  (The share keeps a busy model that fails on a few odd inputs, or one client's crafted ones,
  serving everyone else; a broken or hung model fails every call.)
- **Open** (1): for ``breaker_open_s`` every request to the model fails fast with 503
  ``circuit_open`` and a ``Retry-After`` of the seconds left, without queueing, loading or
  running anything. A route whose target is open skips to its next candidate (inference.py's
  `_routed`), as for any failing target, without counting it as a new failure.
- **Half-open** (2): after ``breaker_open_s`` the next request is the probe; the others fail
  fast until it ends. The probe's success closes the breaker (its failures forgotten), its
  failure opens it again for ``breaker_open_s``; a probe that ends neither way (the client
  left, a 4xx of its own) lets the next request probe.

What counts as the model's failure: a load that fails (503 ``model_load_failed``), the
model's own error (424, an out-of-memory error included), any other 5xx it raises, and a
request that ran out of the server's own deadline (``request_timeout_s``: the model hangs).
Not counted: the client's errors (4xx), overload (429, and 503 when a queue wait ran out), a
client that left, and a deadline the client shortened (``X-Request-Timeout`` below the
server's). Isolation between models is the scheduler's (each model has its own slots and
queue, so a hanging model holds only its own) and the deadline's (a hung request is cancelled);
the breaker then stops a broken model from taking even those.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from hfskills.skillset.runtime.errors import HFSkillsError

from .errors import APIError, ClientGone, DeadlineExceeded
from .metrics import Metrics

log = logging.getLogger("hfskills.host")

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
STATES = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half_open"}
#: Errors with a 5xx status that say nothing about the model's health.
NOT_THE_MODELS = ("overloaded", "unavailable", "circuit_open", "route_unavailable")


class CircuitOpen(HFSkillsError):
    """The model's breaker is open (or half-open with its probe running): fail fast."""

    code = "circuit_open"
    status = 503

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, param="model")
        self.retry_after_s = retry_after_s


@dataclass
class _Circuit:
    state: int = CLOSED
    failures: deque[float] = field(default_factory=deque)
    #: Success times in the window (the most recent ones: a bound on memory at high rates).
    successes: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    open_until: float = 0.0
    probing: bool = False
    #: The latest failure, in the fast failures' message.
    last_error: str = ""


class Ticket:
    """One admitted call: `end` it once with how it went (later calls do nothing)."""

    __slots__ = ("breakers", "counts_timeout", "ended", "model", "probe")

    def __init__(self, breakers: Breakers, model: str, probe: bool, counts_timeout: bool) -> None:
        self.breakers, self.model, self.probe = breakers, model, probe
        self.counts_timeout, self.ended = counts_timeout, False

    def end(self, status: str, error: BaseException | None = None) -> None:
        """``status``: the call's (``ok``, ``error``, ``timeout``, ``cancelled``); ``error``:
        what it raised, if anything."""
        if self.ended:
            return
        self.ended = True
        verdict = self._verdict(status, error)
        why = getattr(error, "message", None) or str(error or "the server's deadline passed")
        self.breakers.ended(self, verdict, why)

    def _verdict(self, status: str, error: BaseException | None) -> bool | None:
        """True: the model succeeded; False: it failed; None: this call says nothing."""
        if status == "ok" and error is None:
            return True
        if isinstance(error, DeadlineExceeded) or (status == "timeout" and error is None):
            return False if self.counts_timeout else None
        if error is None or not isinstance(error, Exception) or isinstance(error, ClientGone):
            return None  # no error, or the client left (a cancellation, a consumer gone)
        if isinstance(error, HFSkillsError | APIError):
            if error.code in NOT_THE_MODELS:
                return None
            return False if error.status == 424 or error.status >= 500 else None
        return False  # anything else escaping the model's call is the model's failure


class Breakers:
    """Every model's circuit, created on its first call; one event loop, no locks."""

    def __init__(
        self,
        metrics: Metrics,
        failures: int = 5,
        window_s: float = 60.0,
        open_s: float = 30.0,
        server_timeout_s: float = 300.0,
        failure_ratio: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics, self.clock = metrics, clock
        self.failures, self.window_s, self.open_s = failures, window_s, open_s
        self.failure_ratio = failure_ratio
        self.server_timeout_s = server_timeout_s
        self.circuits: dict[str, _Circuit] = {}

    def enter(self, model: str, timeout_s: float) -> Ticket:
        """Admit a call to ``model`` (whose deadline is ``timeout_s``), or raise `CircuitOpen`."""
        circuit = self.circuits.get(model)
        if circuit is None:
            circuit = self.circuits[model] = _Circuit()
            self._gauge(model, CLOSED)
        probe = False
        if circuit.state != CLOSED:
            now = self.clock()
            if circuit.state == OPEN and now >= circuit.open_until:
                self._set(model, circuit, HALF_OPEN)
            if circuit.state == OPEN or circuit.probing:
                left = max(1, math.ceil(circuit.open_until - now))
                self.metrics.breaker_rejected.labels(model=model).inc()
                raise CircuitOpen(
                    f"model {model!r} is failing: its circuit breaker is "
                    f"{STATES[circuit.state].replace('_', '-')} (the latest failure: "
                    f"{circuit.last_error}); try again in {left} s",
                    retry_after_s=left,
                )
            circuit.probing = probe = True
        return Ticket(self, model, probe, timeout_s >= self.server_timeout_s)

    def ended(self, ticket: Ticket, verdict: bool | None, why: str = "") -> None:
        circuit = self.circuits[ticket.model]
        if verdict is False:
            circuit.last_error = why.splitlines()[0][:500] if why else "failed"
        if ticket.probe:
            circuit.probing = False
            if verdict is True:
                circuit.failures.clear()
                circuit.successes.clear()
                self._set(ticket.model, circuit, CLOSED)
            elif verdict is False:
                self._open(ticket.model, circuit, "its half-open probe failed")
            return
        if verdict is None or circuit.state != CLOSED:
            return
        now = self.clock()
        (circuit.failures if verdict is False else circuit.successes).append(now)
        for times in (circuit.failures, circuit.successes):
            while times and times[0] <= now - self.window_s:
                times.popleft()
        failed = len(circuit.failures)
        if verdict is False and failed >= self.failures:
            share = failed / (failed + len(circuit.successes))
            if share >= self.failure_ratio:
                self._open(ticket.model, circuit, f"{failed} failures, {share:.0%} of its calls")

    def state_gauge(self, model: str) -> None:
        """Export ``model``'s state now (a model no call has reached yet: closed)."""
        circuit = self.circuits.get(model)
        self._gauge(model, circuit.state if circuit is not None else CLOSED)

    def state(self, model: str) -> str:
        circuit = self.circuits.get(model)
        return STATES[circuit.state if circuit is not None else CLOSED]

    def _open(self, model: str, circuit: _Circuit, why: str) -> None:
        circuit.failures.clear()
        circuit.successes.clear()
        circuit.open_until = self.clock() + self.open_s
        self._set(model, circuit, OPEN)
        log.warning(
            "circuit breaker of %s opened (%s within %g s): failing fast for %g s",
            model,
            why,
            self.window_s,
            self.open_s,
        )

    def _set(self, model: str, circuit: _Circuit, state: int) -> None:
        if circuit.state != state and state == CLOSED:
            log.info("circuit breaker of %s closed: its probe succeeded", model)
        circuit.state = state
        self._gauge(model, state)

    def _gauge(self, model: str, state: int) -> None:
        self.metrics.breaker_state.labels(model=model).set(state)
