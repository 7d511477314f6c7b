"""The upscaling service without HTTP: admission, a bounded queue, workers, cancellation, batching.

One :class:`~sr_runtime.upscaler.Upscaler` is loaded once (through the fast path, as ``sr-run`` does).
Requests are decoded and encoded by the same functions as ``sr-run`` (``Upscaler.upscale_file``: alpha,
16-bit, EXIF orientation), so a response equals ``sr-run``'s file for the same image. Each worker thread
runs its request on a view of the Upscaler whose model calls go through one :class:`TileBatcher`, so
equal-shape tiles of concurrent requests share a backend call.
"""

from __future__ import annotations

import io
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sr_runtime.errors import InputError, SRError
from sr_runtime.serve.batcher import TileBatcher
from sr_runtime.serve.metrics import ServeMetrics

__all__ = ["ServeConfig", "UpscaleService", "ServeError", "OUTPUT_FORMATS"]

log = logging.getLogger("sr_runtime.serve")

OUTPUT_FORMATS = {"png": ("image/png", ".png"), "jpeg": ("image/jpeg", ".jpg"), "jpg": ("image/jpeg", ".jpg"),
                  "webp": ("image/webp", ".webp")}


@dataclass(frozen=True)
class ServeConfig:
    """What the service accepts and how it batches; every limit is refused with its own status."""

    max_body_bytes: int = 50 * 2**20
    """Largest request body (413 above it)."""
    max_pixels: int = 40_000_000
    """Largest decoded input, width x height (413 above it)."""
    workers: int = 4
    """Requests processed at once (their tiles are batched together)."""
    queue_size: int = 16
    """Requests waiting beyond the workers; when full, 503 with Retry-After."""
    timeout_s: float = 120.0
    """Per-request limit from admission to response (504 after it; the work is cancelled)."""
    batch_window_ms: float = 5.0
    """How long a tile waits for tiles of the same shape from other requests."""
    max_batch: int = 4
    """Most tiles per backend call."""

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_pixels", "workers", "max_batch"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.queue_size < 0 or self.timeout_s <= 0 or self.batch_window_ms < 0:
            raise InputError("queue_size must be >= 0, timeout_s > 0 and batch_window_ms >= 0")


class ServeError(Exception):
    """A request the service refuses: ``status`` is the HTTP status, ``message`` one line for the client."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


class Cancelled(Exception):
    """The client went away or the time limit passed: the request's tiles stop at the next one."""


class Job:
    """One admitted request; ``future`` resolves to ``(bytes, content_type)``."""

    def __init__(self) -> None:
        self.future: Future = Future()
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()

    def check(self, done: int = 0, total: int = 0) -> None:
        """The Upscaler's progress callback: raising here stops the request between tiles."""
        if self.cancelled.is_set():
            raise Cancelled()


