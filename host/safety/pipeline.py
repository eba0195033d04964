"""The safety pipeline's stages, its decisions, and their audit trail.

Policy:

- Which requests: a client's (``RequestContext.origin == "client"``) through
  `InferenceService.run` and `open_stream`, every API family alike. The host's own calls (shadow
  copies, benchmark runs, the classifier itself) are not checked.
- Which hooks: those whose ``default`` is on, unless the request's key switches them
  (`Safety.switches`, the seam authentication connects: a function of the request context
  returning ``{hook name: on}``, where a hook is named by its rule name, ``pii`` or
  ``classifier``, and ``*`` names them all).
- ``pre``: the text inputs (prompts, chat messages' text, embedding and classification inputs;
  not token ids, not images or audio) before the model: a hook that rejects answers 400
  ``content_policy``; a hook that redacts hands the model the redacted text (and ``echo`` and
  ``return_full_text`` show what it received). Rules and PII run in order, then the
  classifier on the text they leave.
- ``during``: a stream's text so far, every ``during_every_tokens`` tokens and at its end,
  before the event that completes the window is sent: any hook that fires stops the stream
  with one error event (``content_policy``) and the generation is cancelled. The classifier
  runs beside the generation (one check at a time) and is awaited at the end.
- ``post``: a non-streamed answer's text (results with a ``text``): reject (400
  ``content_policy``) or redact. A redacted result drops its token ids (TGI's ``details``
  would spell the text out) and keeps its token count.
- Every decision (a hook that fired: ``reject``, ``redact``, ``stop``, or the classifier's
  ``error``) is counted in ``hfskills_safety_decisions_total{stage,rule,action}`` and written
  as a ``safety.decision`` control-plane event (stage, rule, action, user or key, model, the
  SHA-256 of each text it fired on, never the text), and a log line. A request's decisions are
  one per (stage, rule, action), with every text's hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from hfskills.skillset.runtime.generation import Event, FinalEvent, TokenEvent, generated_tokens

from ..control import answer
from ..errors import APIError
from ..metrics import PREFIX, Metrics
from ..scheduler import RequestContext
from .classifier import Classifier, ClassifierUnavailable
from .rules import PII, Rule, TextHook
from .settings import SafetySettings

if TYPE_CHECKING:
    from ..control.events import Events
    from ..inference import InferenceService, Outcome, Stream

log = logging.getLogger("hfskills.safety")

EVENT_KIND = "safety.decision"
#: Keys of an input's dicts that hold text (chat messages, pairs, question answering).
TEXT_KEYS = ("content", "text", "text_pair", "question", "context")
#: Tasks whose inputs are media, not text: their inputs are not checked (their text outputs
#: are).
MEDIA_TASKS = (
    "image_",
    "audio_",
    "automatic_speech",
    "object_",
    "depth_",
    "zero_shot_image",
    "zero_shot_object",
    "video_",
)
#: Texts longer than this (characters, all of a request's together) are scanned in a thread,
#: off the event loop.
OFFLOAD_CHARS = 65_536
#: What a key's switches may name besides rules: every hook at once.
ALL = "*"
_KEY_ID = re.compile(r"^key:[0-9a-f]{12}$")

#: The seam for per-key hooks: request context -> {hook name: on}.
Switches = Callable[[RequestContext], Mapping[str, bool]]


#: What a refusal says, per stage.
REFUSED = {
    "pre": "the request's input was refused",
    "post": "the model's output was refused",
    "during": "the stream was stopped: its output was refused",
}


class ContentPolicy(APIError):
    """A hook refused the request's input or the model's output: 400 ``content_policy``."""

    def __init__(self, stage: str, rule: str) -> None:
        super().__init__(
            400, f"{REFUSED[stage]} by the content policy (rule {rule!r})", code="content_policy"
        )
        self.stage, self.rule = stage, rule


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def who(ctx: RequestContext) -> str | None:
    """The request's user or key for the audit: a raw API key (``key:<header>``, before
    authentication names keys by id) is replaced by its hash's first 16 hex digits."""
    user = ctx.user
    if user is None or not user.startswith("key:") or _KEY_ID.match(user):
        return user
    return "keyhash:" + sha256(user[4:])[:16]


def _conversation(value: Any) -> bool:
    """Whether an input is chat messages (a vision-language chat's, on a media task)."""
    return isinstance(value, list) and any(isinstance(m, dict) and "role" in m for m in value)


def is_media(task: str | None) -> bool:
    return task is not None and task.startswith(MEDIA_TASKS)


# -- the texts of inputs ------------------------------------------------------------------------


def texts_of(value: Any) -> list[str]:
    """Every text in ``value``, in order: strings, lists of them, and dicts' `TEXT_KEYS` (token
    ids and other values are not text)."""
    found: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, list | tuple):
            for part in item:
                walk(part)
        elif isinstance(item, dict):
            for key in TEXT_KEYS:
                if key in item:
                    walk(item[key])

    walk(value)
    return found


