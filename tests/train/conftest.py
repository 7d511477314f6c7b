"""Small on-disk HR folders made from a scikit-image photo (tests never use the shared datasets)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def hr_dirs(tmp_path, photo_rgb_u8):
    """(train_dir, val_dir): four 64x72 training crops and one 48x52 validation crop of a real photo."""
    train, val = tmp_path / "train", tmp_path / "val"
    train.mkdir()
    val.mkdir()
    for i, (y, x) in enumerate([(0, 0), (100, 200), (300, 50), (400, 400)]):
        Image.fromarray(np.ascontiguousarray(photo_rgb_u8[y : y + 64, x : x + 72])).save(train / f"t{i}.png")
    Image.fromarray(np.ascontiguousarray(photo_rgb_u8[200:248, 250:302])).save(val / "v0.png")
    return train, val
