"""Shared fixtures: seeding, tiny images, and skips for GPU/TensorRT tests."""

from __future__ import annotations

import importlib.util
import random

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def pytest_collection_modifyitems(config, items):
    has_cuda = torch.cuda.is_available()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; none on this machine"))
        if "trt" in item.keywords and not has_trt:
            item.add_marker(
                pytest.mark.skip(reason="needs TensorRT (pip install tensorrt, from NVIDIA's index); not installed here")
            )


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def photo_rgb_u8() -> np.ndarray:
    """A real photo (scikit-image's astronaut), HWC uint8, 512x512."""
    from skimage import data

    return data.astronaut()


@pytest.fixture
def small_rgb_u8(photo_rgb_u8) -> np.ndarray:
    """A 37x53 crop of a real photo: odd sizes on purpose."""
    return np.ascontiguousarray(photo_rgb_u8[100:137, 200:253])
