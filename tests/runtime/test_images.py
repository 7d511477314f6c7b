"""Image I/O: round trips (8/16-bit, gray, alpha, palette), EXIF orientation, typed errors, atomic writes, listing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from sr_runtime.errors import InputError
from sr_runtime.images import list_images, read_image, write_image


@pytest.fixture
def rgb_u8(small_rgb_u8) -> np.ndarray:
    return small_rgb_u8


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff"])
@pytest.mark.parametrize("channels", [1, 3])
def test_lossless_8bit_round_trip(tmp_path, rgb_u8, ext, channels):
    pixels = rgb_u8[:, :, :channels]
    path = write_image(tmp_path / f"img{ext}", pixels)
    img = read_image(path)
    assert img.bit_depth == 8 and img.alpha is None and img.pixels.dtype == np.uint8
    np.testing.assert_array_equal(img.pixels, pixels)


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", ".webp"])
def test_lossy_round_trip_is_close(tmp_path, rgb_u8, ext):
    img = read_image(write_image(tmp_path / f"img{ext}", rgb_u8, quality=98))
    assert img.pixels.shape == rgb_u8.shape
    assert np.abs(img.pixels.astype(int) - rgb_u8).mean() < 4


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_16bit_round_trip_is_exact(tmp_path, ext, channels, with_alpha):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, (9, 14, channels), dtype=np.uint16)
    alpha = rng.integers(0, 65536, (9, 14), dtype=np.uint16) if with_alpha else None
    img = read_image(write_image(tmp_path / f"img{ext}", pixels, alpha=alpha))
    assert img.bit_depth == 16 and img.pixels.dtype == np.uint16
    np.testing.assert_array_equal(img.pixels, pixels)
    if with_alpha:
        np.testing.assert_array_equal(img.alpha, alpha)
    else:
        assert img.alpha is None


def test_16bit_gray_png_written_by_pillow_is_read_as_16bit(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 65536, (6, 5), dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / "g.png")  # mode I;16
    img = read_image(tmp_path / "g.png")
    assert img.bit_depth == 16 and img.pixels.shape == (6, 5, 1)
    np.testing.assert_array_equal(img.pixels[:, :, 0], pixels)


def test_rgba_and_la_split_alpha(tmp_path, rgb_u8):
    alpha = np.random.default_rng(0).integers(0, 256, rgb_u8.shape[:2], dtype=np.uint8)
    Image.fromarray(np.dstack([rgb_u8, alpha]), mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.dstack([rgb_u8[:, :, 0], alpha]), mode="LA").save(tmp_path / "la.png")
    rgba, la = read_image(tmp_path / "rgba.png"), read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(rgba.pixels, rgb_u8)
    np.testing.assert_array_equal(rgba.alpha, alpha)
    np.testing.assert_array_equal(la.pixels[:, :, 0], rgb_u8[:, :, 0])
    np.testing.assert_array_equal(la.alpha, alpha)
    assert (rgba.mode, la.mode) == ("RGBA", "LA")


def test_palette_images_become_rgb_or_rgba(tmp_path, rgb_u8):
    pal = Image.fromarray(rgb_u8).quantize(16)
    pal.save(tmp_path / "p.png")
    pal.save(tmp_path / "pt.png", transparency=0)
    img, with_t = read_image(tmp_path / "p.png"), read_image(tmp_path / "pt.png")
    assert img.mode == "P" and img.pixels.shape == rgb_u8.shape and img.alpha is None
    np.testing.assert_array_equal(img.pixels, np.asarray(pal.convert("RGB")))
    assert with_t.alpha is not None and with_t.alpha.min() == 0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, rgb_u8, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb_u8).save(tmp_path / "o.png", exif=exif.tobytes())
    img = read_image(tmp_path / "o.png")
    with Image.open(tmp_path / "o.png") as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    np.testing.assert_array_equal(img.pixels, expected)
    carried = Image.Exif()
    carried.load(img.exif)
    assert carried.get(0x0112) == 1  # already applied: an output must not rotate again


def test_icc_and_exif_are_carried_over(tmp_path, rgb_u8):
    exif = Image.Exif()
    exif[0x010F] = "camera maker"
    icc = b"not-a-real-profile-but-bytes"
    write_image(tmp_path / "m.jpg", rgb_u8, icc_profile=icc, exif=exif.tobytes())
    img = read_image(tmp_path / "m.jpg")
    assert img.icc_profile == icc
    copy = read_image(write_image(tmp_path / "c.png", img.pixels, icc_profile=img.icc_profile, exif=img.exif))
    assert copy.icc_profile == icc
    with Image.open(tmp_path / "c.png") as im:
        assert im.getexif()[0x010F] == "camera maker"


def test_read_errors_name_the_file(tmp_path, rgb_u8):
    with pytest.raises(InputError, match="missing.png: file not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty.png is not an image: the file is empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "notes.png").write_text("hello, not a picture")
    with pytest.raises(InputError, match=r"notes.png is not an image \(cannot identify format\)"):
        read_image(tmp_path / "notes.png")
    for ext in (".png", ".jpg"):
        full = write_image(tmp_path / f"full{ext}", rgb_u8).read_bytes()
        (tmp_path / f"cut{ext}").write_bytes(full[: len(full) // 2])
        with pytest.raises(InputError, match=rf"cut\{ext}: cannot decode the image, it is truncated or corrupt"):
            read_image(tmp_path / f"cut{ext}")


def test_write_rejects_what_the_format_cannot_hold(tmp_path, rgb_u8):
    with pytest.raises(InputError, match="unsupported output extension '.gif'"):
        write_image(tmp_path / "a.gif", rgb_u8)
    with pytest.raises(InputError, match="cannot hold 16-bit"):
        write_image(tmp_path / "a.jpg", rgb_u8.astype(np.uint16))
    with pytest.raises(InputError, match="no alpha"):
        write_image(tmp_path / "a.jpg", rgb_u8, alpha=rgb_u8[:, :, 0])
    with pytest.raises(InputError, match="uint8 or uint16"):
        write_image(tmp_path / "a.png", rgb_u8.astype(np.float32))
    with pytest.raises(InputError, match=r"\(H, W, 3\)"):
        write_image(tmp_path / "a.png", np.zeros((4, 4, 2), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, rgb_u8, monkeypatch):
    target = write_image(tmp_path / "out.png", rgb_u8)
    before = target.read_bytes()

    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(InputError, match="out.png: cannot write the image"):
        write_image(target, rgb_u8[::-1])
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_list_images_expands_files_folders_and_globs(tmp_path, rgb_u8):
    for name in ("b.png", "a.jpg", "sub/c.png"):
        write_image(tmp_path / name, rgb_u8)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.png").write_bytes(b"")
    assert [p.name for p in list_images([tmp_path])] == ["a.jpg", "b.png"]
    assert [p.name for p in list_images([tmp_path], recursive=True)] == ["a.jpg", "b.png", "c.png"]
    assert [p.name for p in list_images([str(tmp_path / "*.png")])] == ["b.png"]
    assert [p.name for p in list_images([str(tmp_path / "**" / "*.png")], recursive=True)] == ["b.png", "c.png"]
    # a file is taken as given; duplicates collapse, first occurrence wins
    assert [p.name for p in list_images([tmp_path / "notes.txt", tmp_path / "b.png", tmp_path])] == [
        "notes.txt",
        "b.png",
        "a.jpg",
    ]


def test_list_images_errors(tmp_path):
    with pytest.raises(InputError, match="nope: no such file or folder"):
        list_images([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: folder has no images"):
        list_images([tmp_path / "empty"])
    with pytest.raises(InputError, match="pattern matches no image files"):
        list_images([str(tmp_path / "*.png")])


@pytest.mark.parametrize("planar", [False, True])
def test_16bit_rgb_tiff_from_another_writer(tmp_path, planar):
    tifffile = pytest.importorskip("tifffile")
    pixels = np.random.default_rng(0).integers(0, 65536, (7, 6, 3), dtype=np.uint16)
    data = pixels.transpose(2, 0, 1) if planar else pixels
    tifffile.imwrite(tmp_path / "t.tif", data, photometric="rgb", planarconfig="separate" if planar else "contig")
    img = read_image(tmp_path / "t.tif")
    assert img.mode == "RGB;16" and img.bit_depth == 16
    np.testing.assert_array_equal(img.pixels, pixels)
