"""``sr-serve`` as a user starts it: a real process, curl's request, the same bytes as ``sr-run``, SIGTERM."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")


def _free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
def served(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sr_runtime.serve_cli", "--model", "fsrcnn", "--scale", "4", "--port", str(port),
         "--backend", "torch", "--runs-dir", str(tmp_path / "no_runs")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # a guard far above the seconds a start takes
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read()
    yield proc, url
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_a_posted_png_comes_back_4x_equal_to_sr_run(served, tmp_path, photo_rgb_u8):
    proc, url = served
    src = tmp_path / "img.png"
    Image.fromarray(photo_rgb_u8[100:160, 200:280].copy()).save(src)
    curl = subprocess.run(["curl", "-sf", "--data-binary", f"@{src}", url + "/v1/upscale", "-o",
                           str(tmp_path / "served.png")], capture_output=True, timeout=300) if _has_curl() else None
    if curl is None:
        (tmp_path / "served.png").write_bytes(httpx.post(url + "/v1/upscale", content=src.read_bytes(), timeout=300).content)
    else:
        assert curl.returncode == 0, curl.stderr
    run = subprocess.run([sys.executable, "-m", "sr_runtime.cli", str(src), "--model", "fsrcnn", "--scale", "4",
                          "--backend", "torch", "-o", str(tmp_path / "ran.png")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    served_img = np.asarray(Image.open(tmp_path / "served.png"))
    assert served_img.shape == (240, 320, 3)
    assert np.array_equal(served_img, np.asarray(Image.open(tmp_path / "ran.png")))
    for route in ("/healthz", "/readyz", "/metrics", "/v1/models"):
        assert httpx.get(url + route).status_code == 200, route


def test_sigterm_finishes_requests_in_flight_then_refuses_and_exits(served, photo_rgb_u8):
    import io

    proc, url = served
    buf = io.BytesIO()
    Image.fromarray(photo_rgb_u8[:384, :384].copy()).save(buf, "PNG")  # about a second of work on torch
    with cf.ThreadPoolExecutor(2) as ex:
        inflight = [ex.submit(httpx.post, url + "/v1/upscale", content=buf.getvalue(), timeout=300) for _ in range(2)]
        time.sleep(0.5)  # both admitted
        proc.send_signal(signal.SIGTERM)
        assert [f.result().status_code for f in inflight] == [200, 200]
    # uvicorn re-raises the signal once it has drained, so the process ends "terminated by SIGTERM"
    assert proc.wait(timeout=120) in (0, -signal.SIGTERM)
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/healthz", timeout=5)


def test_a_model_that_cannot_be_found_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sr_runtime.serve_cli", "--model", "nothere.onnx",
                           "--port", str(_free_port())], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "sr-serve: error: nothere.onnx: model file not found"
    assert "Traceback" not in done.stderr


def _has_curl() -> bool:
    return any(os.access(os.path.join(d, "curl"), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep))


def test_the_batching_window_defaults_to_waiting_only_on_a_gpu(monkeypatch):
    import torch

    from sr_runtime.serve_cli import batch_window_ms, build_parser

    assert build_parser().parse_args([]).batch_window_ms is None  # resolved at start, from where the model runs
    assert batch_window_ms(None, "cpu") == 0.0 and batch_window_ms(None, "cuda:1") == 5.0
    assert batch_window_ms(2.5, "cpu") == 2.5  # an explicit window is kept
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert batch_window_ms(None, None) == 0.0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert batch_window_ms(None, None) == 5.0
