"""The ``[safety]`` settings table: which hooks run, at which stages, with what action.

Policy: nothing is checked unless configured. A hook is a ``[[safety.rules]]`` entry, the
``[safety.pii]`` table (on when it names stages) or the ``[safety.classifier]`` table (on when
it names a model). Each hook is on for every request (``default = true``) or off by default;
a request's API key may switch a hook on or off by its name (`pipeline.Safety.switches`).
Stages: ``pre`` (the request's text, before the model: reject, or redact and continue),
``during`` (a stream's text every ``during_every_tokens`` tokens: a hook that fires stops the
stream, since text already sent cannot be redacted), ``post`` (a non-streamed answer's text:
reject or redact).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Stage = Literal["pre", "during", "post"]
STAGES: tuple[Stage, ...] = ("pre", "during", "post")
PIIKind = Literal["email", "phone", "card"]
#: Hook names a rule may not take: the built-in hooks' own.
RESERVED = frozenset({"pii", "classifier", "*"})


class RuleSettings(BaseModel):
    """A regex or keyword rule (``[[safety.rules]]``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
        description="the rule's name: in audit events, the metric and the error message",
    )
    pattern: str | None = Field(None, description="a Python regular expression")
    keywords: list[str] = Field(
        default_factory=list, description="words or phrases matched as whole words"
    )
    ignore_case: bool = Field(True, description="match without regard to case")
    action: Literal["reject", "redact"] = Field(
        "reject", description="reject the request, or replace each match by `replacement`"
    )
    replacement: str = Field("[REDACTED]", max_length=64, description="what a match becomes")
    stages: list[Stage] = Field(
        default_factory=lambda: list(STAGES), description="the stages the rule runs at"
    )
    default: bool = Field(True, description="on for every request (a key may switch it)")

    @model_validator(mode="after")
    def _one_matcher(self) -> RuleSettings:
        if (self.pattern is None) == (not self.keywords):
            raise ValueError(f"rule {self.name!r}: give either pattern or keywords, not both")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as error:
                raise ValueError(f"rule {self.name!r}: pattern does not compile: {error}") from None
        if any(not word.strip() for word in self.keywords):
            raise ValueError(f"rule {self.name!r}: keywords must not be empty")
        if self.name in RESERVED:
            raise ValueError(f"rule name {self.name!r} is reserved ({sorted(RESERVED)})")
        return self


class PIISettings(BaseModel):
    """PII detection (``[safety.pii]``): off until it names stages."""

    model_config = ConfigDict(extra="forbid")

    kinds: list[PIIKind] = Field(
        default_factory=lambda: ["email", "phone", "card"], description="what counts as PII"
    )
    stages: list[Stage] = Field(
        default_factory=list, description='the stages it runs at, e.g. ["pre", "post"] (none: off)'
    )
    action: Literal["redact", "reject"] = Field(
        "redact", description="replace each finding by [EMAIL], [PHONE] or [CARD], or reject"
    )
    default: bool = Field(True, description="on for every request (a key may switch it)")


class ClassifierSettings(BaseModel):
    """A served text-classification model as a hook (``[safety.classifier]``)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="a served text_classification model (none: off)")
    label: str | None = Field(None, description="the label whose score decides")
    threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="a text whose label scores at least this is refused"
    )
    stages: list[Stage] = Field(
        default_factory=lambda: ["pre", "post"], description="the stages it runs at"
    )
    default: bool = Field(True, description="on for every request (a key may switch it)")
    fail_open: bool = Field(
        False,
        description="when the classifier cannot answer, let the text pass (audited as "
        "`error`); otherwise the request fails with 503 `safety_unavailable`",
    )

    @model_validator(mode="after")
    def _label_with_model(self) -> ClassifierSettings:
        if self.model is not None and not self.label:
            raise ValueError("safety.classifier: a model needs the label that decides")
        return self


class SafetySettings(BaseModel):
    """The ``[safety]`` table (see the module's note)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="off: no hook runs, whatever is configured")
    stages: list[Stage] = Field(
        default_factory=lambda: list(STAGES),
        description="the stages that run at all (a hook runs at its own stages among these)",
    )
    during_every_tokens: int = Field(
        16, ge=1, le=4096, description="a stream's text is checked every this many tokens"
    )
    rules: list[RuleSettings] = Field(default_factory=list, description="[[safety.rules]]")
    pii: PIISettings = Field(default_factory=PIISettings, description="[safety.pii]")
    classifier: ClassifierSettings = Field(
        default_factory=ClassifierSettings, description="[safety.classifier]"
    )

    @field_validator("rules")
    @classmethod
    def _names_unique(cls, rules: list[RuleSettings]) -> list[RuleSettings]:
        names = [rule.name for rule in rules]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"safety rule {repeated[0]!r} is defined twice")
        return rules

    @property
    def configured(self) -> bool:
        """Whether any hook can run."""
        return self.enabled and bool(
            self.stages and (self.rules or self.pii.stages or self.classifier.model)
        )
