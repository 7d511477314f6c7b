"""The crops of report.html (benchmarks.gallery) and the page itself, from hand-made outputs (no model runs)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmarks.gallery import CROP, Gallery
from benchmarks.report import render_markdown, validate_results
from benchmarks.report_html import render_html
from benchmarks.tables import report_tables
from sr_runtime.color import image_to_tensor
from sr_runtime.errors import SRError


def _t(img_u8: np.ndarray) -> torch.Tensor:
    return image_to_tensor(img_u8, dtype=torch.float64)


def _score(name, psnr):
    return SimpleNamespace(name=name, psnr=psnr, ssim=psnr / 40)


def _outputs(photo_rgb_u8):
    """HR, bicubic (wrong in two patches, A and B) and two 'models': one exact, one wrong in B only."""
    hr = np.ascontiguousarray(photo_rgb_u8[:192, :256])
    bicubic, good, bad = hr.copy(), hr.copy(), hr.copy()
    for y, x in ((10, 10), (100, 180)):
        bicubic[y: y + 40, x: x + 40] = 255 - hr[y: y + 40, x: x + 40]
    bad[100:140, 180:220] = 255 - hr[100:140, 180:220]
    return hr, bicubic, good, bad


@pytest.fixture
def gallery(photo_rgb_u8):
    hr, bicubic, good, bad = _outputs(photo_rgb_u8)
    g = Gallery(images=2)
    keep_bicubic = g.reference("Set5", 4)
    for name in ("one", "two", "three"):  # only the first two are kept
        keep_bicubic(_score(name, 25.0), _t(hr), _t(bicubic))
    for model, out, psnr in (("good", good, 31.0), ("bad", bad, 27.0)):
        keep = g.collector("Set5", 4, model, "onnxruntime", "fp16", "shipped")
        for name in ("one", "two", "three"):
            keep(_score(name, psnr), _t(hr), _t(out))
    return g


@pytest.fixture
def results(tmp_path, gallery):
    return {
        "schema_version": 1, "command": "sr-bench --quick", "wall_s": 12.0,
        "environment": {"cpu_model": "Xeon", "cpu_count": 2, "cpu_flags": ["avx512_bf16", "amx_bf16"], "gpu": None,
                        "driver": None, "torch": "2.14", "torch_cuda": None, "onnxruntime": "1.32",
                        "tensorrt": None, "commit": "abc"},
        "config": {},
        "models": [{"model": "good", "scale": 4, "weights": "shipped", "params": 12000, "source": "shipped"}],
        "latency": [], "parity": [], "quality": [], "video": [],
        "skipped": [{"stage": "all", "backend": "tensorrt", "precision": "fp32", "reason": "no <TensorRT>"}],
        "gallery": gallery.write(tmp_path),
    }


def test_the_gallery_keeps_the_first_images_with_every_method(results, tmp_path):
    panels = results["gallery"]["panels"]
    assert [p["image"] for p in panels] == ["one", "two"]
    labels = [t["label"] for t in panels[0]["tiles"]]
    assert labels == ["HR", "bicubic", "good onnxruntime fp16", "bad onnxruntime fp16"]
    for tile in panels[0]["tiles"]:
        assert (tmp_path / tile["file"]).read_bytes()[:4] == b"\x89PNG"
    assert panels[0]["tiles"][0]["psnr"] is None and panels[0]["tiles"][2]["psnr"] == 31.0
    validate_results(results)


def test_the_crop_is_where_the_models_differ(results):
    y, x, h, w = results["gallery"]["panels"][0]["box"]
    assert (h, w) == (CROP, CROP)
    # bicubic is as wrong in A as in B, but the models differ in B only
    assert y < 140 and y + h > 100 and x < 220 and x + w > 180
    tiles = results["gallery"]["panels"][0]["tiles"]
    assert tiles[2]["crop_psnr"] is None  # identical to HR's crop
    assert tiles[3]["crop_psnr"] < 20


def test_the_slider_is_bicubic_against_the_best_model(results):
    slider = results["gallery"]["slider"]
    assert slider["image"] == "one"
    assert slider["before"]["label"] == "bicubic" and slider["after"]["label"] == "good onnxruntime fp16"


def test_the_page_is_self_contained(results, tmp_path):
    page = render_html(results, tmp_path)
    sources = re.findall(r'\ssrc="([^"]*)"', page)
    assert len(sources) == 2 * 4 + 2  # two panels of four crops, the slider's pair
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(src|href)=\"(https?:|//)", page)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "no &lt;TensorRT&gt;" in page  # text is escaped


def test_the_page_has_the_markdown_tables_and_the_machine(results, tmp_path):
    results["quality"] = [{"model": "good", "scale": 4, "weights": "shipped", "backend": "onnxruntime",
                           "precision": "fp16", "device": "cpu", "dataset": "Set5", "images": 2, "psnr": 31.0,
                           "ssim": 0.775, "published_method": "FSRCNN", "published_psnr": 30.72,
                           "published_ssim": 0.866, "delta_psnr": 0.28, "seconds": 1.0}]
    page = render_html(results, tmp_path)
    markdown = render_markdown(results)
    for table in report_tables(results):
        assert f"<h2>{table.title}</h2>" in page and f"## {table.title}" in markdown
        for row in table.rows:
            assert "".join(f"<td>{c}</td>" for c in row) in page
    assert "avx512_bf16, amx_bf16" in page and "sr-bench --quick" in page


def test_a_missing_crop_file_is_an_error(results, tmp_path):
    (tmp_path / results["gallery"]["panels"][1]["tiles"][2]["file"]).unlink()
    with pytest.raises(SRError, match="cannot be read"):
        render_html(results, tmp_path)


def test_without_crops_the_page_says_why(results, tmp_path):
    del results["gallery"]
    assert "No crops" in render_html(results, tmp_path)


def test_validate_rejects_a_tile_without_its_file(results):
    del results["gallery"]["panels"][0]["tiles"][1]["file"]
    with pytest.raises(ValueError, match=r"tiles\[1\].*file"):
        validate_results(results)
