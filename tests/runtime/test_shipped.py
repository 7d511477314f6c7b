"""The weights shipped in the package: every one loads, says how it was trained, and is a real model.

The Set5/Set14/BSD100 figures in the README come from `sr-eval` on ../shared/data, which the test suite
may not have; here every shipped model must beat bicubic by a wide margin on a photo that
scikit-image ships (a 240x240 crop of ``astronaut``, not in the training data).
"""

from __future__ import annotations

import numpy as np
import pytest

from sr_runtime.checkpoint import load_checkpoint
from sr_runtime.color import image_to_tensor
from sr_runtime.deploy import DeployModel
from sr_runtime.evaluate import score_image
from sr_runtime.zoo import shipped_weights

SHIPPED = sorted(shipped_weights().items())
MIN_GAIN_DB = 1.0
"""Over bicubic on the astronaut crop; the shipped models measure 1.9-2.7 dB (FSRCNN) and 1.3-1.8 dB (ESPCN)."""


def test_fsrcnn_and_espcn_ship_at_every_scale():
    assert {key for key, _ in SHIPPED} >= {(name, s) for name in ("fsrcnn", "espcn") for s in (2, 3, 4)}


@pytest.fixture(scope="module")
def astronaut_hr():
    skdata = pytest.importorskip("skimage.data")
    return image_to_tensor(np.ascontiguousarray(skdata.astronaut()[:240, :240])).double()


@pytest.mark.parametrize(("key", "path"), SHIPPED, ids=[f"{n}_x{s}" for (n, s), _ in SHIPPED])
def test_shipped_model_is_trained_and_self_describing(key, path, astronaut_hr):
    name, scale = key
    ckpt = load_checkpoint(path)
    assert (ckpt.arch, ckpt.scale) == (name, scale)
    recipe = ckpt.meta["recipe"]
    assert [d.rstrip("/").rsplit("/", 1)[-1] for d in recipe["data"]["train"]] == ["T91", "BSD200"]
    assert ckpt.meta["metrics"]["val_psnr"] > 0

    model = DeployModel(ckpt.model.eval(), ckpt.spec).eval()
    gain = score_image(astronaut_hr, scale, model=model)[0] - score_image(astronaut_hr, scale)[0]
    assert gain >= MIN_GAIN_DB, f"{path.name}: only {gain:.2f} dB over bicubic"


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_the_default_for_each_scale_is_the_best_shipped_model_by_its_recorded_score(scale, tmp_path):
    from sr_runtime.checkpoint import read_metadata
    from sr_runtime.zoo import default_model

    scores = {name: read_metadata(path)["metrics"]["val_psnr"] for (name, s), path in SHIPPED if s == scale}
    assert default_model(scale, runs_dir=tmp_path / "no-runs") == max(scores, key=scores.get)
