"""sr-serve in-process: real HTTP on loopback (uvicorn in a thread), the shipped FSRCNN x4 on eager torch.

Each guard has a test that fails without it: the batcher really batches, the queue bound refuses with
503 instead of hanging, bad bodies are 4xx and the server keeps serving, the token is checked, a client
that goes away cancels its work, memory does not grow with requests.
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import socket
import threading
import time

import numpy as np
import pytest
import torch

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")

from PIL import Image  # noqa: E402

from sr_runtime import Upscaler  # noqa: E402
from sr_runtime.serve import ServeConfig, UpscaleService, create_app  # noqa: E402
from sr_runtime.serve.batcher import TileBatcher  # noqa: E402

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


class Server:
    """uvicorn serving ``create_app(service)`` on a free loopback port, in a thread."""

    def __init__(self, service: UpscaleService, token: str | None = TOKEN) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.service = service
        config = uvicorn.Config(create_app(service, token=token), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 300  # a guard far above the few seconds loading takes
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server never became ready")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def _service(**config) -> UpscaleService:
    return UpscaleService(lambda: Upscaler("fsrcnn", scale=4, backend="torch"), ServeConfig(**config))


@pytest.fixture(scope="module")
def server():
    with Server(_service(workers=4, queue_size=64)) as s:
        yield s


def test_upscale_returns_what_the_upscaler_writes_and_the_probes_answer(server, photo_rgb_u8, tmp_path):
    src = tmp_path / "img.png"
    Image.fromarray(photo_rgb_u8[:48, :64].copy()).save(src)
    r = httpx.post(server.url + "/v1/upscale", content=src.read_bytes(), headers=AUTH, timeout=120)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    got = np.asarray(Image.open(io.BytesIO(r.content)))
    with Upscaler("fsrcnn", scale=4, backend="torch") as up:
        up.upscale_file(src, tmp_path / "img_x4.png")
    assert np.array_equal(got, np.asarray(Image.open(tmp_path / "img_x4.png")))
    jpeg = httpx.post(server.url + "/v1/upscale?format=jpeg", content=src.read_bytes(), headers=AUTH, timeout=120)
    assert jpeg.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(jpeg.content)).size == (256, 192)
    assert httpx.get(server.url + "/healthz").status_code == 200
    models = httpx.get(server.url + "/v1/models", headers=AUTH).json()["models"]
    (model,) = models
    assert (model["name"], model["scale"], model["form"]) == ("fsrcnn", 4, "torch-cpu-fp32")
    assert model["model_file"].endswith("fsrcnn_x4.safetensors") and model["validation"]["set"] == "Set5"
    metrics = httpx.get(server.url + "/metrics", headers=AUTH).text
    assert 'sr_requests_total{status="200"}' in metrics and "sr_request_seconds_bucket" in metrics
    assert "sr_queue_depth" in metrics and "sr_batch_size_bucket" in metrics


@pytest.mark.parametrize("body, status", [
    (b"", 400),
    (b"not an image at all", 415),
    (_png((np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8))[:1500], 400),  # truncated:
    # the header reads, the pixels do not
])
def test_bad_bodies_are_4xx_and_the_server_keeps_serving(server, body, status):
    r = httpx.post(server.url + "/v1/upscale", content=body, headers=AUTH, timeout=60)
    assert r.status_code == status and "error" in r.json()
    ok = httpx.post(server.url + "/v1/upscale", content=_png(np.full((16, 16, 3), 90, np.uint8)), headers=AUTH,
                    timeout=60)
    assert ok.status_code == 200


def test_a_wrong_or_missing_token_is_401(server):
    body = _png(np.full((8, 8, 3), 50, np.uint8))
    assert httpx.post(server.url + "/v1/upscale", content=body).status_code == 401
    assert httpx.post(server.url + "/v1/upscale", content=body,
                      headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(server.url + "/v1/models").status_code == 401
    assert httpx.get(server.url + "/healthz").status_code == 200  # probes need no token


def test_sizes_over_the_limits_are_413():
    with Server(_service(max_body_bytes=2000, max_pixels=32 * 32)) as s:
        big_pixels = _png(np.zeros((40, 40, 3), np.uint8))  # small file, too many pixels
        assert len(big_pixels) < 2000
        assert httpx.post(s.url + "/v1/upscale", content=big_pixels, headers=AUTH).status_code == 413
        noisy = _png((np.random.default_rng(0).random((30, 30, 3)) * 255).astype(np.uint8))
        assert len(noisy) > 2000
        assert httpx.post(s.url + "/v1/upscale", content=noisy, headers=AUTH).status_code == 413


def test_sixteen_clients_twenty_requests_each_no_error_and_bounded_memory(server, photo_rgb_u8):
    import resource

    sizes = [(24, 32), (32, 32), (40, 24)]
    bodies = [_png(photo_rgb_u8[:h, :w].copy()) for h, w in sizes]

    def client(i: int) -> list[int]:
        with httpx.Client(timeout=300) as c:
            return [c.post(server.url + "/v1/upscale", content=bodies[(i + k) % 3], headers=AUTH).status_code
                    for k in range(20)]

    def rss_kib() -> int:
        return int(open("/proc/self/statm").read().split()[1]) * (resource.getpagesize() // 1024)

    with cf.ThreadPoolExecutor(16) as ex:  # warm-up: allocators and caches reach their working size
        assert {c for codes in ex.map(client, range(16)) for c in codes} == {200}
    before = rss_kib()
    for _ in range(3):  # 3 x 320 requests
        with cf.ThreadPoolExecutor(16) as ex:
            assert {c for codes in ex.map(client, range(16)) for c in codes} == {200}
    assert rss_kib() < before * 1.10, (before, rss_kib())


def test_an_overfull_queue_answers_503_with_retry_after_never_hangs(photo_rgb_u8):
    release = threading.Event()
    service = UpscaleService(lambda: Upscaler("fsrcnn", scale=4, backend="torch"), ServeConfig(workers=1, queue_size=1))
    with Server(service) as s:
        real = service._batcher._run_fn
        service._batcher._run_fn = lambda x: (release.wait(60), real(x))[1]
        body = _png(photo_rgb_u8[:16, :16].copy())
        with cf.ThreadPoolExecutor(2) as ex:
            held = [ex.submit(httpx.post, s.url + "/v1/upscale", content=body, headers=AUTH, timeout=120)
                    for _ in range(2)]
            deadline = time.monotonic() + 60
            while service.metrics.queue_depth._value.get() < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            started = time.monotonic()
            refused = httpx.post(s.url + "/v1/upscale", content=body, headers=AUTH, timeout=30)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert time.monotonic() - started < 10  # refused at once, not queued behind the held ones
            release.set()
            assert [f.result().status_code for f in held] == [200, 200]


def test_a_client_that_disconnects_cancels_its_work(photo_rgb_u8):
    calls = []
    delay = {"s": 0.0}
    service = UpscaleService(lambda: Upscaler("fsrcnn", scale=4, backend="torch", tile=32),
                             ServeConfig(workers=1, queue_size=0))
    with Server(service) as s:
        real = service._batcher._run_fn

        def counted(x):
            calls.append(1)
            time.sleep(delay["s"])
            return real(x)

        service._batcher._run_fn = counted
        body = _png(photo_rgb_u8[:96, :96].copy())
        assert httpx.post(s.url + "/v1/upscale", content=body, headers=AUTH, timeout=120).status_code == 200
        tiles, calls[:] = len(calls), []
        assert tiles >= 4
        delay["s"] = 1.0  # each tile now takes a second; the client gives up after about one
        with pytest.raises(httpx.TimeoutException):
            httpx.post(s.url + "/v1/upscale", content=body, headers=AUTH, timeout=1.5)
        deadline = time.monotonic() + 60
        while service.metrics.queue_depth._value.get() > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.metrics.queue_depth._value.get() == 0
        assert len(calls) < tiles  # stopped between tiles, not run to the end
        delay["s"] = 0.0
        ok = httpx.post(s.url + "/v1/upscale", content=_png(photo_rgb_u8[:16, :16].copy()), headers=AUTH, timeout=60)
        assert ok.status_code == 200


def test_the_batcher_runs_equal_shapes_from_several_callers_as_one_call():
    seen = []

    def run(x):
        seen.append(x.shape[0])
        return x * 2

    batcher = TileBatcher(run, max_batch=4, window_s=0.5)
    xs = [torch.full((1, 3, 8, 8), float(i)) for i in range(4)] + [torch.ones(1, 3, 8, 12)]
    with cf.ThreadPoolExecutor(5) as ex:
        outs = list(ex.map(batcher.run, xs))
    batcher.close()
    assert all(torch.equal(o, x * 2) for o, x in zip(outs, xs))  # each caller gets its own rows back
    assert sorted(seen) == [1, 4]  # four equal shapes in one call, the odd shape alone
