"""Image files -> uint8 RGB arrays (H, W, 3), optionally resized to a square.

Conversions (documented behaviour, no colour management):
- grayscale is replicated to three channels; grayscale+alpha keeps the gray;
- RGBA drops the alpha channel (no compositing onto a background); palette images are expanded;
- unsigned integers wider than 8 bits are scaled by the largest value of the file's bits per
  sample (a TIFF's BitsPerSample tag, else the dtype) and rounded: 16-bit x -> round(x / 257),
  so 65535 -> 255, and a 12-bit TIFF's 4095 -> 255; booleans map to 0/255;
- floating point must lie in [0, 1] and is scaled by 255 (other values: an error naming the
  file, since 0..255 or 0..65535 floats cannot be told apart from overexposure);
- a multi-page TIFF contributes its first page only;
- an orientation tag (a TIFF's, or the EXIF orientation of a JPEG or PNG) is applied: the tile is
  turned and flipped as an image viewer shows it, whichever decoder reads it;
- YCbCr TIFFs are converted by libtiff, which inverts BT.601 exactly (Pillow, used before, was 1 off
  on about half the pixels).
An 8-bit RGB TIFF is decoded by libtiff (imagecodecs), outside the GIL: Pillow parses TIFF tags in
Python, which held the GIL and kept decoding threads from running in parallel (loading 1,200 Kather
tiles took 2.5x as long with Pillow on two cores, 1,188 NCT tiles 1.6x).
Everything else uses Pillow (fast, C), falling back to tifffile for TIFFs Pillow cannot read or
would truncate (more than 8 bits per sample, floating point).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator

import imagecodecs
import numpy as np
import tifffile
from PIL import Image, ImageOps, UnidentifiedImageError

from data_pipeline.errors import DataError
from data_pipeline.parallel import Item, Result, map_in_order

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
TIFF_EXTENSIONS = (".tif", ".tiff")
_BITS_PER_SAMPLE_TAG = 258
_ORIENTATION_TAG = 274
_DECODER_MODULES = r"(PIL|tifffile|imagecodecs)(\.|$)"  # the modules whose warnings decoding hides


class UndecodableImage(Exception):
    """Raised by `decode_image` when bytes are not a readable image (the caller names the file)."""


def is_image_name(name: str) -> bool:
    """True if `name` has one of the supported image extensions (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def to_rgb8(pixels: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Convert a decoded (H, W), (H, W, 1..4) array of any supported dtype to uint8 RGB.

    `bits`: significant bits per sample of unsigned integer pixels, if fewer than the dtype's.
    """
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise UndecodableImage(f"unsupported pixel array shape {pixels.shape}")
    channels = pixels.shape[2]
    if channels in (1, 2):  # gray or gray+alpha
        pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
    elif channels == 4:  # RGBA: alpha dropped
        pixels = pixels[:, :, :3]
    return np.ascontiguousarray(_to_uint8(pixels, bits))


def _to_uint8(pixels: np.ndarray, bits: int | None) -> np.ndarray:
    """Scale any supported dtype to uint8 (see the module docstring for the rules)."""
    dtype = pixels.dtype
    if dtype == np.uint8:
        return pixels
    if dtype == np.bool_:
        return pixels.astype(np.uint8) * 255
    if np.issubdtype(dtype, np.unsignedinteger):
        top = np.iinfo(dtype).max if not bits or bits >= 8 * dtype.itemsize else 2**bits - 1
        scaled = np.rint(pixels.astype(np.float64) * (255.0 / top))
        return np.minimum(scaled, 255).astype(np.uint8)
    if np.issubdtype(dtype, np.floating):
        low, high = (float(np.min(pixels)), float(np.max(pixels))) if pixels.size else (0.0, 0.0)
        if not (low >= -1e-6 and high <= 1 + 1e-6):  # also catches NaN
            raise UndecodableImage(
                f"floating-point pixels must lie in [0, 1], these span {low:g}..{high:g}; "
                "save the tile as 8- or 16-bit integers"
            )
        return np.rint(np.clip(pixels.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    raise UndecodableImage(f"unsupported pixel type {dtype}")


def _decode_with_pillow(data: bytes) -> np.ndarray | None:
    """Decode with Pillow, or None when Pillow would lose bits (TIFF with > 8 bits per sample)."""
    with Image.open(io.BytesIO(data)) as image:
        if image.format != "TIFF":  # Pillow turns a TIFF by its orientation tag as it loads, not other formats
            ImageOps.exif_transpose(image, in_place=True)
        if image.format == "TIFF":
            bits = image.tag_v2.get(_BITS_PER_SAMPLE_TAG, (8,))
            bits = bits if isinstance(bits, tuple) else (bits,)
            if max(bits) > 8 and not (image.mode in ("I;16", "I;16B", "I;16L") and max(bits) == 16):
                return None  # e.g. 12 or 32 bits per sample: tifffile keeps them and says how many
        if image.mode in ("P", "PA"):
            image = image.convert("RGBA")
        elif image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("RGB")
        elif image.mode == "I":
            # 32-bit integer mode holds 16-bit PNGs in older Pillow versions.
            pixels = np.asarray(image)
            if pixels.min() < 0 or pixels.max() > 65535:
                raise UndecodableImage("32-bit integer pixels outside the 16-bit range")
            return pixels.astype(np.uint16)
        elif image.mode == "F":
            return None
        return np.asarray(image)


def _decode_rgb8_tiff_with_libtiff(data: bytes) -> np.ndarray | None:
    """The first page of an 8-bit RGB TIFF as libtiff decodes it; None for any other TIFF or a failure.

    libtiff's raw samples are the colours only when the page is RGB; they are taken where libtiff's
    own RGBA rendering of the page (photometric, orientation and colour conversions applied) has the
    same values. Other pages (YCbCr, Lab, gray, palette, alpha, 16-bit, another orientation) and
    damaged files go to Pillow and tifffile, which say what is wrong with a file.
    """
    if _first_page_orientation(data) not in (None, 1):  # libtiff's rendering does not transpose (5)
        return None
    try:
        samples = imagecodecs.tiff_decode(data)
        if samples.dtype != np.uint8 or samples.ndim != 3 or samples.shape[2] != 3:
            return None
        rendered = imagecodecs.tiff_decode(data, asrgb=True)
    except Exception:
        return None
    return samples if np.array_equal(samples, rendered[:, :, :3]) else None


def _first_page_orientation(data: bytes) -> int | None:
    """The orientation tag of a classic TIFF's first page, 1 (the default) if absent; None if unreadable or BigTIFF.

    Read from the header and first directory alone: parsing every tag (Pillow, tifffile) takes
    longer than libtiff's whole decode of a Kather tile, in Python under the GIL.
    """
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 8 or struct.unpack(order + "H", data[2:4])[0] != 42:
        return None
    (offset,) = struct.unpack(order + "I", data[4:8])
    if offset + 2 > len(data):
        return None
    (entries,) = struct.unpack(order + "H", data[offset:offset + 2])
    for entry in range(offset + 2, min(offset + 2 + 12 * entries, len(data) - 11), 12):
        tag, kind = struct.unpack(order + "HH", data[entry:entry + 4])
        if tag == _ORIENTATION_TAG:
            return struct.unpack(order + "H", data[entry + 8:entry + 10])[0] if kind == 3 else None
    return 1


def oriented(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """`pixels` (H, W, ...) turned and flipped as orientation tag value `orientation` (1-8, TIFF/EXIF) says."""
    transforms = {
        2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, -1)[::-1],
        8: lambda a: np.rot90(a, 1),
    }
    return transforms[orientation](pixels) if orientation in transforms else pixels


def _decode_with_tifffile(data: bytes) -> tuple[np.ndarray, int]:
    """The first page of a TIFF, channels last, turned by its orientation tag; returns (pixels, bits per sample)."""
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages[0]
        pixels = page.asarray()
        if page.axes.startswith("S") and pixels.ndim == 3:  # planar configuration
            pixels = np.moveaxis(pixels, 0, -1)
        orientation = page.tags.get(_ORIENTATION_TAG)
        return oriented(pixels, int(orientation.value) if orientation else 1), int(page.bitspersample)


@contextlib.contextmanager
def decoder_warnings_hidden() -> Iterator[None]:
    """Hide the decoders' warnings while tiles decode: they warn of damaged files that then fail, as we report.

    The warnings filters are one per process, so only the main thread may change them; its
    change holds for the threads that decode for it.
    """
    tifffile_log = logging.getLogger("tifffile")  # tifffile logs what it finds wrong rather than warning
    level = tifffile_log.level
    tifffile_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=_DECODER_MODULES)
            yield
    finally:
        tifffile_log.setLevel(level)


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode the bytes of file `name` (its extension picks the decoder) to uint8 RGB."""
    is_tiff = name.lower().endswith(TIFF_EXTENSIONS)
    if threading.current_thread() is not threading.main_thread():
        return to_rgb8(*_decode_pixels(data, is_tiff))  # the main thread hides the warnings: decode_in_order
    with decoder_warnings_hidden():
        return to_rgb8(*_decode_pixels(data, is_tiff))


def decode_in_order(function: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[Result]:
    """`function(item)` of each item in order, on one thread per usable core, with the decoders' warnings hidden.

    For functions that decode tiles with `decode_image`; see `parallel.map_in_order`.
    """
    with decoder_warnings_hidden():
        yield from map_in_order(function, items)


def _decode_pixels(data: bytes, is_tiff: bool) -> tuple[np.ndarray, int | None]:
    """Decoded pixels in the file's own dtype and channel count, and their bits per sample if known."""
    if is_tiff and (pixels := _decode_rgb8_tiff_with_libtiff(data)) is not None:
        return pixels, None
    try:
        try:
            pixels = _decode_with_pillow(data)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as pillow_error:
            if not is_tiff:
                reason = ("not a recognised image format, or a damaged file"
                          if isinstance(pillow_error, UnidentifiedImageError) else str(pillow_error))
                raise UndecodableImage(reason) from pillow_error
            pixels = None
        if pixels is not None:
            return pixels, None
        return _decode_with_tifffile(data)
    except UndecodableImage:
        raise
    except IndexError as error:  # tifffile finds no page in an empty or cut-off TIFF
        raise UndecodableImage("the TIFF holds no image (empty or cut off?)") from error
    except Exception as error:  # any decoder failure means the file is unusable
        raise UndecodableImage(f"{type(error).__name__}: {error}") from error


def center_crop(image: np.ndarray, size: int, name: str) -> np.ndarray:
    """The central `size` x `size` pixels of `image`; DataError naming tile `name` if it is smaller."""
    height, width = image.shape[:2]
    if height < size or width < size:
        raise DataError(f"tile '{name}' is {width}x{height} px, smaller than the {size} px center crop asked for")
    top, left = (height - size) // 2, (width - size) // 2
    return image[top:top + size, left:left + size]


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 RGB `image` to (size, size) with Pillow's antialiased bilinear filter."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    resized = Image.fromarray(image).resize((size, size), resample=Image.Resampling.BILINEAR)
    return np.asarray(resized)


def load_image(path: str | os.PathLike, image_size: int | None = None) -> np.ndarray:
    """Read one image file as uint8 RGB (H, W, 3), resized to a square if `image_size`."""
    path = os.fspath(path)
    if image_size is not None and (isinstance(image_size, bool) or int(image_size) < 1):
        raise DataError(f"image_size must be a positive number of pixels or None, got {image_size!r}")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise DataError(f"cannot read image file '{path}': {error.strerror or error}") from error
    try:
        image = decode_image(data, path)
    except UndecodableImage as error:
        raise DataError(f"cannot decode image file '{path}' ({error}); is it a valid image?") from error
    return resize_square(image, image_size) if image_size else image
