"""``sr-serve --ray``: the same routes on a local Ray Serve started by the test, and a replica killed under load."""

from __future__ import annotations

import concurrent.futures as cf
import io
import socket
import time

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from sr_runtime import Upscaler  # noqa: E402
from sr_runtime.serve import ServeConfig  # noqa: E402

TOKEN = "ray-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GUARD_S = 300  # far above what any step takes on an idle 2-core machine


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def _wait_ok(url: str, **kw) -> None:
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=10, **kw).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} never answered 200")


@pytest.fixture(scope="module")
def ray_serve(tmp_path_factory):
    from sr_runtime.serve.ray_app import deploy

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    kwargs = {"model": "fsrcnn", "scale": 4, "backend": "torch",
              "runs_dir": str(tmp_path_factory.mktemp("no_runs"))}
    try:
        deploy(kwargs, ServeConfig(workers=2, queue_size=16), address=None, host="127.0.0.1", port=port,
               token=TOKEN, replicas=1, block=False)  # address None: a local Ray, started here
        url = f"http://127.0.0.1:{port}"
        _wait_ok(url + "/readyz")
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


def test_the_routes_answer_as_the_uvicorn_app_does(ray_serve, photo_rgb_u8):
    rgb = photo_rgb_u8[:40, :48].copy()
    r = httpx.post(ray_serve + "/v1/upscale", content=_png(rgb), headers=AUTH, timeout=GUARD_S)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    with Upscaler("fsrcnn", scale=4, backend="torch") as up:
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), up.upscale(rgb))
    assert httpx.post(ray_serve + "/v1/upscale", content=_png(rgb), timeout=60).status_code == 401
    assert httpx.post(ray_serve + "/v1/upscale", content=b"no image", headers=AUTH, timeout=60).status_code == 415
    assert httpx.get(ray_serve + "/v1/models", headers=AUTH, timeout=60).json()["models"][0]["scale"] == 4
    assert 'sr_requests_total{status="200"}' in httpx.get(ray_serve + "/metrics", headers=AUTH, timeout=60).text
    assert httpx.get(ray_serve + "/healthz", timeout=60).status_code == 200


def test_a_replica_killed_under_load_fails_its_requests_cleanly_and_the_service_recovers(ray_serve, photo_rgb_u8):
    body = _png(photo_rgb_u8[:256, :256].copy())

    def post(_):
        try:
            return httpx.post(ray_serve + "/v1/upscale", content=body, headers=AUTH, timeout=GUARD_S).status_code
        except httpx.TransportError as e:  # a connection the proxy dropped is a clean failure too
            return type(e).__name__

    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"]]
    assert len(replicas) == 1
    with cf.ThreadPoolExecutor(8) as ex:
        futures = [ex.submit(post, i) for i in range(8)]
        time.sleep(1.0)  # requests are in flight on the replica
        ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=False)
        outcomes = [f.result(timeout=GUARD_S + 30) for f in futures]  # every request ends: none hangs
    assert all(o == 200 or (isinstance(o, int) and o >= 500) or isinstance(o, str) for o in outcomes), outcomes
    _wait_ok(ray_serve + "/readyz")
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:  # a new replica takes over
        r = httpx.post(ray_serve + "/v1/upscale", content=_png(photo_rgb_u8[:24, :24].copy()), headers=AUTH,
                       timeout=GUARD_S)
        if r.status_code == 200:
            break
        time.sleep(1)
    assert r.status_code == 200
