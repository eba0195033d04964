"""Ray Serve: the same app on a Ray cluster (``hfskills serve --ray``; docs/ray.md).

Policy: Ray Serve does the distribution, hfskills adds no layer of its own. The whole Starlette
app of `build_app` is one Ray Serve deployment, its ingress: Ray's HTTP proxy (one per node)
hands each request's raw ASGI scope to a replica, and each replica is a complete hfskills host
(catalog, registry, scheduler, loader, workers), so every OpenAI, Hugging Face and design route
answers on Ray exactly as under uvicorn. The app is built on the replica, never on the driver:
`serve.ingress` is given a builder function (Ray's documented form), and Ray runs the app's
lifespan on the replica as uvicorn would.

Scaling is Ray's autoscaler on ongoing requests: ``ray_min_replicas`` to ``ray_max_replicas``
replicas, aiming at ``ray_target_ongoing_requests`` in flight per replica, at most
``ray_max_ongoing_requests`` (Ray's default of 5 would cap a batching replica far below the
batches it forms: ``max_batch_sequences`` 32). Each replica reserves ``ray_num_cpus`` and
``ray_num_gpus`` of the cluster's resources, which is how Ray places replicas on GPU nodes.

With ``ray_per_model`` (``--ray-per-model``) each catalog model is a deployment of its own
(host/ray_models.py: its weights and worker, scaled on its own ongoing requests), bound to the
app's deployment, whose replicas then hold no weights. Ray's model multiplexing is not used:
it routes by the ``serve_multiplexed_model_id`` header, which the OpenAI SDK and the HF
clients never send; they name the model in the body, which the host resolves through aliases,
routes, strategies and versions (host/control) before a model's deployment is called.

`ray` is imported lazily: the host runs without it, and ``--ray`` without it is one line
naming ``pip install 'hfskills[ray]'``.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hfskills.skillset.runtime.errors import HFSkillsError

from .config import Settings

if TYPE_CHECKING:
    from starlette.applications import Starlette

log = logging.getLogger("hfskills.host")

#: The Ray Serve application's name (``serve status`` shows it; ``serve.delete`` takes it).
APP_NAME = "hfskills"
#: The deployment's name: one per application.
DEPLOYMENT_NAME = "HFSkills"
RAY_MISSING = "hfskills serve --ray needs Ray Serve: pip install 'hfskills[ray]'"


class RayUnavailable(HFSkillsError):
    code = "ray_unavailable"


def _serve() -> Any:
    try:
        from ray import serve
    except ImportError:
        raise RayUnavailable(RAY_MISSING) from None
    return serve


def app_builder(
    settings: Settings, app_name: str = APP_NAME, models: frozenset[str] = frozenset()
) -> Callable[[], Starlette]:
    """The function `serve.ingress` calls on each replica to build the app there (a closure:
    Ray pickles it with the settings, and calls it once per replica). ``models``: those on
    deployments of their own (``ray_per_model``), which the app's loader connects to instead
    of loading (host/ray_models.py)."""

    def build() -> Starlette:
        from .app import build_app

        app = build_app(settings)
        if models:  # before the lifespan, whose preload would load them here
            app.state.host.loader.ray_app = app_name
            app.state.host.loader.ray_models = models
        return app

    return build


class HFSkillsIngress:
    """The deployment's class: empty, as `serve.ingress` wraps it with the app that
    `app_builder` builds on the replica (an ingress class may not define ``__call__``). With a
    deployment per model, it is bound to theirs, so Ray deploys them with it (the app reaches
    them by name: `ray_models.connect`)."""

    def __init__(self, *models: Any) -> None:
        self.models = models


def _scaling(settings: Settings) -> dict[str, Any]:
    """Ray's autoscaling on ongoing requests, as the settings say (each deployment its own)."""
    return {
        "autoscaling_config": {
            "min_replicas": settings.ray_min_replicas,
            "max_replicas": settings.ray_max_replicas,
            "target_ongoing_requests": settings.ray_target_ongoing_requests,
        },
        "max_ongoing_requests": settings.ray_max_ongoing_requests,
    }


