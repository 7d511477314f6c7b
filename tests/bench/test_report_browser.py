"""report.html of a real tiny sr-bench run, opened from disk in headless Chromium: every image loads,
no console error, the slider follows the keyboard and the mouse, the page is not blank. Each check is
also run on a broken copy (a missing crop, a script error, no script) to show it can fail."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from benchmarks.cli import main

# Where each image stands: broken = not decoded (missing file, bad data, blocked by the page's policy).
_BROKEN_IMAGES = "[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)"
_SLIDER = "document.getElementById('slider').getBoundingClientRect().toJSON()"
_POSITION = "getComputedStyle(document.getElementById('slider')).getPropertyValue('--pos')"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """OUT of `sr-bench` on two models, torch FP32 and ONNX Runtime FP32/FP16, three small real photos."""
    from skimage import data

    root = tmp_path_factory.mktemp("html")
    photos = root / "data" / "Set5"
    photos.mkdir(parents=True)
    for name, img, (y, x) in (("astronaut", data.astronaut(), (100, 150)), ("cat", data.chelsea(), (50, 100)),
                              ("coffee", data.coffee(), (100, 200))):
        Image.fromarray(np.ascontiguousarray(img[y: y + 96, x: x + 128])).save(photos / f"{name}.png")
    out = root / "out"
    assert main([
        "--models", "fsrcnn,espcn", "--scales", "4", "--sizes", "16x16", "--batch", "1", "--runs", "1",
        "--warmup", "0", "--backends", "torch,onnxruntime", "--precisions", "fp32,fp16", "--parity-size", "16x24",
        "--parity-images", "1", "--data", str(root / "data"), "--datasets", "Set5", "--no-video", "--no-tiling",
        "--runs-dir", str(root / "no_runs"), "--out", str(out),
    ]) == 0
    return out


def _open(chromium, path):
    page = chromium.new_page()
    page.goto(path.as_uri())
    return page


def _broken_copy(report, tmp_path, old, new):
    html = (report / "report.html").read_text()
    assert old in html
    path = tmp_path / "report.html"
    path.write_text(html.replace(old, new, 1))
    return path


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def _slider_at(page, percent=None, key=None):
    """Move the slider (with the mouse to ``percent`` of its width, or with ``key``); returns the
    position the page reports and a screenshot of the slider."""
    box = page.evaluate(_SLIDER)
    if percent is not None:
        page.click(box["x"] + box["width"] * percent / 100, box["y"] + box["height"] / 2)
    if key is not None:
        page.evaluate("document.getElementById('slider-range').focus()")
        page.press(*key)
    position = float(page.evaluate(_POSITION).strip().rstrip("%"))
    return position, _pixels(page.screenshot(clip={k: box[k] for k in ("x", "y", "width", "height")}))


def _slider_moves(page) -> bool:
    """Home and End put the line at either edge, and the pictures there differ."""
    home, at_home = _slider_at(page, key=("Home", 36))
    end, at_end = _slider_at(page, key=("End", 35))
    return home == 0 and end == 100 and np.abs(at_home - at_end).mean() > 1


def test_every_image_loads_without_console_errors(chromium, report):
    page = _open(chromium, report / "report.html")
    try:
        assert page.evaluate(_BROKEN_IMAGES) == []
        results = json.loads((report / "results.json").read_text())
        panels = results["gallery"]["panels"]
        assert len(panels) == 3 and all(len(p["tiles"]) >= 2 + 2 * 2 for p in panels)  # HR, bicubic, 2 models x 2+ forms
        crops = sum(len(p["tiles"]) for p in panels)
        assert page.evaluate("document.images.length") == crops + 2 + len(results["plots"])  # + the slider's pair
        assert page.errors == []
        assert page.evaluate("document.querySelectorAll('table').length") >= 4
    finally:
        page.close()


def test_the_screenshot_is_not_blank(chromium, report, tmp_path):
    page = _open(chromium, report / "report.html")
    try:
        shot = page.screenshot()
    finally:
        page.close()
    (tmp_path / "report.png").write_bytes(shot)
    pixels = _pixels(shot)
    assert pixels.shape[0] > 1500 and pixels.shape[1] >= 1200  # the whole page, not the viewport
    assert pixels.std() > 20
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000  # photos, not flat colour


def test_the_slider_follows_the_keyboard_and_the_mouse(chromium, report):
    page = _open(chromium, report / "report.html")
    try:
        start, _ = _slider_at(page)
        assert start == 50
        right, _ = _slider_at(page, key=("ArrowRight", 39))
        assert right > start
        assert _slider_moves(page)
        _, all_model = _slider_at(page, key=("Home", 36))
        _, all_bicubic = _slider_at(page, key=("End", 35))
        quarter, shot = _slider_at(page, percent=25)
        assert 20 <= quarter <= 30
        width = shot.shape[1]
        left, far_right = slice(2, width // 4 - 4), slice(width // 4 + 4, width - 2)
        # left of the line: bicubic; right of it: the model
        assert np.abs(shot[:, left] - all_bicubic[:, left]).mean() < np.abs(shot[:, left] - all_model[:, left]).mean()
        assert np.abs(shot[:, far_right] - all_model[:, far_right]).mean() < np.abs(
            shot[:, far_right] - all_bicubic[:, far_right]).mean()
        assert page.errors == []
    finally:
        page.close()


def test_a_missing_crop_file_is_caught(chromium, report, tmp_path):
    html = (report / "report.html").read_text()
    start = html.index('src="data:image/png;base64,', html.index('class="tile"'))
    end = html.index('"', start + 5)
    path = _broken_copy(report, tmp_path, html[start:end + 1], 'src="crops/missing.png"')
    page = _open(chromium, path)
    try:
        assert len(page.evaluate(_BROKEN_IMAGES)) == 1
        assert page.errors  # the page's policy blocks it too, and says so
    finally:
        page.close()


def test_a_script_error_is_caught(chromium, report, tmp_path):
    path = _broken_copy(report, tmp_path, "<script>", "<script>undefinedFunction();</script><script>")
    page = _open(chromium, path)
    try:
        assert any("undefinedFunction" in e for e in page.errors)
    finally:
        page.close()


def test_a_slider_without_its_script_is_caught(chromium, report, tmp_path):
    html = (report / "report.html").read_text()
    script = html[html.index("<script>"): html.index("</script>") + len("</script>")]
    page = _open(chromium, _broken_copy(report, tmp_path, script, ""))
    try:
        assert not _slider_moves(page)
    finally:
        page.close()