def with_texts(value: Any, texts: Iterator[str]) -> Any:
    """``value`` with its texts (in `texts_of`'s order) replaced by ``texts``."""
    if isinstance(value, str):
        return next(texts)
    if isinstance(value, list | tuple):
        return type(value)(with_texts(part, texts) for part in value)
    if isinstance(value, dict):
        return {k: with_texts(v, texts) if k in TEXT_KEYS else v for k, v in value.items()}
    return value


# -- decisions ----------------------------------------------------------------------------------


@dataclass
class Decision:
    stage: str
    rule: str
    action: str
    hashes: list[str] = field(default_factory=list)
    matches: int = 0
    score: float | None = None


class Decisions(dict[tuple[str, str, str], Decision]):
    def add(
        self,
        stage: str,
        rule: str,
        action: str,
        text: str,
        matches: int = 1,
        score: float | None = None,
    ) -> None:
        decision = self.setdefault((stage, rule, action), Decision(stage, rule, action))
        decision.hashes.append(sha256(text))
        decision.matches += matches
        if score is not None:
            decision.score = max(score, decision.score or 0.0)


# -- the pipeline -------------------------------------------------------------------------------


class Safety:
    """The configured hooks, the metric and the audit (one per host)."""

    def __init__(
        self,
        settings: SafetySettings,
        service: InferenceService,
        metrics: Metrics,
        events: Events | None = None,
    ) -> None:
        self.settings = settings
        self.stages = frozenset(settings.stages)
        self.every = settings.during_every_tokens
        self.hooks: list[TextHook] = [Rule.of(rule) for rule in settings.rules]
        if settings.pii.stages and settings.pii.kinds:
            self.hooks.append(PII.of(settings.pii))
        self.classifier = (
            Classifier(settings.classifier, service) if settings.classifier.model else None
        )
        self.service, self.events = service, events
        #: The per-key seam (see the module's note); None: every hook at its default.
        self.switches: Switches | None = None
        self.decisions = Counter(
            PREFIX + "safety_decisions_total",
            "Safety pipeline decisions (a hook that fired) by stage, rule and action",
            ["stage", "rule", "action"],
            registry=metrics.registry,
        )

    def guard(self, name: str, task: str | None, ctx: RequestContext) -> Guard | None:
        """This request's hooks, or None when none is on for it."""
        if ctx.origin != "client":
            return None
        switched = self.switches(ctx) if self.switches is not None else {}

        def on(hook: TextHook | Classifier) -> bool:
            return bool(switched.get(hook.switch, switched.get(ALL, hook.default)))

        hooks = [hook for hook in self.hooks if on(hook) and hook.stages & self.stages]
        classifier = self.classifier
        if classifier is not None and not (on(classifier) and classifier.stages & self.stages):
            classifier = None
        if not hooks and classifier is None:
            return None
        return Guard(self, name, task, ctx, hooks, classifier)

    # -- the audit --------------------------------------------------------------------------
    def record(self, decisions: Iterable[Decision], guard: Guard, model: str) -> None:
        model_id, version = self._registration(model)
        request_id = answer.request_id()
        for decision in decisions:
            self.decisions.labels(
                stage=decision.stage, rule=decision.rule, action=decision.action
            ).inc()
            data: dict[str, Any] = {
                "stage": decision.stage,
                "rule": decision.rule,
                "action": decision.action,
                "model": model,
                "task": guard.task,
                "user": who(guard.ctx),
                "texts": len(decision.hashes),
                "text_sha256": decision.hashes,
                "matches": decision.matches,
            }
            if decision.score is not None and self.classifier is not None:
                data.update(score=round(decision.score, 6), threshold=self.classifier.threshold)
            log.info(json.dumps({"event": "safety_decision", "request_id": request_id, **data}))
            if self.events is not None:
                try:
                    self.events.emit(EVENT_KIND, model_id, version, request_id, **data)
                except Exception:  # the audit never fails a request; its failure is logged
                    log.exception("writing a safety decision's event failed")

    def _registration(self, model: str) -> tuple[str | None, str | None]:
        """(model_id, version) of a served model the registry knows, else (name, None)."""
        ledger = getattr(self.service, "ledger", None)
        versions = getattr(ledger, "versions", None) or {}
        version = versions.get(model)
        if version is None:
            return model, None
        return (getattr(ledger, "ids", None) or {}).get(model, model), version


