"""Decoding to 8-bit RGB: conversions, resizing and unreadable files."""

import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from data_pipeline import DataError, load_image
from data_pipeline.images import UndecodableImage, decode_image, resize_square, to_rgb8

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
GRAY16 = RNG.integers(0, 65536, (6, 5), dtype=np.uint16)
RGB16 = RNG.integers(0, 65536, (6, 5, 3), dtype=np.uint16)


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _packbits_tiff(array: np.ndarray) -> bytes:
    """A packbits-compressed TIFF like the Kather tiles (tifffile needs imagecodecs to write one)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="TIFF", compression="packbits")
    return buffer.getvalue()


def _tiff(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def test_rgb_is_kept_exactly_in_png_and_packbits_tiff():
    np.testing.assert_array_equal(decode_image(_png(RGB), "a.png"), RGB)
    np.testing.assert_array_equal(decode_image(_packbits_tiff(RGB), "a.tif"), RGB)


def test_grayscale_is_replicated():
    for data, name in ((_png(GRAY), "g.png"), (_tiff(GRAY), "g.tiff")):
        out = decode_image(data, name)
        assert out.shape == (6, 5, 3) and out.dtype == np.uint8
        for channel in range(3):
            np.testing.assert_array_equal(out[..., channel], GRAY)


def test_alpha_is_dropped_without_compositing():
    rgba = np.concatenate([RGB, np.zeros((6, 5, 1), np.uint8)], axis=2)  # fully transparent
    np.testing.assert_array_equal(decode_image(_png(rgba), "a.png"), RGB)
    np.testing.assert_array_equal(decode_image(_tiff(rgba), "a.tif"), RGB)


def test_16_bit_is_scaled_by_257_and_rounded():
    expected_gray = np.rint(GRAY16 / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(decode_image(_tiff(GRAY16), "g16.tif")[..., 0], expected_gray)
    np.testing.assert_array_equal(decode_image(_png(GRAY16), "g16.png")[..., 1], expected_gray)
    # Pillow would truncate 16-bit RGB TIFF to 8 bits; tifffile keeps all of it.
    rgb8 = np.rint(RGB16 / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(decode_image(_tiff(RGB16), "c16.tif"), rgb8)
    extremes = to_rgb8(np.array([[0, 128, 65535]], dtype=np.uint16))
    np.testing.assert_array_equal(extremes[0, :, 0], [0, 0, 255])


def test_float_and_planar_tiffs():
    floats = RNG.random((6, 5, 3)).astype(np.float32)
    decoded = decode_image(_tiff(floats, photometric="rgb"), "f.tif")
    np.testing.assert_array_equal(decoded, np.rint(floats * 255).astype(np.uint8))
    planar = _tiff(np.moveaxis(RGB16, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(decode_image(planar, "p.tif"), np.rint(RGB16 / 257.0).astype(np.uint8))


def test_corrupt_and_truncated_files_are_undecodable():
    whole = _packbits_tiff(RGB)
    with pytest.raises(UndecodableImage):
        decode_image(whole[: len(whole) // 2], "half.tif")
    with pytest.raises(UndecodableImage):
        decode_image(b"this is not an image", "text.png")
    with pytest.raises(UndecodableImage):
        to_rgb8(np.zeros((2, 2, 5), np.uint8))


def test_load_image_resizes_and_names_bad_files(tmp_path):
    path = tmp_path / "tile.tif"
    path.write_bytes(_tiff(RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)))
    assert load_image(path).shape == (20, 30, 3)
    resized = load_image(str(path), image_size=12)
    assert resized.shape == (12, 12, 3) and resized.dtype == np.uint8
    broken = tmp_path / "broken.tif"
    broken.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="broken.tif"):
        load_image(broken)
    with pytest.raises(DataError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_resize_keeps_a_flat_image_flat():
    flat = np.full((30, 30, 3), (200, 100, 50), np.uint8)
    path_bytes = _png(flat)
    out = decode_image(path_bytes, "flat.png")
    np.testing.assert_array_equal(resize_square(out, 7), np.full((7, 7, 3), (200, 100, 50), np.uint8))


def test_a_12_bit_tiff_is_scaled_by_its_own_range():
    buffer = io.BytesIO()
    twelve_bit = np.array([[0, 2048, 4095]], dtype=np.uint16)
    tifffile.imwrite(buffer, twelve_bit, bitspersample=12)  # packed: read back through imagecodecs
    np.testing.assert_array_equal(decode_image(buffer.getvalue(), "t.tif")[0, :, 0], [0, 128, 255])


def test_float_pixels_outside_0_1_are_refused_not_clipped():
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, RGB.astype(np.float32), photometric="rgb")  # 0..255 as floats would all clip to white
    with pytest.raises(UndecodableImage, match=r"must lie in \[0, 1\], these span 0\.\.2[0-9][0-9]"):
        decode_image(buffer.getvalue(), "t.tif")


def _pillow_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _pillow_tiff(array: np.ndarray, mode: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format="TIFF", **options)
    return buffer.getvalue()


def test_8_bit_tiffs_of_every_layout_decode_to_pillows_colours():
    # 8-bit RGB pages are decoded by libtiff, the rest by Pillow: both must give Pillow's colours
    tile = np.asarray(Image.fromarray(RGB).resize((40, 48)))
    variants = {
        "uncompressed": _tiff(tile, photometric="rgb"),
        "lzw": _tiff(tile, photometric="rgb", compression="lzw"),
        "deflate": _tiff(tile, photometric="rgb", compression="zlib"),
        "packbits": _packbits_tiff(tile),
        "jpeg": _pillow_tiff(tile, "RGB", compression="jpeg"),
        "planar": _tiff(np.moveaxis(tile, -1, 0), photometric="rgb", planarconfig="separate"),
        "two pages": _tiff(np.stack([tile, 255 - tile]), photometric="rgb"),
        "cmyk": _pillow_tiff(tile, "CMYK"),
        "palette": _pillow_tiff(tile, "P"),
        "rotated 180 by the orientation tag": _tiff(tile, photometric="rgb", extratags=[(274, "H", 1, 3, False)]),
    }
    for name, data in variants.items():
        np.testing.assert_array_equal(decode_image(data, "t.tif"), _pillow_rgb(data), err_msg=name)
    np.testing.assert_array_equal(decode_image(variants["two pages"], "t.tif"), tile)  # the first page


def test_a_ycbcr_tiff_decodes_to_the_exact_inverse_of_its_samples():
    # libtiff inverts BT.601 exactly; Pillow's fixed-point conversion is 1 off on about half the pixels
    tile = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    samples = np.asarray(Image.fromarray(tile).convert("YCbCr")).astype(np.float64)
    luma, blue, red = samples[..., 0], samples[..., 1] - 128, samples[..., 2] - 128
    exact = np.stack([luma + 1.402 * red, luma - 0.344136 * blue - 0.714136 * red, luma + 1.772 * blue], axis=-1)
    decoded = decode_image(_pillow_tiff(tile, "YCbCr"), "y.tif").astype(np.float64)
    assert np.abs(decoded - np.clip(exact, 0, 255)).max() <= 0.5 + 1e-3


def test_the_real_sample_tiles_decode_to_pillows_colours():
    from tests.helpers import SHARED_DATA

    files = sorted(SHARED_DATA.glob("*_sample/*/*.tif"))
    assert len(files) >= 100
    for path in files:
        data = path.read_bytes()
        np.testing.assert_array_equal(decode_image(data, path.name), _pillow_rgb(data), err_msg=str(path))


# Pillow's transposes for the orientation tag's values 2-8 (as an image viewer turns the tile)
VIEWER_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                    7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


def _with_exif_orientation(tile: np.ndarray, orientation: int, file_format: str) -> bytes:
    image = Image.fromarray(tile)
    exif = image.getexif()
    exif[274] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format=file_format, exif=exif.tobytes(),
               **({"quality": 100, "subsampling": 0} if file_format == "JPEG" else {}))
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_decoder_turns_a_tile_by_its_orientation_tag(orientation):
    tile = RNG.integers(0, 256, (12, 8, 3), dtype=np.uint8)  # not square: a transpose changes the shape
    gray = tile[..., :1].repeat(3, -1)

    def shown(pixels: np.ndarray) -> np.ndarray:
        if orientation == 1:
            return pixels
        return np.asarray(Image.fromarray(pixels).transpose(VIEWER_TRANSPOSE[orientation]))

    tag = [(274, "H", 1, orientation, False)]
    files = {  # one per decoder: libtiff (8-bit RGB), Pillow (gray, JPEG, PNG), tifffile (16-bit RGB)
        "8-bit RGB TIFF": (_tiff(tile, photometric="rgb", extratags=tag), "t.tif", tile),
        "big-endian 8-bit RGB TIFF": (_tiff(tile, photometric="rgb", byteorder=">", extratags=tag), "t.tif", tile),
        "16-bit RGB TIFF": (_tiff(tile.astype(np.uint16) * 257, photometric="rgb", extratags=tag), "t.tif", tile),
        "8-bit gray TIFF": (_tiff(tile[..., 0], extratags=tag), "t.tif", gray),
        "JPEG with EXIF": (_with_exif_orientation(tile, orientation, "JPEG"), "t.jpg", tile),
        "PNG with EXIF": (_with_exif_orientation(tile, orientation, "PNG"), "t.png", tile),
    }
    for name, (data, file_name, colours) in files.items():
        want = shown(colours)
        decoded = decode_image(data, file_name)
        assert decoded.shape == want.shape, name
        tolerance = 6 if file_name.endswith(".jpg") else 0  # JPEG's lossy colours
        assert np.abs(decoded.astype(int) - want).max() <= tolerance, name


def test_decoding_a_cut_off_tiff_logs_nothing_beside_the_error(caplog):
    import logging

    from tests.helpers import SHARED_DATA

    data = sorted((SHARED_DATA / "nct_crc_he_sample").glob("*/*.tif"))[0].read_bytes()
    with caplog.at_level(logging.INFO), pytest.raises(UndecodableImage):
        decode_image(data[:5000], "cut.tif")  # tifffile logs "invalid offset to first page" where not hidden
    assert not [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
