"""``POST /model/switch/{version}``: the request body and the report (docs/control-plane.md).

The body names the route to switch and, when its targets are versions of several models,
which model (``model_id``). The report says what happened at each step and what it measured:
the load and the warm-up, the drain of the old version's requests, and the memory its unload
freed, in the loader's accounting (``freed_resident_bytes``: the endpoints' ``memory_bytes``)
and in the process's resident set size (``freed_rss_bytes``, read from ``rss_source``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .registry import ModelId
from .routes import RouteName, TargetOut


class SwitchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    route: RouteName = Field(description="the route whose target switches version")
    model_id: ModelId | None = Field(
        None,
        description="the registered model whose version the route switches (default: the one "
        "model the route's targets are versions of)",
    )


class SwitchOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    route: str
    model_id: str
    from_: list[str] = Field(alias="from", description="the versions replaced, as model_id@version")
    to: str = Field(description="the version the route now sends the model's share to")
    served: str = Field(description="the served name of that version (its catalog entry)")
    targets: list[TargetOut] = Field(description="the route's targets after the switch")
    already_loaded: bool = Field(description="the new version was resident before the switch")
    loaded_ms: float
    warmed: bool = Field(description="a real inference ran through the new version's worker")
    warmed_ms: float | None
    in_flight_at_swap: int = Field(
        description="requests on the old versions when the route changed (queued or running)"
    )
    drained: bool = Field(description="they all ended within switch_drain_timeout_s")
    drained_ms: float
    unloaded: list[str] = Field(description="served names unloaded from the model cache")
    kept: dict[str, str] = Field(description="old versions kept loaded, and why")
    resident_bytes_before: int
    resident_bytes_after: int
    freed_resident_bytes: int = Field(
        description="the loader's resident bytes before the unload minus after"
    )
    rss_bytes_before: int | None
    rss_bytes_after: int | None
    freed_rss_bytes: int | None = Field(
        description="the process's RSS before the unload minus after (None: not measurable)"
    )
    rss_source: str | None = Field(description="psutil, or /proc/self/statm without it")
    unload_ms: float
    total_ms: float
