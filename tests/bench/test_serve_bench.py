"""``sr-bench serve``: the closed loop counts what it sends, and the whole command writes its rows."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("uvicorn")

from benchmarks import cli  # noqa: E402
from benchmarks.bench_serve import closed_loop, make_images  # noqa: E402


class _Flaky(BaseHTTPRequestHandler):
    """Answers 200 to every request but every third, which gets 503."""

    count = 0
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        with _Flaky.lock:
            _Flaky.count += 1
            status = 503 if _Flaky.count % 3 == 0 else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_the_closed_loop_counts_every_request_and_each_error():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        row = closed_loop(server.server_address[1], make_images(((16, 16),), per_size=1), concurrency=3,
                          requests=4, mode="stub")
    finally:
        server.shutdown()
    assert row.requests == 12 and row.errors == 4 and row.error_kinds == {"HTTP 503": 4}
    assert row.error_rate == pytest.approx(1 / 3) and row.p50_ms is not None and row.images_per_s > 0


def test_sr_bench_serve_writes_every_row(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["serve", "--model", "fsrcnn", "--scale", "4", "--concurrency", "1,2", "--requests", "2",
                     "--sizes", "16x16,24x32", "--per-process", "1", "--out", str(out)]) == 0
    results = json.loads((out / "serve.json").read_text())
    modes = [(r["mode"], r["concurrency"]) for r in results["rows"]]
    assert modes == [("sr-serve, batching", 1), ("sr-serve, batching", 2), ("sr-serve, no batching", 1),
                     ("sr-serve, no batching", 2), ("Upscaler in-process", 1), ("sr-run per image", 1)]
    assert all(r["errors"] == 0 and r["images_per_s"] > 0 for r in results["rows"]), results["rows"]
    assert results["environment"]["cpu_model"] and (out / "serve.png").stat().st_size > 1000
    assert "| sr-serve, no batching | 2 | 4 |" in (out / "serve.md").read_text()