class Guard:
    """One request's hooks at its three stages (`Safety.guard`)."""

    def __init__(
        self,
        safety: Safety,
        name: str,
        task: str | None,
        ctx: RequestContext,
        hooks: list[TextHook],
        classifier: Classifier | None,
    ) -> None:
        self.safety, self.name, self.task, self.ctx = safety, name, task, ctx
        self.hooks, self.classifier = hooks, classifier

    def _at(self, stage: str) -> tuple[list[TextHook], Classifier | None]:
        if stage not in self.safety.stages:
            return [], None
        hooks = [hook for hook in self.hooks if stage in hook.stages]
        classifier = self.classifier
        return hooks, classifier if classifier is not None and stage in classifier.stages else None

    # -- the stages -------------------------------------------------------------------------
    async def pre(self, inputs: list[Any]) -> list[Any]:
        """The inputs the model gets (redacted), or `ContentPolicy`."""
        if is_media(self.task) and not any(_conversation(x) for x in inputs):
            return inputs  # media alone; a vision-language chat's text is checked
        texts = texts_of(inputs)
        if not texts:
            return inputs
        model = self.safety.service.loader.catalog.get(self.name)  # an alias: its model
        checked = await self.check("pre", texts, model.name if model is not None else self.name)
        return inputs if checked == texts else with_texts(inputs, iter(checked))

    async def post(self, outcome: Outcome) -> Outcome:
        """The answer with its text results redacted, or `ContentPolicy`."""
        results = list(outcome.results)
        where = [
            i
            for i, r in enumerate(results)
            if isinstance(r, dict) and isinstance(r.get("text"), str)
        ]
        if not where:
            return outcome
        texts = [results[i]["text"] for i in where]
        checked = await self.check("post", texts, outcome.loaded.model.name)
        for i, old, new in zip(where, texts, checked, strict=True):
            if new != old:
                result = {**results[i], "text": new}
                if "token_ids" in result:  # the ids would spell the text out; the count stays
                    result.update(token_ids=[], completion_tokens=generated_tokens(results[i]))
                results[i] = result
        outcome.results = results
        return outcome

    def during(self, stream: Stream) -> None:
        """Watch ``stream``'s text as it is generated (its events, replaced)."""
        hooks, classifier = self._at("during")
        if hooks or classifier is not None:
            stream.events = self._watched(stream.events, stream.loaded.model.name, classifier)

    async def _watched(
        self, events: AsyncIterator[Event], model: str, classifier: Classifier | None
    ) -> AsyncIterator[Event]:
        text, since = "", 0
        pending: asyncio.Task[list[str]] | None = None
        try:
            async for event in events:
                text += event.text
                final = isinstance(event, FinalEvent)
                since += isinstance(event, TokenEvent)
                if pending is not None and pending.done():
                    pending.result()  # the classifier's verdict on the text before
                    pending = None
                if since >= self.safety.every or final:
                    since = 0
                    await self.check("during", [text], model, classify=False)
                    if classifier is not None and final:
                        if pending is not None:
                            await pending
                            pending = None
                        await self.check("during", [text], model, hooks=False)
                    elif classifier is not None and pending is None:
                        pending = asyncio.ensure_future(
                            self.check("during", [text], model, hooks=False)
                        )
                yield event
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]

    # -- one check ----------------------------------------------------------------------------
    async def check(
        self, stage: str, texts: list[str], model: str, hooks: bool = True, classify: bool = True
    ) -> list[str]:
        """``texts`` after ``stage``'s hooks (redacted), or `ContentPolicy`; every decision
        recorded either way."""
        rules, classifier = self._at(stage)
        rules = rules if hooks else []
        classifier = classifier if classify else None
        decisions = Decisions()
        try:
            if rules:
                if sum(map(len, texts)) > OFFLOAD_CHARS:
                    texts, refused = await asyncio.to_thread(
                        self._scan, stage, rules, texts, decisions
                    )
                else:
                    texts, refused = self._scan(stage, rules, texts, decisions)
                if refused is not None:
                    raise ContentPolicy(stage, refused)
            if classifier is not None:
                await self._classify(stage, classifier, texts, decisions)
        finally:
            if decisions:
                self.safety.record(decisions.values(), self, model)
        return texts

    @staticmethod
    def _scan(
        stage: str, hooks: list[TextHook], texts: list[str], decisions: Decisions
    ) -> tuple[list[str], str | None]:
        """Rules and PII in order: (the texts, redacted; the rule that refused them, if any)."""
        texts = list(texts)
        for hook in hooks:
            stops = stage == "during" or hook.action == "reject"
            for i, text in enumerate(texts):
                if stops:
                    rule = hook.found(text)
                    if rule is not None:
                        decisions.add(stage, rule, "stop" if stage == "during" else "reject", text)
                        return texts, rule
                    continue
                redacted, counts = hook.redact(text)
                for rule, count in counts.items():
                    decisions.add(stage, rule, "redact", text, count)
                texts[i] = redacted
        return texts, None

    async def _classify(
        self, stage: str, classifier: Classifier, texts: list[str], decisions: Decisions
    ) -> None:
        try:
            scores = await classifier.scores(texts, self.ctx)
        except ClassifierUnavailable as error:
            for text in texts:
                decisions.add(stage, "classifier", "error", text, 0)
            if classifier.fail_open:
                log.warning("%s; the text passes (fail_open)", error)
                return
            raise APIError(503, str(error), code="safety_unavailable") from None
        for text, score in zip(texts, scores, strict=True):
            if score >= classifier.threshold:
                action = "stop" if stage == "during" else "reject"
                decisions.add(stage, "classifier", action, text, score=score)
                raise ContentPolicy(stage, "classifier")


def build(
    settings: SafetySettings, service: InferenceService, metrics: Metrics, events: Events | None
) -> Safety | None:
    """The host's pipeline, or None when no hook is configured (nothing then runs)."""
    return Safety(settings, service, metrics, events) if settings.configured else None
