"""Image files in and out: PNG, JPEG, WebP, TIFF and BMP, 8 and 16 bits, gray, RGB, with or without alpha.

Pillow decodes and encodes everything except 16-bit multi-channel PNG/TIFF, which Pillow reduces
to 8 bits: those go through FFmpeg's PNG/TIFF codecs via PyAV (already a dependency for video).
Every failure is an :class:`~sr_runtime.errors.InputError` that names the file.

Typical use::

    img = read_image("photo.png")                   # ImageData: pixels (H, W, C) uint8/uint16, alpha
    lr = image_to_tensor(img.pixels)                # (1, C, H, W) float in [0, 1] (sr_runtime.color)
    write_image("out.png", tensor_to_image(sr, img.pixels.dtype), alpha=upscaled_alpha,
                icc_profile=img.icc_profile, exif=img.exif)
"""

from __future__ import annotations

import glob
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from sr_runtime.errors import InputError, OutputError
from sr_runtime.failures import describe_os_error

__all__ = ["ImageData", "IMAGE_EXTENSIONS", "read_image", "write_image", "list_images"]

IMAGE_EXTENSIONS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
"""File extension (lower case) -> format, for reading folders and choosing the output format."""

_SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")
_EXIF_ORIENTATION = 0x0112
# Pillow modes we convert before decoding ("P" depends on transparency; L, LA, RGB, RGBA and I;16 stay).
_CONVERT = {"1": "L", "La": "LA", "PA": "RGBA", "RGBa": "RGBA", "RGBX": "RGB", "CMYK": "RGB", "YCbCr": "RGB",
            "LAB": "RGB", "HSV": "RGB"}  # fmt: skip