class UpscaleService:
    """Load once, then :meth:`submit` requests. Thread-safe; :meth:`close` drains and frees."""

    def __init__(self, make_upscaler: Callable[[], Any], config: ServeConfig, *,
                 metrics: ServeMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or ServeMetrics()
        self._make_upscaler = make_upscaler
        self._upscaler = None
        self._batcher: TileBatcher | None = None
        self._ready = threading.Event()
        self.load_error: str | None = None
        self.model_info: dict[str, Any] = {}
        self._slots = threading.BoundedSemaphore(config.workers + config.queue_size)
        self._pool = ThreadPoolExecutor(config.workers, thread_name_prefix="sr-serve")
        self._views = threading.local()
        self._lock = threading.Lock()
        self._waiting = 0
        self._draining = False

    # --- life cycle -------------------------------------------------------------------------------

    def load(self) -> None:
        """Build the Upscaler (the fast form, built or taken from the cache). Blocks; see :meth:`start`."""
        try:
            up = self._make_upscaler()
        except SRError as e:
            self.load_error = str(e)
            log.error("cannot load the model: %s", e)
            raise
        limits = up.backend.limits
        max_batch = self.config.max_batch if limits.max_batch is None else min(self.config.max_batch, limits.max_batch)
        self._batcher = TileBatcher(up.backend.run, max_batch=max_batch, window_s=self.config.batch_window_ms / 1e3,
                                    on_batch=self.metrics.batch_size.observe)
        self._upscaler = up
        self.model_info = up.describe_model()
        self._ready.set()
        log.info("ready: %s", self.model_info)

    def start(self) -> threading.Thread:
        """Load in a background thread, so health checks answer while the fast form is built."""
        thread = threading.Thread(target=self._load_quietly, name="sr-serve-load", daemon=True)
        thread.start()
        return thread

    def _load_quietly(self) -> None:
        try:
            self.load()
        except Exception as e:  # reported by /readyz and every request
            self.load_error = self.load_error or f"{type(e).__name__}: {e}"

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self._draining

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def drain(self) -> None:
        """Refuse new requests (readiness goes false); those admitted finish."""
        self._draining = True

    def close(self) -> None:
        self.drain()
        self._pool.shutdown(wait=True)
        if self._batcher is not None:
            self._batcher.close()
        if self._upscaler is not None:
            self._upscaler.close()

    # --- requests ---------------------------------------------------------------------------------

    def submit(self, body: bytes, output_format: str = "png") -> Job:
        """Admit one image (the file's bytes). Raises ServeError: 503 not ready / draining / queue full,
        413 too large, 415 not an image, 400 bad format name."""
        if output_format not in OUTPUT_FORMATS:
            raise ServeError(400, f"format must be one of {', '.join(sorted(set(OUTPUT_FORMATS)))}, got {output_format!r}")
        if self._draining:
            raise ServeError(503, "the server is shutting down", retry_after=5)
        if not self._ready.is_set():
            if self.load_error:
                raise ServeError(503, f"the model failed to load: {self.load_error}")
            raise ServeError(503, "the model is still loading", retry_after=5)
        if len(body) > self.config.max_body_bytes:
            raise ServeError(413, f"the body is {len(body)} bytes; the limit is {self.config.max_body_bytes}")
        width, height = _image_size(body)
        if width * height > self.config.max_pixels:
            raise ServeError(413, f"the image is {width}x{height} = {width * height} pixels; the limit is "
                                  f"{self.config.max_pixels}")
        if not self._slots.acquire(blocking=False):
            raise ServeError(503, "the queue is full; retry later", retry_after=1)
        job = Job()
        with self._lock:
            self._waiting += 1
            self.metrics.queue_depth.set(self._waiting)
        try:
            self._pool.submit(self._process, job, body, output_format)
        except RuntimeError:  # the pool is shut down
            self._release()
            raise ServeError(503, "the server is shutting down", retry_after=5) from None
        return job

    def _release(self) -> None:
        with self._lock:
            self._waiting -= 1
            self.metrics.queue_depth.set(self._waiting)
        self._slots.release()

    def _view(self):
        view = getattr(self._views, "upscaler", None)
        if view is None:
            view = self._views.upscaler = self._upscaler.with_model_fn(self._batcher.run)
        return view

    def _process(self, job: Job, body: bytes, output_format: str) -> None:
        try:
            if job.cancelled.is_set():
                raise Cancelled()
            content_type, suffix = OUTPUT_FORMATS[output_format]
            with tempfile.TemporaryDirectory(prefix="sr-serve-") as tmp:
                src, dst = Path(tmp) / "input", Path(tmp) / f"output{suffix}"
                src.write_bytes(body)
                try:
                    self._view().upscale_file(src, dst, progress=job.check)
                except InputError as e:
                    raise ServeError(400, str(e).replace(str(src), "the image")) from e
                job.future.set_result((dst.read_bytes(), content_type))
        except BaseException as e:
            job.future.set_exception(e)
        finally:
            self._release()

    def run(self, body: bytes, output_format: str = "png", *, timeout: float | None = None) -> tuple[bytes, str]:
        """Submit and wait (for in-process callers and the Ray deployment). Raises ServeError."""
        job = self.submit(body, output_format)
        started = time.monotonic()
        try:
            return job.future.result(timeout=timeout or self.config.timeout_s)
        except TimeoutError:
            job.cancel()
            raise ServeError(504, f"the request took longer than {time.monotonic() - started:.0f} s") from None
        except Cancelled:
            raise ServeError(499, "cancelled") from None


def _image_size(body: bytes) -> tuple[int, int]:
    """(width, height) from the image header, without decoding. Raises ServeError 415 for a non-image."""
    from PIL import Image, UnidentifiedImageError

    if not body:
        raise ServeError(400, "the body is empty; send the image file's bytes")
    try:
        with Image.open(io.BytesIO(body)) as im:
            return im.size
    except UnidentifiedImageError:
        raise ServeError(415, "the body is not an image this server reads (PNG, JPEG, WebP, TIFF, BMP)") from None
    except Image.DecompressionBombError as e:
        raise ServeError(413, f"the image is too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ServeError(400, f"the image header cannot be read ({e})") from None
