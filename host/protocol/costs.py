"""Request bodies of the accounts' API: budgets (``PUT /api/budgets/{scope}``) and feedback
(``POST /api/feedback``). The answers are plain JSON documented in docs/control-plane.md."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .registry import Score

Label = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w.:/-]*$")]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BudgetBody(Body):
    daily_usd: float = Field(
        ge=0, le=1e12, allow_inf_nan=False, description="USD a UTC day may spend in this scope"
    )


class FeedbackBody(Body):
    request_id: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="the X-Request-Id of the response",
    )
    score: Score | None = Field(None, description="how good the answer was, 0 (bad) to 1")
    label: Label | None = Field(None, description="a label, e.g. thumbs_up, wrong, toxic")
    comment: str | None = Field(None, max_length=1000, description="free text, kept as given")

    @model_validator(mode="after")
    def _something(self) -> FeedbackBody:
        if self.score is None and self.label is None:
            raise ValueError("give a score (0..1) or a label")
        return self