@dataclass
class ImageData:
    """A decoded image, orientation already applied.

    ``pixels``: (H, W, C) uint8 or uint16 with C = 1 (gray) or 3 (RGB); ``alpha``: (H, W) of the
    same dtype, or None. ``mode`` says what the file held (Pillow's mode, e.g. ``"P"``, ``"RGBA"``,
    ``"I;16"``, or ``"RGB;16"``/``"RGBA;16"``/``"LA;16"`` for 16-bit colour). ``icc_profile`` and
    ``exif`` are the file's raw bytes (EXIF orientation reset to 1) to carry over to an output.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    mode: str
    format: str
    icc_profile: bytes | None = None
    exif: bytes | None = None
    path: Path | None = None

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def channels(self) -> int:
        return self.pixels.shape[2]


def _orient(arr: np.ndarray | None, orientation: int) -> np.ndarray | None:
    """Apply EXIF orientation 1..8 to an (H, W, ...) array, as ``ImageOps.exif_transpose``."""
    if arr is None or orientation in (0, 1):
        return arr
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, k=1),
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(arr)) if op else arr


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as f:
        header = f.read(25)  # signature (8) + IHDR length/type (8) + width, height (8) + bit depth (1)
    return header[24] if len(header) == 25 else 8


def _is_16bit_colour(im: Image.Image, path: Path) -> bool:
    """True for 16-bit-per-sample colour (or gray + alpha) that Pillow would reduce to 8 bits."""
    if im.mode.startswith("I"):
        return False
    if im.format == "PNG":
        return _png_bit_depth(path) == 16
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return max(bits) == 16
    return False


_FFMPEG_PACKED = {  # pixel format (without endianness) -> (channels, bytes per sample)
    "gray": (1, 1), "ya8": (2, 1), "rgb24": (3, 1), "rgba": (4, 1),
    "gray16": (1, 2), "ya16": (2, 2), "rgb48": (3, 2), "rgba64": (4, 2),
}  # fmt: skip


def _decode_ffmpeg(path: Path) -> tuple[np.ndarray, str]:
    """Decode a PNG/TIFF with FFmpeg: ((H, W, C) uint8/uint16 with C = 1..4, channel layout).

    Reads the packed plane bytes directly, so 16-bit samples are exact.
    """
    import av

    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
    except (av.error.FFmpegError, OSError, ValueError, StopIteration) as e:
        raise InputError(f"{path}: cannot decode the image with FFmpeg, it is truncated or corrupt ({e})") from e
    name = frame.format.name
    key = name[:-2] if name.endswith(("le", "be")) else name
    if key not in _FFMPEG_PACKED:  # planar layouts (e.g. gbrp16le): let swscale pack them, losslessly
        wide = frame.format.components[0].bits > 8
        alpha = len(frame.format.components) == 4
        name = ("rgba64le" if alpha else "rgb48le") if wide else ("rgba" if alpha else "rgb24")
        frame = frame.reformat(format=name)
        key = name[:-2] if wide else name
    channels, size = _FFMPEG_PACKED[key]
    plane = frame.planes[0]
    rows = np.frombuffer(bytes(plane), np.uint8).reshape(frame.height, plane.line_size)
    rows = np.ascontiguousarray(rows[:, : frame.width * channels * size])
    dtype = np.uint8 if size == 1 else (">u2" if name.endswith("be") else "<u2")
    arr = rows.view(dtype).reshape(frame.height, frame.width, channels)
    return arr.astype(np.uint8 if size == 1 else np.uint16), {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]


def _sniff(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(8)
    if head == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


def _read_unidentified(path: Path, error: Exception) -> tuple[np.ndarray, str, str]:
    """Pillow lacks some 16-bit layouts (gray + alpha TIFF); FFmpeg decodes those. Anything else is not an image."""
    fmt = _sniff(path)
    if fmt is None:
        kinds = ", ".join(sorted(set(IMAGE_EXTENSIONS.values())))
        raise InputError(f"{path} is not an image (cannot identify format); expected one of {kinds}") from error
    arr, layout = _decode_ffmpeg(path)
    return arr, layout, fmt


def _split_alpha(arr: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray | None]:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if layout in ("LA", "RGBA"):
        return np.ascontiguousarray(arr[:, :, :-1]), np.ascontiguousarray(arr[:, :, -1])
    return arr, None


def _decode_pillow(im: Image.Image, path: Path) -> tuple[np.ndarray, str]:
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in _CONVERT:
        im = im.convert(_CONVERT[mode])
    if im.mode.startswith("I;16"):
        return np.array(im).astype(np.uint16), "L"
    if im.mode == "I":  # 16-bit gray as 32-bit int (some Pillow versions): keep it if it fits
        arr = np.array(im)
        if arr.min() < 0 or arr.max() > 65535:
            raise InputError(f"{path}: 32-bit integer images are not supported; convert it to 16-bit PNG or TIFF")
        return arr.astype(np.uint16), "L"
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        raise InputError(
            f"{path}: image mode {mode!r} is not supported; expected 8/16-bit gray, RGB or RGBA (convert it first)"
        )
    return np.array(im, dtype=np.uint8), im.mode


def read_image(path: str | os.PathLike) -> ImageData:
    """Decode an image file completely (so a truncated file fails here, not later).

    Gray stays 1 channel; palette images become RGB (RGBA when they have transparency); alpha is
    split off into ``ImageData.alpha``; EXIF orientation is applied. Raises InputError naming the
    file for a missing or empty file, a non-image, a truncated/corrupt image or an unsupported mode.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: is not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is not an image: the file is empty (0 bytes)")
    orientation, icc, exif_bytes = 1, None, None
    try:
        with Image.open(path) as im:
            im.load()
            fmt = im.format or "unknown"
            mode = im.mode
            exif = im.getexif()
            orientation = int(exif.get(_EXIF_ORIENTATION, 1) or 1)
            exif_bytes = im.info.get("exif")
            if orientation != 1:
                exif[_EXIF_ORIENTATION] = 1
                exif_bytes = exif.tobytes()
            icc = im.info.get("icc_profile")
            if _is_16bit_colour(im, path):
                arr, layout = _decode_ffmpeg(path)
                mode = f"{layout};16"
            else:
                arr, layout = _decode_pillow(im, path)
    except InputError:
        raise
    except UnidentifiedImageError as e:
        arr, layout, fmt = _read_unidentified(path, e)
        mode = f"{layout};16" if arr.dtype == np.uint16 else layout
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: image is too large to decode safely ({e})") from e
    except (OSError, SyntaxError, ValueError, EOFError, StopIteration) as e:
        raise InputError(f"{path}: cannot decode the image, it is truncated or corrupt ({e})") from e
    pixels, alpha = _split_alpha(arr, layout)
    pixels, alpha = _orient(pixels, orientation), _orient(alpha, orientation)
    bit_depth = 16 if pixels.dtype == np.uint16 else 8
    return ImageData(pixels, alpha, bit_depth, mode, fmt, icc or None, exif_bytes or None, path)


