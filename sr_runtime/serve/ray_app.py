"""The same service on Ray Serve: ``sr-serve --ray [ADDRESS]``.

Each replica holds one :class:`~sr_runtime.serve.service.UpscaleService` (one Upscaler, one GPU per
replica where the cluster has GPUs). Requests reach a replica through Ray Serve's own batching
(``@serve.batch``): a batch is submitted to the service together, so its tile batcher runs the
equal-shape tiles of the batch as one backend call. Routes, limits, token and error replies are those
of the uvicorn app. Ray Serve restarts a replica that dies; a request that was on it fails with 500 (the
client retries), the others go on.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from dataclasses import asdict
from typing import Any

from sr_runtime.serve.service import Cancelled, ServeConfig, ServeError, UpscaleService

__all__ = ["build_app", "deploy", "SRDeployment"]

log = logging.getLogger("sr_runtime.serve")


class SRDeployment:
    """A Ray Serve replica: loads the model once, then answers the service's routes."""

    def __init__(self, upscaler_kwargs: dict[str, Any], config: dict[str, Any], token: str | None) -> None:
        from sr_runtime.upscaler import Upscaler

        self.service = UpscaleService(lambda: Upscaler(**upscaler_kwargs), ServeConfig(**config))
        self.service.load()
        self.token = token

    async def _batch(self, items: list[tuple[bytes, str]]) -> list[Any]:
        """Submit a Ray Serve batch at once; each item's result or its exception, in order."""
        jobs: list[Any] = []
        for body, fmt in items:
            try:
                jobs.append(self.service.submit(body, fmt))
            except ServeError as e:
                jobs.append(e)
        out = []
        for job in jobs:
            if isinstance(job, ServeError):
                out.append(job)
                continue
            try:
                out.append(await asyncio.wait_for(asyncio.wrap_future(job.future), self.service.config.timeout_s))
            except asyncio.TimeoutError:
                job.cancel()
                out.append(ServeError(504, f"the request took longer than {self.service.config.timeout_s:g} s"))
            except Cancelled:
                out.append(ServeError(499, "cancelled"))
            except Exception as e:  # noqa: BLE001 - a fault: the message goes to the client, the rest go on
                out.append(e)
        return out

    def _authorized(self, request) -> bool:
        if self.token is None:
            return True
        given = request.headers.get("authorization", "")
        return given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), self.token.encode())

    async def __call__(self, request):
        from starlette.responses import JSONResponse, Response

        def error(status, message, retry_after=None):
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
            return JSONResponse({"error": message}, status_code=status, headers=headers)

        path = request.url.path.rstrip("/") or "/"
        if path == "/healthz":
            return JSONResponse({"status": "ok"})
        if path == "/readyz":
            return JSONResponse({"status": "ready"}) if self.service.ready else error(503, "loading", 5)
        if not self._authorized(request):
            return error(401, "missing or wrong token: send Authorization: Bearer TOKEN")
        if path == "/v1/models":
            return JSONResponse({"models": [self.service.model_info]})
        if path == "/metrics":
            data, content_type = self.service.metrics.render()
            return Response(data, media_type=content_type)
        if path != "/v1/upscale" or request.method != "POST":
            return error(404, f"no route {request.method} {path}")
        started = time.monotonic()
        body = await request.body()
        result = await self.handle_batch((body, request.query_params.get("format", "png").lower()))
        metrics = self.service.metrics
        if isinstance(result, ServeError):
            metrics.requests.labels(status=str(result.status)).inc()
            return error(result.status, result.message, result.retry_after)
        if isinstance(result, Exception):
            metrics.requests.labels(status="500").inc()
            return error(500, f"internal error: {type(result).__name__}: {result}")
        metrics.requests.labels(status="200").inc()
        metrics.latency.observe(time.monotonic() - started)
        data, content_type = result
        return Response(data, media_type=content_type)


def build_app(upscaler_kwargs: dict[str, Any], config: ServeConfig, *, token: str | None = None,
              replicas: int | str = 1, max_replicas: int | None = None, batch_wait_s: float | None = None):
    """The Ray Serve application: ``replicas`` fixed, or autoscaling from ``replicas`` to ``max_replicas``."""
    import torch
    from ray import serve

    wait = config.batch_window_ms / 1e3 if batch_wait_s is None else batch_wait_s

    async def handle_batch(self, items):  # Serve's batching finds `self` by this function's name
        return await SRDeployment._batch(self, items)

    batched = serve.batch(max_batch_size=config.max_batch, batch_wait_timeout_s=wait)(handle_batch)
    cls = type("SRDeployment", (SRDeployment,), {"handle_batch": batched})
    options: dict[str, Any] = {
        "ray_actor_options": {"num_gpus": 1} if torch.cuda.is_available() else {"num_cpus": 1},
        "max_ongoing_requests": config.workers + config.queue_size,
        "health_check_period_s": 2,
        "graceful_shutdown_timeout_s": config.timeout_s,
    }
    if max_replicas:
        options["autoscaling_config"] = {"min_replicas": int(replicas), "max_replicas": int(max_replicas),
                                         "target_ongoing_requests": config.workers}
    else:
        options["num_replicas"] = int(replicas)
    deployment = serve.deployment(name="sr", **options)(cls)
    return deployment.bind(upscaler_kwargs, asdict(config), token)


def deploy(upscaler_kwargs: dict[str, Any], config: ServeConfig, *, address: str | None, host: str, port: int,
           token: str | None = None, replicas: int = 1, max_replicas: int | None = None, block: bool = True) -> None:
    """Start (or join, with ``address``) Ray, serve the app on ``host:port`` and, with ``block``, wait
    until interrupted, then shut Serve down."""
    import ray
    from ray import serve

    # Serve gives a new HTTP proxy 5 s to report ready, three times, then kills it; on a busy machine
    # importing the proxy alone takes longer. A local Ray inherits this from the driver's environment.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(upscaler_kwargs, config, token=token, replicas=replicas, max_replicas=max_replicas),
              name="sr", route_prefix="/")
    log.info("sr-serve on Ray Serve: http://%s:%d (%s replica(s))", host, port,
             f"{replicas}-{max_replicas}" if max_replicas else replicas)
    if not block:
        return
    try:
        while True:
            asyncio.run(asyncio.sleep(3600))
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
