"""The public entry point: :class:`Upscaler` upscales arrays, tensors, image files and videos.

::

    from sr_runtime import Upscaler

    with Upscaler("fsrcnn", scale=2) as up:              # shipped weights, torch, CUDA if present
        img_hwc_u8 = up.upscale(img_hwc_u8)               # HWC uint8/uint16 -> same dtype, s x larger
        up.upscale_file("in.png", "out.png")              # 16-bit, gray and alpha kept
        up.upscale_video("in.mp4", "in_x2.mp4")           # audio copied, timestamps kept

Thread safety: calls on one Upscaler from several threads are serialised by a lock (safe, not
parallel); backends are not re-entrant. For parallel work use one Upscaler per thread (and device).
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sr_runtime.backends.base import Backend
from sr_runtime.errors import InputError
from sr_runtime.fastpath import load_backend
from sr_runtime.options import RuntimeOptions
from sr_runtime.tiling import (
    ProgressFn,
    balanced_tile,
    choose_tile_size,
    default_overlap,
    run_tiled_adaptive,
    tile_pixel_budget,
)

__all__ = ["Upscaler", "VideoResult", "ProgressFn"]

log = logging.getLogger(__name__)

_LUMA = (0.299, 0.587, 0.114)
"""Gray output from the model's (nearly equal) RGB channels: BT.601 luma, exact for equal channels."""
_CPU_MAX_TILE = 2048
"""Largest automatic tile on CPU. Whole frames up to this side run untiled when the memory budget
allows: on CPU, tiling a 720p frame cost FSRCNN 1.5x its whole-frame time (overlap recomputed,
smaller convolutions), and RAM is rarely the limit there."""
_CUDA_MAX_TILE = 1024


@dataclass(frozen=True)
class VideoResult:
    """What :meth:`Upscaler.upscale_video` did."""

    path: Path
    frames: int
    skipped_packets: int
    seconds: float
    width: int
    height: int


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 << 30