def _check_pixels(path: Path, pixels: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise InputError(f"{path}: expected pixels of shape (H, W), (H, W, 1) or (H, W, 3), got {arr.shape}")
    if arr.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: expected uint8 or uint16 pixels, got {arr.dtype}; use color.tensor_to_image")
    if alpha is not None:
        alpha = np.asarray(alpha)
        if alpha.shape != arr.shape[:2] or alpha.dtype != arr.dtype:
            raise InputError(
                f"{path}: alpha must be {arr.shape[:2]} {arr.dtype} like the pixels, got {alpha.shape} {alpha.dtype}"
            )
    return arr


def _encode_16bit(arr: np.ndarray, fmt: str) -> bytes:
    """PNG/TIFF bytes of (H, W, C) uint16, C = 1..4 (gray, gray+alpha, RGB, RGBA), through FFmpeg."""
    import av

    h, w, c = arr.shape
    name = ("gray16", "ya16", "rgb48", "rgba64")[c - 1] + ("be" if fmt == "PNG" else "le")
    codec = av.CodecContext.create("png" if fmt == "PNG" else "tiff", "w")
    codec.width, codec.height, codec.pix_fmt = w, h, name
    frame = av.VideoFrame(w, h, name)
    plane = frame.planes[0]
    rows = np.zeros((h, plane.line_size), np.uint8)
    rows[:, : w * c * 2] = arr.astype(">u2" if name.endswith("be") else "<u2").view(np.uint8).reshape(h, -1)
    plane.update(rows.tobytes())
    return b"".join(bytes(p) for p in codec.encode(frame) + codec.encode(None))


def write_image(
    path: str | os.PathLike,
    pixels: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
    quality: int | None = None,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> Path:
    """Write ``pixels`` ((H, W), (H, W, 1) or (H, W, 3), uint8 or uint16) atomically; returns the path.

    The format comes from the extension (see :data:`IMAGE_EXTENSIONS`). uint16 data is written
    as 16-bit PNG/TIFF (other formats raise: convert to uint8 first); ``icc_profile`` and ``exif``
    are written for 8-bit output only. ``alpha`` ((H, W), same dtype) needs a format with alpha
    (not JPEG). ``quality`` (1-100, default 95) applies to JPEG and WebP. The file is written to a
    temporary name in the same folder and renamed, so a failure leaves nothing behind.
    """
    path = Path(path)
    fmt = IMAGE_EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"{path}: unsupported output extension {path.suffix!r}; use one of {', '.join(IMAGE_EXTENSIONS)}"
        )
    arr = _check_pixels(path, pixels, alpha)
    if alpha is not None and fmt == "JPEG":
        raise InputError(f"{path}: JPEG has no alpha channel; write .png, .webp or .tif, or drop the alpha")
    if arr.dtype == np.uint16 and fmt not in _SIXTEEN_BIT_FORMATS:
        raise InputError(f"{path}: {fmt} cannot hold 16-bit data; write .png or .tif, or convert to 8 bits")
    if quality is not None and not 1 <= quality <= 100:
        raise InputError(f"quality must be in 1..100, got {quality}")
    if alpha is not None:
        arr = np.concatenate([arr, np.asarray(alpha)[:, :, None]], axis=2)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; outputs get the usual mode
    except OSError as e:
        raise OutputError(f"{path}: cannot create the file: {describe_os_error(e, path.parent)}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            if arr.dtype == np.uint16:
                f.write(_encode_16bit(arr, fmt))
            else:
                mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
                image = Image.fromarray(arr[:, :, 0] if mode == "L" else arr, mode=mode)
                options = {"quality": quality or 95} if fmt in ("JPEG", "WEBP") else {}
                if icc_profile:
                    options["icc_profile"] = icc_profile
                if exif and fmt in ("JPEG", "WEBP", "PNG", "TIFF"):
                    options["exif"] = exif
                image.save(f, format=fmt, **options)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None:
            raise OutputError(f"{path}: cannot write the image: {describe_os_error(e, path.parent)}") from e
        if isinstance(e, (OSError, ValueError)) and not isinstance(e, InputError):
            raise InputError(f"{path}: cannot write the image ({e})") from e
        raise
    return path


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(inputs: list[str | os.PathLike], *, recursive: bool = False) -> list[Path]:
    """Expand files, folders and glob patterns into a sorted, de-duplicated list of image paths.

    A file is taken as given (whatever its extension); a folder contributes its image files
    (by extension, hidden files skipped; subfolders too with ``recursive``); a pattern with
    ``*``, ``?`` or ``[`` contributes its matching image files (``**`` with ``recursive``).
    Raises InputError for a missing path, a folder without images, or a pattern matching none.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        text = str(item)
        if path.is_dir():
            files = path.rglob("*") if recursive else path.iterdir()
            images = sorted(p for p in files if _is_image_file(p))
            if not images:
                hint = "" if recursive else " (subfolders are not searched; use recursive)"
                raise InputError(f"{path}: folder has no images ({', '.join(IMAGE_EXTENSIONS)}){hint}")
            found.extend(images)
        elif path.is_file():
            found.append(path)
        elif any(ch in text for ch in "*?["):
            images = sorted(p for p in map(Path, glob.glob(text, recursive=recursive)) if _is_image_file(p))
            if not images:
                raise InputError(f"{text}: pattern matches no image files")
            found.extend(images)
        else:
            raise InputError(f"{path}: no such file or folder")
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())
