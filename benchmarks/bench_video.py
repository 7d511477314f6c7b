"""End-to-end video throughput beside its parts, so the pipeline's overhead is visible.

* pipeline: :meth:`sr_runtime.upscaler.Upscaler.upscale_video` (what ``sr-run in.mp4`` runs:
  decode thread, tiled/batched inference, encode thread with libx264, audio copy), timed from the
  call to the renamed output file; the model load is not included;
* inference: the same backend on the same decoded frames, already tensors on the device, whole
  frames, batch 1 (the model alone);
* encode: :class:`sr_runtime.video.writer.VideoWriter` (PyAV libx264, the pipeline's settings) fed the
  clip's frames resized to the output size (bicubic), already in memory;
* decode: :class:`sr_runtime.video.reader.VideoReader` over the clip.

The clip is the first ``frames`` frames of a video (re-encoded losslessly-ish, crf 0, into the
work folder, so every stage sees the same frames) or a synthetic moving pattern.
"""

from __future__ import annotations

import logging
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.bench_backends import Form, ModelUnderTest
from benchmarks.common import device_sync

__all__ = ["make_clip", "synthetic_frames", "bench_video", "PIPELINE_CODEC", "PIPELINE_CRF"]

log = logging.getLogger(__name__)

PIPELINE_CODEC = "libx264"
PIPELINE_CRF = 18
"""Upscaler.upscale_video's defaults (and sr-run's), used for the encode-only figure too."""