class Upscaler:
    """A super-resolution model ready to run, with tiling.

    Args:
        model: a shipped/trained model name (``"fsrcnn"``, ``"edsr"``...), a checkpoint
            (``.safetensors``), an ONNX file (``.onnx``), an OpenVINO IR (``.xml``) or a TensorRT
            engine (``.engine``); None for the best shipped model for ``scale``
            (:func:`sr_runtime.zoo.default_model`).
        scale: the upscaling factor; required with a model name, checked against files.
        options: how to run it (:class:`~sr_runtime.options.RuntimeOptions`: backend, device,
            precision, provider, compile, cuda_graphs, channels_last, runs_dir, cache_dir,
            use_cache). With ``backend="auto"`` (the default) a checkpoint runs in the fastest form
            that passes the parity gate on this machine, built once and cached
            (:mod:`sr_runtime.fastpath`); ``backend="torch"`` runs PyTorch eagerly.
        **runtime: the same fields as keywords, as a shorthand for ``options``
            (``Upscaler("fsrcnn", scale=2, backend="torch", device="cpu")``); an unknown name is an
            InputError naming the closest field. Give ``options`` or keywords, not both.
        tile: tile side in input pixels; None chooses from free memory (the whole image when it
            fits, else equal tiles as large as the budget allows); 0 turns tiling off.
        tile_overlap: context pixels around each tile; None for the model's receptive radius
            (:func:`sr_runtime.tiling.default_overlap`), which makes tiled equal whole-image output.
        batch: tiles (or video frames) per backend call; None: 4 on CUDA, 1 on CPU.
        memory_budget: bytes of working memory the automatic tile plans for; None: a quarter of the
            available RAM on CPU, half the free device memory on CUDA.

    The runtime options are one dataclass rather than a dozen keyword parameters so that the
    command line, the Upscaler and the backend factory share one definition of them; the keywords
    stay accepted because they are the shortest way to write a one-off choice.

    Raises BackendUnavailableError, EngineMismatchError, CheckpointError, InputError. Use as a
    context manager or call :meth:`close` to free device memory.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        scale: int | None = None,
        options: RuntimeOptions | None = None,
        tile: int | None = None,
        tile_overlap: int | None = None,
        batch: int | None = None,
        memory_budget: int | None = None,
        **runtime: Any,
    ) -> None:
        if options is not None and runtime:
            raise InputError(f"give options= or the keywords {', '.join(sorted(runtime))}, not both")
        self.options = options if options is not None else RuntimeOptions.from_keywords(runtime)
        if model is None:
            if scale is None:
                raise InputError("give a model (name or file) or a scale to pick the default model")
            from sr_runtime.zoo import default_model

            model = default_model(scale, runs_dir=self.options.runs_dir)
        if tile is not None and tile < 0:
            raise InputError(f"tile must be >= 0 (0 turns tiling off), got {tile}")
        if tile_overlap is not None and tile_overlap < 0:
            raise InputError(f"tile overlap must be >= 0, got {tile_overlap}")
        if batch is not None and batch < 1:
            raise InputError(f"batch must be >= 1, got {batch}")
        if memory_budget is not None and memory_budget < 1:
            raise InputError(f"memory budget must be a positive number of bytes, got {memory_budget}")
        self.memory_budget = memory_budget
        self.backend: Backend = load_backend(model, self.options, scale=scale)
        self.spec = self.backend.spec
        self.scale = self.spec.scale
        self.model_file: Path | None = self.backend.model_file
        """The file the model was resolved to, once (a name's best checkpoint, or the file given): what a
        video job's identity hashes and what worker processes load, so every part runs the same model."""
        self.device = self.backend.device
        self.tile = tile
        self.overlap = default_overlap(self.spec) if tile_overlap is None else tile_overlap
        limits = self.backend.limits
        if batch is None:
            batch = 4 if self.device.type == "cuda" else 1
            if limits.max_batch is not None:
                batch = min(batch, limits.max_batch)
            batch = max(batch, limits.min_batch)
        elif limits.max_batch is not None and not limits.min_batch <= batch <= limits.max_batch:
            self.backend.close()
            raise InputError(
                f"batch {batch} is outside what the {self.backend.name} model takes "
                f"[{limits.min_batch}, {limits.max_batch}]"
            )
        self.batch = batch
        self._fixed_tile: int | tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._model_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
        log.info(
            "upscaler: x%d, %s, tile %s, overlap %d px, batch %d",
            self.scale,
            self.backend.describe(),
            {None: "auto", 0: "off"}.get(tile, tile),
            self.overlap,
            self.batch,
        )

    # --- internals -------------------------------------------------------------------------------

    def _tile_for(self, height: int, width: int, frames: int = 1) -> tuple[int | tuple[int, int] | None, bool]:
        """(tile, exact) for an image of ``height`` x ``width``: what the user set, or from free memory.

        A backend with ``fixed_shape`` (torch.compile, CUDA graphs) gets one tile shape for the
        Upscaler's lifetime, chosen on the first image, with smaller images and edge tiles padded up
        to it (``exact``): a new shape would cost a recompile or a capture.
        """
        limits = self.backend.limits
        if limits.static_hw:
            return limits.max_hw, True
        if self.backend.fixed_shape and self.tile != 0:
            if self._fixed_tile is None:
                tile, _ = self._free_tile(height, width, whole_image_ok=False)
                if self.tile is None and isinstance(tile, int):  # no bigger than the first image needs
                    m = self.spec.multiple_of
                    tile = max(min(tile, -(-max(height, width) // m) * m), -(-self._min_size() // m) * m)
                self._fixed_tile = tile
                log.info("one tile shape for %s: %s px", self.backend.describe(), tile)
            return self._fixed_tile, True
        return self._free_tile(height, width)

    def _free_tile(
        self, height: int, width: int, *, whole_image_ok: bool = True
    ) -> tuple[int | tuple[int, int] | None, bool]:
        limits = self.backend.limits
        if self.tile == 0:
            return None, False
        if self.tile is not None:
            tile = self.tile
        else:
            element = 2 if self.backend.input_dtype == torch.float16 else 4
            cap = _CUDA_MAX_TILE if self.device.type == "cuda" else _CPU_MAX_TILE
            budget = self.default_memory_budget() if self.memory_budget is None else self.memory_budget
            if whole_image_ok:
                # The whole image when it fits the budget (no seams, no overlap work), else equal
                # tiles as large as the budget allows, chosen for the least recomputed overlap.
                max_pixels = min(
                    tile_pixel_budget(budget, scale=self.scale, element_size=element, batch=self.batch), cap * cap
                )
                return balanced_tile(
                    height, width, max_pixels=max_pixels, overlap=self.overlap, multiple_of=self.spec.multiple_of,
                    min_size=self._min_size(), max_hw=limits.max_hw,
                ), False
            tile = choose_tile_size(
                budget,
                scale=self.scale,
                element_size=element,
                batch=self.batch,
                multiple_of=self.spec.multiple_of,
                min_size=self.spec.min_size,
                overlap=self.overlap,
                max_tile=cap,
                budget_fraction=1.0,
            )
        if limits.max_hw is not None:
            return (min(tile, limits.max_hw[0]), min(tile, limits.max_hw[1])), False
        return tile, False

    def default_memory_budget(self) -> int:
        """Bytes the automatic tile plans for when no ``memory_budget`` is given: half the free GPU
        memory on CUDA, a quarter of the available RAM on CPU."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return free // 2
        return _available_ram() // 4

    def _min_size(self) -> int:
        limits = self.backend.limits
        if limits.static_hw:  # every tile has exactly that (maybe not square) shape: no side may be refused
            return min(limits.min_hw)
        return max(self.spec.min_size, *limits.min_hw)

    def _prepare(self, peak: float | None) -> Callable[[torch.Tensor], torch.Tensor]:
        dtype = self.backend.input_dtype

        def prepare(raw: torch.Tensor) -> torch.Tensor:
            x = raw.to(torch.float32) / peak if peak is not None else raw
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            return x.to(dtype)

        return prepare

    def _run(
        self,
        lr: torch.Tensor,
        write,
        *,
        peak: float | None,
        progress: ProgressFn | None = None,
    ) -> None:
        """Run the backend tiled over ``lr`` (N, C, H, W) on the device; crops go to ``write``."""
        tile, exact = self._tile_for(lr.shape[-2], lr.shape[-1])
        with torch.inference_mode():
            self._run_plan(lr, write, tile, exact, peak, progress)

    def _run_plan(self, lr, write, tile, exact, peak, progress) -> None:
        run_tiled_adaptive(
            lr,
            self._model_fn or self.backend.run,
            scale=self.scale,
            write=write,
            tile=tile,
            overlap=self.overlap,
            multiple_of=self.spec.multiple_of,
            min_size=self._min_size(),
            exact=exact,
            batch=self.batch,
            fixed_batch=self.backend.fixed_batch or self.backend.limits.static_batch,
            prepare=self._prepare(peak),
            progress=progress,
        )

    def _upscale_alpha(self, alpha: torch.Tensor, out: torch.Tensor, peak: float) -> None:
        """Bicubic (MATLAB) upscaling of (N, 1, H, W) integer alpha into ``out`` (N, sH, sW), tiled."""
        from sr_runtime.resize import upscale_bicubic

        def write(index, box, crop):
            y0, y1, x0, x1 = box
            out[index, y0:y1, x0:x1] = crop[0].clamp(0, 1).mul(peak).round().to(out.dtype)

        tile, _ = self._tile_for(alpha.shape[-2], alpha.shape[-1])
        with torch.inference_mode():
            run_tiled_adaptive(
                alpha,
                lambda t: upscale_bicubic(t, self.scale),
                scale=self.scale,
                write=write,
                tile=tile if not isinstance(tile, tuple) else max(tile),
                overlap=4,
                batch=self.batch,
                prepare=lambda t: t.to(torch.float32) / peak,
            )

    # --- public API ------------------------------------------------------------------------------

    def describe_model(self) -> dict:
        """What runs, for a service's ``/v1/models`` and logs: the model file, architecture and scale, the
        backend, device and precision, and (when the fast path chose the form) the form and its parity."""
        from sr_runtime.checkpoint import read_metadata
        from sr_runtime.errors import CheckpointError

        info = {"scale": self.scale, "model_file": str(self.model_file) if self.model_file else None,
                "backend": self.backend.name, "device": str(self.device), "precision": self.backend.precision,
                "runs": self.backend.describe()}
        if self.model_file is not None and self.model_file.suffix == ".safetensors":
            try:
                meta = read_metadata(self.model_file)
                info["name"], metrics = meta.get("arch"), meta.get("metrics") or {}
                if metrics.get("val_psnr") is not None:
                    info["validation"] = {"set": metrics.get("val_name"), "psnr_db": metrics["val_psnr"]}
            except CheckpointError:  # a community file without our metadata: the rest still describes it
                pass
        info.setdefault("name", self.model_file.stem if self.model_file else None)
        if self.backend.fast_path:
            info.update(self.backend.fast_path)
        else:
            info["form"] = f"{self.backend.name}-{self.device.type}-{self.backend.precision}"
            info["parity_db"] = None
        return info

    def with_model_fn(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Upscaler:
        """A view of this Upscaler (same backend, tiling and settings, its own lock) whose model calls go
        to ``fn`` instead of the backend: a service runs one view per thread with ``fn`` batching the
        tiles of concurrent requests (:class:`sr_runtime.serve.batcher.TileBatcher`). Close the original,
        not the views."""
        view = copy.copy(self)
        view._lock = threading.Lock()
        view._model_fn = fn
        return view

    def upscale(self, image: np.ndarray | torch.Tensor, *, progress: ProgressFn | None = None):
        """Upscale one image.

        ``image``: a numpy array HxW, HxWx1 (gray), HxWx3 (RGB) or HxWx4 (RGBA) of uint8 or uint16
        -> an array of the same dtype and channel layout, ``scale`` times larger (gray is run as
        three equal channels and written back as one; alpha is upscaled bicubically). Or a float
        tensor (N, 3|1, H, W) in [0, 1] on any device -> (N, 3|1, sH, sW) of the same dtype on the
        same device. ``progress(done, total)`` counts tiles. Raises InputError for other inputs.
        """
        if isinstance(image, torch.Tensor):
            return self._upscale_tensor(image, progress)
        pixels, alpha = _split_channels(image)
        out_pixels, out_alpha = self._upscale_pixels(pixels, alpha, progress)
        if out_alpha is not None:
            return np.concatenate([out_pixels, out_alpha[:, :, None]], axis=2)
        return out_pixels.reshape(out_pixels.shape[:2]) if np.asarray(image).ndim == 2 else out_pixels

    def _upscale_tensor(self, lr: torch.Tensor, progress: ProgressFn | None) -> torch.Tensor:
        if lr.ndim != 4 or lr.shape[1] not in (1, 3) or not lr.is_floating_point():
            raise InputError(f"expected a float (N, 3|1, H, W) tensor in [0, 1], got {lr.dtype} {tuple(lr.shape)}")
        n, c, h, w = lr.shape
        s = self.scale
        with self._lock:
            x = lr.to(self.device)
            out = torch.empty((n, c, h * s, w * s), dtype=lr.dtype, device=self.device)

            def write(index, box, crop):
                y0, y1, x0, x1 = box
                if c == 1:
                    crop = _to_gray(crop)
                out[index, :, y0:y1, x0:x1] = crop.to(out.dtype)

            self._run(x, write, peak=None, progress=progress)
        return out.to(lr.device)

    def _upscale_pixels(
        self, pixels: np.ndarray, alpha: np.ndarray | None, progress: ProgressFn | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """HxWxC (C = 1 or 3) uint8/uint16 (+ HxW alpha) -> the same, upscaled. Quantized on the device."""
        dtype = pixels.dtype
        peak = 255.0 if dtype == np.uint8 else 65535.0
        torch_dtype = torch.uint8 if dtype == np.uint8 else torch.uint16
        h, w, c = pixels.shape
        s = self.scale
        with self._lock:
            lr = _tensor(pixels).to(self.device).permute(2, 0, 1)[None]
            out = torch.empty((1, h * s, w * s, c), dtype=torch_dtype, device=self.device)

            def write(index, box, crop):
                y0, y1, x0, x1 = box
                if c == 1:
                    crop = _to_gray(crop)
                q = crop.to(torch.float32).clamp(0, 1).mul(peak).round()
                out[index, y0:y1, x0:x1, :] = q.permute(1, 2, 0).to(torch_dtype)

            self._run(lr, write, peak=peak, progress=progress)
            out_alpha = None
            if alpha is not None:
                a = _tensor(alpha).to(self.device)[None, None]
                alpha_out = torch.empty((1, h * s, w * s), dtype=torch_dtype, device=self.device)
                self._upscale_alpha(a, alpha_out, peak)
                out_alpha = alpha_out[0].cpu().numpy()
            return out[0].cpu().numpy(), out_alpha

    def upscale_file(
        self,
        src: str | os.PathLike,
        dst: str | os.PathLike,
        *,
        quality: int | None = None,
        progress: ProgressFn | None = None,
    ) -> Path:
        """Read ``src`` (PNG, JPEG, WebP, TIFF, BMP; 8/16-bit; gray; alpha; EXIF orientation applied),
        upscale it, write ``dst`` atomically in the format of its extension; returns ``dst``.

        16-bit input gives 16-bit output where the format holds it (PNG, TIFF); for JPEG/WebP/BMP
        output it is reduced to 8 bits, and alpha is dropped for JPEG, each with a warning.
        ``quality`` (1-100) applies to JPEG and WebP. Raises InputError naming the file.
        """
        from sr_runtime.images import read_image, write_image

        src, dst = Path(src), Path(dst)
        img = read_image(src)
        pixels, alpha = self._upscale_pixels(img.pixels, img.alpha, progress)
        fmt = dst.suffix.lower()
        if pixels.dtype == np.uint16 and fmt not in (".png", ".tif", ".tiff"):
            log.warning("%s: %s holds 8 bits only; writing the 16-bit result as 8-bit", dst.name, fmt)
            pixels = _to_u8(pixels)
            alpha = _to_u8(alpha) if alpha is not None else None
        if alpha is not None and fmt in (".jpg", ".jpeg"):
            log.warning("%s: JPEG has no alpha channel; the alpha of %s is dropped", dst.name, src.name)
            alpha = None
        return write_image(dst, pixels, alpha=alpha, quality=quality, icc_profile=img.icc_profile, exif=img.exif)

    def upscale_video(
        self,
        src: str | os.PathLike,
        dst: str | os.PathLike,
        *,
        codec: str = "libx264",
        crf: int | None = 18,
        preset: str | None = None,
        pix_fmt: str | None = None,
        progress: ProgressFn | None = None,
    ) -> VideoResult:
        """Upscale every frame of ``src`` into ``dst`` (container from its extension).

        Decoding and encoding run in their own threads with bounded queues (pinned host buffers on
        CUDA), frames go through the model ``batch`` at a time. Audio and subtitle streams are
        copied packet for packet; each frame keeps its timestamp (variable frame rate too) and the
        colour metadata and display matrix (phone rotation) are carried over. A write error (disk
        full, permission) stops the job within a batch or two of the frame that met it.
        ``codec``: ``libx264``, ``libx265``, ``h264_nvenc``, ``hevc_nvenc``... (checked before
        anything is written); ``pix_fmt`` None keeps the input's
        when the encoder takes it (else ``yuv420p``); odd output sides are cropped by one pixel for
        4:2:0/4:2:2 formats, with a warning. ``progress(done, total)`` counts frames (total 0 when
        the container does not say). Nothing is left at ``dst`` on failure or Ctrl-C.
        Raises InputError, VideoError.
        """
        from sr_runtime.video.pipeline import upscale_video
        from sr_runtime.video.writer import Encoding

        return upscale_video(self, src, dst, encoding=Encoding(codec, crf, preset, pix_fmt), progress=progress)

    def run_tiled(
        self, lr: torch.Tensor, write: Callable, *, peak: float | None, progress: ProgressFn | None = None
    ) -> None:
        """Run the model over ``lr`` (N, C, H, W; C = 1 or 3) on :attr:`device`, tiled as for an image.

        ``lr`` holds integer samples in [0, ``peak``] (255.0 for uint8, 65535.0 for uint16) or, with
        ``peak`` None, floats in [0, 1]. Each output crop, (3, h, w) in the backend's float dtype on
        the device, goes to ``write(index, box, crop)``: ``index`` is the image in the batch, ``box``
        = ``(y0, y1, x0, x1)`` its place in the ``scale`` times larger output; values may stray
        outside [0, 1] (clamp when quantizing). The building block of the video pipeline
        (:mod:`sr_runtime.video.pipeline`); calls from several threads are serialised.
        """
        with self._lock:
            self._run(lr, write, peak=peak, progress=progress)

    def close(self) -> None:
        """Free the backend (device memory, sessions, engines). Idempotent."""
        self.backend.close()

    def __enter__(self) -> Upscaler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Upscaler x{self.scale} {self.backend.describe()}>"


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor sharing ``array``'s memory where it can. A read-only array (``np.asarray`` of a PIL
    image is one) is copied: torch cannot share memory it may not write, and warns if asked to."""
    array = np.ascontiguousarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _split_channels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    arr = np.asarray(image)
    if arr.dtype not in (np.uint8, np.uint16):
        raise InputError(f"expected a uint8 or uint16 image array, got {arr.dtype}; use upscale(tensor) for floats")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {arr.shape}")
    if arr.shape[2] in (2, 4):
        return arr[:, :, :-1], arr[:, :, -1]
    return arr, None


def _to_gray(crop: torch.Tensor) -> torch.Tensor:
    # Python-scalar weights: building a weight tensor here would upload it to the GPU once per tile.
    r, g, b = _LUMA
    return (crop[0:1] * r + crop[1:2] * g + crop[2:3] * b)


def _to_u8(arr: np.ndarray) -> np.ndarray:
    return np.round(arr.astype(np.float32) / 257.0).astype(np.uint8)
