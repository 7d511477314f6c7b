"""The HTTP face of :class:`~sr_runtime.serve.service.UpscaleService` (Starlette, served by uvicorn).

Routes::

    POST /v1/upscale[?format=png|jpeg|webp]   body: the image file -> the upscaled image
    GET  /v1/models                           what is loaded: name, scale, form chosen, parity
    GET  /healthz                             200 while the process runs
    GET  /readyz                              200 once the fast form is built, 503 before and while draining
    GET  /metrics                             Prometheus text

Errors are one line of JSON, ``{"error": "..."}``, with the status that names the problem: 400 unreadable,
401 token, 413 too large, 415 not an image, 503 (with ``Retry-After``) loading, draining or queue full,
504 over the time limit. A client that disconnects cancels its work between tiles. With a token, the
``/v1`` routes and ``/metrics`` need ``Authorization: Bearer TOKEN``; the health probes never do.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time

from sr_runtime.serve.service import Cancelled, ServeError, UpscaleService

__all__ = ["create_app"]

log = logging.getLogger("sr_runtime.serve")


def _consume(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def create_app(service: UpscaleService, *, token: str | None = None, load_on_startup: bool = True):
    """The ASGI application. With ``load_on_startup`` the model loads in the background at startup and
    the service drains and closes at shutdown (SIGTERM under uvicorn: in-flight requests finish)."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    metrics = service.metrics

    def error(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def authorized(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        return given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())

    async def read_body(request: Request) -> bytes:
        limit = service.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ServeError(413, f"the body is {declared} bytes; the limit is {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ServeError(413, f"the body is over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def disconnected(request: Request) -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    async def upscale(request: Request) -> Response:
        started = time.monotonic()
        status = 500
        try:
            if not authorized(request):
                status = 401
                return error(401, "missing or wrong token: send Authorization: Bearer TOKEN")
            body = await read_body(request)
            job = service.submit(body, request.query_params.get("format", "png").lower())
            result = asyncio.wrap_future(job.future)
            gone = asyncio.ensure_future(disconnected(request))
            done, _ = await asyncio.wait({result, gone}, timeout=service.config.timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            if result not in done:
                job.cancel()
                gone.cancel()
                result.add_done_callback(_consume)  # it ends with Cancelled after nobody waits for it
                if gone in done:
                    status = 499
                    log.info("client disconnected; its request was cancelled")
                    return Response(status_code=499)
                status = 504
                return error(504, f"the request took longer than {service.config.timeout_s:g} s")
            gone.cancel()
            data, content_type = result.result()
            status = 200
            return Response(data, media_type=content_type)
        except ServeError as e:
            status = e.status
            return error(e.status, e.message, e.retry_after)
        except Cancelled:
            status = 499
            return Response(status_code=499)
        except Exception as e:  # a fault: one line to the client, the traceback to the log
            log.exception("request failed")
            return error(500, f"internal error: {type(e).__name__}: {e}")
        finally:
            metrics.requests.labels(status=str(status)).inc()
            if status == 200:
                metrics.latency.observe(time.monotonic() - started)

    async def models(request: Request) -> Response:
        if not authorized(request):
            return error(401, "missing or wrong token: send Authorization: Bearer TOKEN")
        if not service.wait_ready(0):
            return error(503, service.load_error or "the model is still loading", 5)
        return JSONResponse({"models": [service.model_info]})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if service.ready:
            return JSONResponse({"status": "ready"})
        reason = "draining" if service.wait_ready(0) else service.load_error or "loading"
        return error(503, reason, 5)

    async def metrics_route(request: Request) -> Response:
        if not authorized(request):
            return error(401, "missing or wrong token: send Authorization: Bearer TOKEN")
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)

    @asynccontextmanager
    async def lifespan(app):
        if load_on_startup:
            service.start()
        yield
        service.drain()
        await asyncio.get_running_loop().run_in_executor(None, service.close)

    return Starlette(routes=[
        Route("/v1/upscale", upscale, methods=["POST"]),
        Route("/v1/models", models),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_route),
    ], lifespan=lifespan)
