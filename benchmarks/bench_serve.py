"""``sr-bench serve``: what serving over HTTP costs and gains, measured on loopback.

Four ways to upscale the same mixed-size images, one row each per concurrency level:

- ``sr-serve, batching``: ``sr-serve`` started as its own process (the README's command, on a free
  port, default limits, a 5 ms batching window and batches of up to 4 tiles), driven by a closed loop of ``C`` clients: each sends its next request as
  soon as the last answer came back (keep-alive connections), ``requests`` each.
- ``sr-serve, no batching``: the same with ``--max-batch 1 --batch-window-ms 0`` (each request's tiles
  run on their own).
- ``Upscaler in-process``: the same images through :meth:`Upscaler.upscale_file` in this process, from
  and to files as the service does (decode, tile, run, encode): subtracted from the rows above, what
  HTTP, the queue and the batcher cost.
- ``sr-run per image``: one ``sr-run`` process per image, as a naive integration would call it (each
  pays Python start-up, imports and model load; the fast form comes from the cache).

Each row: images/s over the loop's wall time, p50/p95/p99 latency of one request (ms), errors and the
error rate. Requests that fail are counted, never retried. The rows run one after another on the same
machine; the first requests of each server (one per size) warm it up untimed.
"""

from __future__ import annotations

import http.client
import io
import logging
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import percentiles

__all__ = ["ServeRow", "make_images", "run_serve_bench", "write_serve", "DEFAULT_SIZES"]

log = logging.getLogger(__name__)

DEFAULT_SIZES = ((64, 64), (96, 128), (128, 192))
"""LR sizes (HxW) of the mixed load: a thumbnail, a small photo and a larger one."""


@dataclass
class ServeRow:
    mode: str
    concurrency: int
    requests: int
    errors: int
    wall_s: float
    images_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    error_kinds: dict[str, int]

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def make_images(sizes=DEFAULT_SIZES, per_size: int = 2) -> list[bytes]:
    """PNG files of photo crops (scikit-image's samples) at ``sizes``, ``per_size`` different crops each."""
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea()]
    out = []
    for i, (h, w) in enumerate(sizes):
        for j in range(per_size):
            photo = photos[(i + j) % len(photos)]
            y, x = (37 * j) % (photo.shape[0] - h), (53 * j) % (photo.shape[1] - w)
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(photo[y:y + h, x:x + w])).save(buf, format="PNG")
            out.append(buf.getvalue())
    return out


