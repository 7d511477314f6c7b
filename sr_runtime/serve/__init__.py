"""``sr-serve``: the runtime as an HTTP service (Starlette on uvicorn), and on Ray Serve to scale out.

:class:`UpscaleService` is the transport-free core (admission, bounded queue, cancellation, batching of
equal-shape tiles across requests); :func:`create_app` puts HTTP in front of it; :func:`serve` runs it
under uvicorn; :mod:`sr_runtime.serve.ray_app` deploys the same service on Ray Serve. Needs the
``serve`` extra (``starlette``, ``uvicorn``, ``prometheus_client``).
"""

from __future__ import annotations

from sr_runtime.serve.service import ServeConfig, ServeError, UpscaleService

__all__ = ["ServeConfig", "ServeError", "UpscaleService", "create_app", "serve"]


def create_app(service: UpscaleService, *, token: str | None = None, load_on_startup: bool = True):
    from sr_runtime.serve.app import create_app as _create_app

    return _create_app(service, token=token, load_on_startup=load_on_startup)


def serve(service: UpscaleService, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None) -> None:
    """Serve until SIGTERM/SIGINT; in-flight requests finish (up to the request time limit), new ones are
    refused, then the process exits."""
    import uvicorn

    app = create_app(service, token=token)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False,
                timeout_graceful_shutdown=int(service.config.timeout_s) + 5)