def synthetic_frames(frames: int, height: int, width: int) -> list[np.ndarray]:
    """A moving colour gradient with a sliding square: HWC uint8 frames with motion and edges."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for t in range(frames):
        r = 127 + 120 * np.sin((xx + 4 * t) / 17.0)
        g = 127 + 120 * np.sin((yy - 3 * t) / 23.0)
        b = 127 + 120 * np.sin((xx + yy + 5 * t) / 31.0)
        img = np.stack([r, g, b], axis=-1)
        side = max(4, min(height, width) // 4)
        top = (7 * t) % max(1, height - side)
        left = (11 * t) % max(1, width - side)
        img[top : top + side, left : left + side] = 255 - img[top : top + side, left : left + side]
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _encode_clip(frames: list[np.ndarray], path: Path, rate: Fraction) -> Path:
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_clip(source: str | Path | None, frames: int, workdir: Path, *, size: tuple[int, int] | None = None) -> tuple[Path, str]:
    """A short clip of ``frames`` frames in ``workdir``: the start of ``source`` (a video file), or
    synthetic frames when ``source`` is None. ``size`` (h, w) resizes (source) or sets (synthetic)
    the frame size; synthetic defaults to 180x320. Returns (clip path, description)."""
    if source is None:
        h, w = size or (180, 320)
        imgs = synthetic_frames(frames, h, w)
        return _encode_clip(imgs, Path(workdir) / "clip_synthetic.mp4", Fraction(25)), "synthetic"
    from sr_runtime.video import VideoReader, probe_video

    info = probe_video(source)
    imgs = []
    with VideoReader(source) as reader:
        for img, _ in reader:
            imgs.append(img)
            if len(imgs) >= frames:
                break
    if size is not None and (imgs[0].shape[0], imgs[0].shape[1]) != tuple(size):
        imgs = [np.asarray(Image.fromarray(im).resize((size[1], size[0]), Image.BICUBIC)) for im in imgs]
    rate = info.rate or Fraction(25)
    clip = _encode_clip(imgs, Path(workdir) / f"clip_{Path(source).stem}.mp4", rate)
    return clip, f"{Path(source).name}, first {len(imgs)} frames"


def _decode_all(clip: Path) -> tuple[list[np.ndarray], float]:
    from sr_runtime.video import VideoReader

    start = time.perf_counter()
    with VideoReader(clip) as reader:
        imgs = [img for img, _ in reader]
    return imgs, time.perf_counter() - start


def _encode_fps(frames: list[np.ndarray], workdir: Path, rate: Fraction) -> float:
    from sr_runtime.video import FrameInfo, VideoWriter

    h, w = frames[0].shape[:2]
    dst = Path(workdir) / "encode_only.mp4"
    infos = [FrameInfo(i, i, Fraction(1, int(rate))) for i in range(len(frames))]
    start = time.perf_counter()
    with VideoWriter(dst, width=w, height=h, rate=rate, time_base=Fraction(1, int(rate)),
                     codec=PIPELINE_CODEC, pix_fmt="yuv420p", crf=PIPELINE_CRF) as writer:
        for img, info in zip(frames, infos):
            writer.write([img], [info])
        writer.close()
    seconds = time.perf_counter() - start
    dst.unlink(missing_ok=True)
    return len(frames) / seconds


def _upscaler_model(mut: ModelUnderTest, form: Form, artifacts) -> tuple[str, dict[str, Any]]:
    if form.backend.startswith("default"):  # the runtime's default path: what sr-run does
        return str(mut.checkpoint), {"backend": "auto", "device": form.device}
    if form.backend == "torch":
        return str(mut.checkpoint), {"backend": "torch", "device": form.device, "precision": form.precision}
    path = artifacts.files.get((form.backend, form.precision))
    if path is None:
        raise FileNotFoundError(f"no {form.backend} {form.precision} artifact")
    kw: dict[str, Any] = {"backend": form.backend, "device": form.device, "precision": form.precision}
    if form.backend == "onnxruntime":
        kw["provider"] = "cpu" if form.device == "cpu" else "cuda"
    return str(path), kw


def bench_video(
    mut: ModelUnderTest,
    form: Form,
    artifacts,
    clip: Path,
    clip_label: str,
    workdir: Path,
    *,
    tile: int | None = None,
) -> dict[str, Any]:
    """One video row (see VIDEO_FIELDS) for ``mut`` in ``form`` on ``clip``."""
    from sr_runtime.upscaler import Upscaler
    from sr_runtime.video import probe_video

    info = probe_video(clip)
    rate = info.rate or Fraction(25)
    frames, decode_s = _decode_all(clip)
    n = len(frames)
    model, kw = _upscaler_model(mut, form, artifacts)
    dst = Path(workdir) / f"video_{mut.model}_x{mut.scale}_{form.backend}_{form.precision}.mp4"
    with Upscaler(model, scale=mut.scale, tile=tile, **kw) as up:
        result = up.upscale_video(clip, dst, codec=PIPELINE_CODEC, crf=PIPELINE_CRF)
        backend = up.backend
        if form.backend.startswith("default"):
            form = Form(f"default:{backend.name}", backend.precision, form.device)
        sync = device_sync(str(backend.device))
        tensors = [
            torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1)))[None].to(backend.device).to(backend.input_dtype) / 255
            for f in frames
        ]
        with torch.inference_mode():
            backend.run(tensors[0])  # warm-up, as the pipeline's first frame was
            sync()
            start = time.perf_counter()
            for x in tensors:
                backend.run(x)
            sync()
            infer_s = time.perf_counter() - start
        del tensors
    # Encode-only input: the clip's frames at the output size (bicubic, cheap), so x264 sees the
    # same motion and detail level as in the pipeline.
    out_h, out_w = result.height, result.width
    outputs = [np.asarray(Image.fromarray(f).resize((out_w, out_h), Image.BICUBIC)) for f in frames]
    encode_fps = _encode_fps(outputs, workdir, rate)
    dst.unlink(missing_ok=True)
    row = {
        "model": mut.model,
        "scale": mut.scale,
        "weights": mut.weights,
        "backend": form.backend,
        "precision": form.precision,
        "device": form.device,
        "clip": clip_label,
        "frames": result.frames,
        "input_h": info.height,
        "input_w": info.width,
        "output_h": out_h,
        "output_w": out_w,
        "pipeline_fps": result.frames / result.seconds,
        "inference_fps": n / infer_s,
        "encode_fps": encode_fps,
        "decode_fps": n / decode_s,
        "pipeline_s": result.seconds,
    }
    row["serial_bound_fps"] = 1.0 / (1.0 / row["inference_fps"] + 1.0 / encode_fps)
    row["pipeline_vs_min"] = row["pipeline_fps"] / min(row["inference_fps"], encode_fps)
    row["pipeline_vs_serial"] = row["pipeline_fps"] / row["serial_bound_fps"]
    log.info(
        "video %s x%d %s %dx%d, %d frames: pipeline %.2f fps, inference %.2f fps, encode %.2f fps, decode %.1f fps",
        mut.model, mut.scale, form, info.width, info.height, n, row["pipeline_fps"], row["inference_fps"],
        row["encode_fps"], row["decode_fps"],
    )
    return row