def _percentiles(latencies: list[float]) -> tuple[float | None, float | None, float | None]:
    """p50/p95/p99 in ms (:func:`benchmarks.common.percentiles`) of latencies in seconds; None without any."""
    if not latencies:
        return None, None, None
    p = percentiles([1000.0 * t for t in latencies])
    return round(p["p50"], 1), round(p["p95"], 1), round(p["p99"], 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(conn: http.client.HTTPConnection, body: bytes) -> int:
    conn.request("POST", "/v1/upscale", body=body, headers={"Content-Type": "application/octet-stream"})
    response = conn.getresponse()
    response.read()
    return response.status


class _Server:
    """``sr-serve`` in its own process on a free loopback port; stopped with SIGTERM."""

    def __init__(self, model: str, scale: int, extra: list[str], *, ready_timeout: float = 900.0) -> None:
        self.port = _free_port()
        cmd = [sys.executable, "-c", "import sys; from sr_runtime.serve_cli import main; sys.exit(main())",
               "--model", model, "--scale", str(scale), "--port", str(self.port), *extra]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"sr-serve exited with {self.proc.returncode}: {self.log.read().decode()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            time.sleep(0.5)
        self.close()
        raise RuntimeError(f"sr-serve was not ready within {ready_timeout:.0f} s")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def closed_loop(port: int, images: list[bytes], *, concurrency: int, requests: int, mode: str) -> ServeRow:
    """``concurrency`` clients, each sending ``requests`` requests back to back (image i+k of the list)."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            for i in range(requests):
                body = images[(k + i) % len(images)]
                t0 = time.perf_counter()
                try:
                    status = _post(conn, body)
                    kind = None if status == 200 else f"HTTP {status}"
                except (OSError, http.client.HTTPException) as e:
                    kind = type(e).__name__
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                elapsed = time.perf_counter() - t0
                with lock:
                    if kind is None:
                        latencies.append(elapsed)
                    else:
                        errors[kind] = errors.get(kind, 0) + 1
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    total = concurrency * requests
    return ServeRow(mode, concurrency, total, sum(errors.values()), round(wall, 2),
                    round(len(latencies) / wall, 2), *_percentiles(latencies), errors)


def in_process(model: str, scale: int, images: list[bytes], *, requests: int) -> ServeRow:
    """The same images through one Upscaler here, one after another, file to file as the service does."""
    from sr_runtime.upscaler import Upscaler

    latencies = []
    with tempfile.TemporaryDirectory(prefix="sr-bench-serve-") as tmp, Upscaler(model, scale=scale) as up:
        paths = []
        for i, body in enumerate(images):
            path = Path(tmp) / f"in{i}.png"
            path.write_bytes(body)
            paths.append(path)
        for path in paths:  # warm-up, one per image
            up.upscale_file(path, Path(tmp) / "out.png")
        started = time.perf_counter()
        for i in range(requests):
            t0 = time.perf_counter()
            up.upscale_file(paths[i % len(paths)], Path(tmp) / "out.png")
            latencies.append(time.perf_counter() - t0)
        wall = time.perf_counter() - started
    return ServeRow("Upscaler in-process", 1, requests, 0, round(wall, 2), round(requests / wall, 2),
                    *_percentiles(latencies), {})


def per_process(model: str, scale: int, images: list[bytes], *, requests: int) -> ServeRow:
    """One ``sr-run`` process per image (the console script beside this Python, else ``-m``)."""
    script = Path(sys.executable).with_name("sr-run")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "sr_runtime.cli"]
    latencies, errors = [], {}
    with tempfile.TemporaryDirectory(prefix="sr-bench-serve-") as tmp:
        started = time.perf_counter()
        for i in range(requests):
            src = Path(tmp) / f"in{i}.png"
            src.write_bytes(images[i % len(images)])
            t0 = time.perf_counter()
            done = subprocess.run([*base, str(src), "--model", model, "--scale", str(scale), "--quiet",
                                   "-o", str(Path(tmp) / f"out{i}.png")], capture_output=True)
            if done.returncode == 0:
                latencies.append(time.perf_counter() - t0)
            else:
                kind = f"exit {done.returncode}"
                errors[kind] = errors.get(kind, 0) + 1
                log.warning("sr-run failed: %s", done.stderr.decode(errors="replace")[-500:])
        wall = time.perf_counter() - started
    return ServeRow("sr-run per image", 1, requests, sum(errors.values()), round(wall, 2),
                    round(len(latencies) / wall, 2), *_percentiles(latencies), errors)


def run_serve_bench(model: str, scale: int, *, concurrency=(1, 4, 16), requests: int = 8,
                    sizes=DEFAULT_SIZES, per_process_requests: int = 4) -> dict[str, Any]:
    """Every row of the module docstring; returns ``{"rows": [...], "settings": {...}}``."""
    images = make_images(sizes)
    rows: list[ServeRow] = []
    workers = max(concurrency)
    # The queue holds what the workers do not: a closed loop at the highest concurrency is never refused.
    limits = ["--workers", "4", "--queue", str(workers)]
    for mode, extra in (("sr-serve, batching", ["--batch-window-ms", "5", "--max-batch", "4"]),
                        ("sr-serve, no batching", ["--max-batch", "1", "--batch-window-ms", "0"])):
        log.info("%s: starting sr-serve", mode)
        server = _Server(model, scale, limits + extra)
        try:
            closed_loop(server.port, images, concurrency=1, requests=len(images), mode="warm-up")
            for c in concurrency:
                row = closed_loop(server.port, images, concurrency=c, requests=requests, mode=mode)
                log.info("%s, concurrency %d: %.2f images/s, p95 %s ms, %d errors", mode, c, row.images_per_s,
                         row.p95_ms, row.errors)
                rows.append(row)
        finally:
            server.close()
    rows.append(in_process(model, scale, images, requests=requests * 2))
    if per_process_requests:
        rows.append(per_process(model, scale, images, requests=per_process_requests))
    settings = {"model": model, "scale": scale, "sizes": [f"{h}x{w}" for h, w in sizes],
                "images": len(images), "concurrency": list(concurrency), "requests_per_client": requests,
                "server": shlex.join(["sr-serve", "--model", model, "--scale", str(scale), *limits])}
    return {"rows": [{**asdict(r), "error_rate": round(r.error_rate, 4)} for r in rows], "settings": settings}


def _markdown(results: dict[str, Any], env_lines: list[str]) -> str:
    s = results["settings"]
    lines = [
        f"# sr-bench serve: {s['model']} x{s['scale']}",
        "",
        f"Mixed LR sizes {', '.join(s['sizes'])} ({s['images']} images), closed loop on loopback, "
        f"{s['requests_per_client']} requests per client; server: `{s['server']}`.",
        "",
        "| mode | concurrency | requests | images/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        def ms(v):
            return "-" if v is None else f"{v:.0f}"
        lines.append(f"| {r['mode']} | {r['concurrency']} | {r['requests']} | {r['images_per_s']:.2f} | "
                     f"{ms(r['p50_ms'])} | {ms(r['p95_ms'])} | {ms(r['p99_ms'])} | {r['errors']} "
                     f"({100 * r['error_rate']:.1f}%) |")
    lines += ["", "Machine:", "", *[f"- {line}" for line in env_lines], ""]
    return "\n".join(lines)


def _plot(results: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in dict.fromkeys(r["mode"] for r in results["rows"]):
        rows = [r for r in results["rows"] if r["mode"] == mode]
        xs = [r["concurrency"] for r in rows]
        style = "o-" if len(rows) > 1 else "s"
        a.plot(xs, [r["images_per_s"] for r in rows], style, label=mode)
        b.plot(xs, [r["p95_ms"] or np.nan for r in rows], style, label=mode)
    for ax, title in ((a, "throughput (images/s)"), (b, "p95 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    b.set_yscale("log")
    a.legend(fontsize=8)
    fig.suptitle(f"sr-serve, {results['settings']['model']} x{results['settings']['scale']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_serve(results: dict[str, Any], env: dict[str, Any], out: Path) -> list[Path]:
    """``OUT/serve.json``, ``OUT/serve.md`` and ``OUT/serve.png``, each written whole then renamed."""
    import json

    from benchmarks.tables import environment_lines
    from sr_runtime.atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "serve.json", out / "serve.md"]
    atomic_write_text(paths[0], json.dumps({**results, "environment": env}, indent=2) + "\n")
    atomic_write_text(paths[1], _markdown(results, environment_lines(env)))
    tmp = out / f".serve.{os.getpid()}.png"
    if _plot(results, tmp) is not None:
        os.replace(tmp, out / "serve.png")
        paths.append(out / "serve.png")
    return paths
