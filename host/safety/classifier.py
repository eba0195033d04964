"""A served text-classification model as a safety hook: a text whose ``label`` scores at least
``threshold`` is refused.

Policy: the classifier is any model this host serves with the ``text_classification`` task (a
catalog entry, loaded on first use like any other). It runs through the host's own
`InferenceService` under the request's deadline, priority and disconnect watch, with origin
``safety``: never billed, never checked by the safety pipeline itself, and never named in the
answer's ``X-HFSkills-Model`` (it runs in a task of its own that forgets the request's notes).
All of a request's texts go in one call (in chunks of the core's ``max_inputs``). When it
cannot answer (not served, failed, a label it does not have), the request fails with 503
``safety_unavailable``, unless ``fail_open``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from ..control import answer
from ..errors import ClientGone, DeadlineExceeded
from ..scheduler import RequestContext
from .settings import ClassifierSettings

if TYPE_CHECKING:
    from ..inference import InferenceService

#: `RequestContext.origin` of the classifier's own calls.
SAFETY = "safety"
TASK = "text_classification"


class ClassifierUnavailable(Exception):
    """The classifier did not answer (its reason is the message)."""


class Classifier:
    def __init__(self, settings: ClassifierSettings, service: InferenceService) -> None:
        assert settings.model is not None and settings.label is not None
        self.model, self.label, self.threshold = settings.model, settings.label, settings.threshold
        self.stages = frozenset(settings.stages)
        self.default, self.fail_open = settings.default, settings.fail_open
        self.service = service
        self.switch = "classifier"

    async def scores(self, texts: list[str], ctx: RequestContext) -> list[float]:
        """The label's score for each text (`ClassifierUnavailable` when there is none)."""
        if not texts:
            return []
        inner = dataclasses.replace(ctx, origin=SAFETY, route=None)
        step = max(1, self.service.max_inputs)
        rows: list[Any] = []
        for start in range(0, len(texts), step):
            rows += await asyncio.create_task(self._call(texts[start : start + step], inner))
        return [self._score(row) for row in rows]

    async def _call(self, texts: list[str], ctx: RequestContext) -> list[Any]:
        answer.forget()  # a task of its own: the request's answer headers stay its model's
        try:
            outcome = await self.service.run(self.model, TASK, texts, {}, ctx)
        except (asyncio.CancelledError, DeadlineExceeded, ClientGone):
            raise  # the request's own end, not the classifier's failure
        except Exception as error:
            message = getattr(error, "message", None) or str(error) or type(error).__name__
            raise ClassifierUnavailable(
                f"safety classifier {self.model!r}: {message.splitlines()[0]}"
            ) from error
        return outcome.results

    def _score(self, row: Any) -> float:
        entries = row if isinstance(row, list) else [row]
        labels = []
        for entry in entries:
            if isinstance(entry, dict) and "label" in entry:
                labels.append(str(entry["label"]))
                if str(entry["label"]).lower() == self.label.lower():
                    return float(entry["score"])
        raise ClassifierUnavailable(
            f"safety classifier {self.model!r} has no label {self.label!r} (it has {labels})"
        )
