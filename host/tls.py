"""The uvicorn server of `hfskills serve`, HTTPS when a certificate is configured.

For deployments without an ingress: ``ssl_certfile`` and ``ssl_keyfile`` (PEM; settings or
``--ssl-certfile``/``--ssl-keyfile``) go to uvicorn, and the server's TLS context refuses
anything older than TLS 1.2 at the handshake (`Config`). Without them the server speaks plain
HTTP, as before; certificates are not reloaded while it runs (restart to rotate them).
"""

from __future__ import annotations

import ssl
from typing import Any

import uvicorn

from .config import Settings

MINIMUM_TLS = ssl.TLSVersion.TLSv1_2


class Config(uvicorn.Config):
    """uvicorn's configuration with TLS 1.2 as the least protocol version."""

    def load(self) -> None:
        super().load()
        if self.ssl is not None:
            self.ssl.minimum_version = MINIMUM_TLS


def server_config(app: Any, settings: Settings, **options: Any) -> Config:
    """The server's configuration: address, port and certificate from ``settings``;
    ``options``: uvicorn's others (log level, access log)."""
    tls: dict[str, Any] = {}
    if settings.ssl_certfile is not None:
        tls = {"ssl_certfile": str(settings.ssl_certfile), "ssl_keyfile": str(settings.ssl_keyfile)}
    return Config(app, host=settings.host, port=settings.port, **tls, **options)