def deployment(
    settings: Settings, app_name: str = APP_NAME, models: frozenset[str] = frozenset()
) -> Any:
    """The Ray Serve deployment of hfskills: the app as ASGI ingress, autoscaled on ongoing
    requests, each replica reserving ``ray_num_cpus`` and ``ray_num_gpus`` (no GPU when the
    models are on deployments of their own)."""
    serve = _serve()
    ingress = serve.ingress(app_builder(settings, app_name, models))(HFSkillsIngress)
    gpus = 0 if models else settings.ray_num_gpus
    return serve.deployment(
        ingress,
        name=DEPLOYMENT_NAME,
        ray_actor_options={"num_cpus": settings.ray_num_cpus, "num_gpus": gpus},
        **_scaling(settings),
    )


def graph(settings: Settings, app_name: str = APP_NAME) -> Any:
    """The bound application: the app's deployment, and with ``ray_per_model`` one
    `ray_models.ModelServer` deployment per catalog model, bound to it."""
    if not settings.ray_per_model:
        return deployment(settings, app_name).bind()
    serve = _serve()
    from . import catalog as catalog_mod
    from . import ray_models
    from .discovery import discover

    registry = discover(settings.skills_dirs, builtin=settings.builtin_skills)
    names = sorted(catalog_mod.build(settings, registry).models)
    servers = [
        serve.deployment(
            ray_models.ModelServer,
            name=ray_models.deployment_name(name),
            ray_actor_options={
                "num_cpus": settings.ray_num_cpus,
                "num_gpus": settings.ray_num_gpus,
            },
            **_scaling(settings),
        ).bind(settings, name)
        for name in names
    ]
    return deployment(settings, app_name, frozenset(names)).bind(*servers)


def application(args: dict[str, str]) -> Any:
    """An application builder for Ray's own CLI and config files (``serve run``, ``serve
    deploy``, KubeRay's RayService): ``serve run hfskills.host.ray_serve:application
    config=hfskills.toml``. Settings come from ``config`` (a TOML file) and ``HFSKILLS_*``, read
    where the builder runs."""
    from .config import load_settings

    return graph(load_settings(args.get("config")))


def deploy(settings: Settings, *, name: str = APP_NAME) -> str:
    """Start Serve on the connected cluster with its HTTP proxy on ``settings.host`` and
    ``settings.port`` (TLS when ``ssl_certfile`` is set), deploy hfskills as ``name`` at route
    prefix ``/`` and wait until it runs; returns the base URL. A Serve already running on the
    cluster keeps its own HTTP options (Ray's rule: they are set once per cluster)."""
    serve = _serve()
    http: dict[str, Any] = {"host": settings.host, "port": settings.port}
    if settings.ssl_certfile is not None and settings.ssl_keyfile is not None:
        http |= {
            "ssl_certfile": str(settings.ssl_certfile),
            "ssl_keyfile": str(settings.ssl_keyfile),
        }
    serve.start(http_options=http)
    serve.run(graph(settings, name), name=name, route_prefix="/")
    scheme = "https" if settings.ssl_certfile is not None else "http"
    return f"{scheme}://{settings.host}:{settings.port}"


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(settings: Settings) -> int:
    """``hfskills serve --ray``: join the cluster at ``RAY_ADDRESS`` (else a cluster started on
    this machine with ``ray start``, else a new local one), deploy, and serve until Ctrl-C or
    SIGTERM; then the application is deleted (Serve itself stays up on a joined cluster, and a
    cluster started here stops with this process)."""
    serve = _serve()
    import ray

    address = os.environ.get("RAY_ADDRESS") or None
    ray.init(address=address, logging_level=logging.WARNING)
    # Ctrl-C, and SIGTERM as a container's stop sends it (as uvicorn handles both); a
    # background job of a non-interactive shell even starts with SIGINT ignored
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        url = deploy(settings)
        log.info(
            "hfskills on Ray Serve at %s (application %r, %d-%d replicas, target %s ongoing "
            "requests per replica; cluster %s)",
            url,
            APP_NAME,
            settings.ray_min_replicas,
            settings.ray_max_replicas,
            settings.ray_target_ongoing_requests,
            ray.get_runtime_context().gcs_address,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            log.info("deleting the Ray Serve application %r", APP_NAME)
            serve.delete(APP_NAME)
    finally:
        ray.shutdown()
    return 0
