"""TensorRT profile shapes: parsing, ordering, and validation against the model's IOSpec."""

from __future__ import annotations

import pytest

from sr_runtime.errors import ConfigError
from sr_runtime.export.profile import DEFAULT_MAX, DEFAULT_MIN, DEFAULT_OPT, ShapeProfile, default_profile
from sr_runtime.spec import IOSpec, parse_hw


@pytest.mark.parametrize("text, expected", [("270x480", (270, 480)), (" 32X64 ", (32, 64)), ("1x1", (1, 1))])
def test_parse_hw_reads_height_by_width(text, expected):
    assert parse_hw(text) == expected


@pytest.mark.parametrize("text", ["270", "270x", "x480", "270*480", "-1x4", "0x4", "axb"])
def test_parse_hw_rejects_malformed_shapes_naming_the_flag(text):
    with pytest.raises(ConfigError, match="--max-shape"):
        parse_hw(text, flag="--max-shape")


def test_profile_requires_min_le_opt_le_max():
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        ShapeProfile(min=(64, 64), opt=(32, 64), max=(128, 128))
    with pytest.raises(ConfigError, match="batch"):
        ShapeProfile(min=(8, 8), opt=(8, 8), max=(8, 8), batch=(1, 4, 2))


def test_validate_rejects_sizes_below_min_size_and_suggests_one():
    spec = IOSpec(scale=2, min_size=16)
    with pytest.raises(ConfigError, match=r"--min-shape 8x32 .*use --min-shape 16x32"):
        ShapeProfile(min=(8, 32), opt=(32, 32), max=(64, 64)).validate(spec)


def test_validate_rejects_sizes_not_multiple_of_and_suggests_rounded_up():
    spec = IOSpec(scale=4, multiple_of=8)
    with pytest.raises(ConfigError, match=r"--opt-shape 270x480.*multiples of 8.*use --opt-shape 272x480"):
        ShapeProfile(min=(32, 32), opt=(270, 480), max=(1088, 1920)).validate(spec)


def test_default_profile_aligns_the_defaults_to_the_spec():
    plain = default_profile(IOSpec(scale=4))
    assert (plain.min, plain.opt, plain.max) == (DEFAULT_MIN, DEFAULT_OPT, DEFAULT_MAX)
    spec = IOSpec(scale=4, multiple_of=8, min_size=48)
    profile = default_profile(spec)
    for hw in (profile.min, profile.opt, profile.max):
        assert hw[0] % 8 == 0 and hw[1] % 8 == 0 and min(hw) >= 48


def test_default_profile_keeps_given_shapes_and_validates_them():
    profile = default_profile(IOSpec(scale=2), min_hw=(16, 16), max_hw=(128, 128), batch=4)
    assert profile.min == (16, 16) and profile.max == (128, 128)
    assert profile.opt == (128, 128)  # default opt clipped into [min, max]
    assert profile.batch == (1, 4, 4)
    assert profile.input_shapes()["max"] == (4, 3, 128, 128)
    with pytest.raises(ConfigError, match="multiples of 4"):
        default_profile(IOSpec(scale=2, multiple_of=4), max_hw=(130, 128))


def test_profile_round_trips_through_its_dict():
    profile = ShapeProfile(min=(32, 32), opt=(256, 256), max=(1088, 1920), batch=(1, 2, 4))
    assert ShapeProfile.from_dict(profile.to_dict()) == profile
    with pytest.raises(ConfigError, match="malformed profile"):
        ShapeProfile.from_dict({"min": "32x32"})
