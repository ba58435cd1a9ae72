"""Image reading and the geometric preprocessing (chexmask_u_tools.images.read): no torch needed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from chexmask_u_tools.images import read as images
from chexmask_u_tools.errors import ImageError, InputError
from chexmask_u_tools.images.preprocess import crop_black_border, pad_to_square
from chexmask_u_tools.images.read import list_images, read_image, to_uint8


def test_module_imports_without_torch():
    code = "import sys, chexmask_u_tools.images; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture()
def gray() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(20, 30), dtype=np.uint8)


def test_gray_rgb_rgba_palette_and_bilevel(tmp_path, gray):
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), gray)
    rgb = np.stack([gray, 255 - gray, gray // 2], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    luma = (rgb.astype(float)[..., 0] * 299 + rgb[..., 1] * 587.0 + rgb[..., 2] * 114.0) / 1000
    assert np.abs(read_image(tmp_path / "c.png").astype(float) - luma).max() <= 1.0
    rgba = np.concatenate([rgb, np.zeros_like(gray)[..., None]], axis=-1)  # fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), read_image(tmp_path / "c.png"))
    Image.fromarray(gray).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == gray.shape
    Image.fromarray(gray > 128).save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_image(tmp_path / "b.png"), np.where(gray > 128, 255, 0))
    Image.fromarray(gray).save(tmp_path / "j.jpg", quality=95)
    assert np.abs(read_image(tmp_path / "j.jpg").astype(int) - gray).mean() < 8


def test_sixteen_bit_scaling(tmp_path):
    values = np.linspace(100, 4095, 20 * 30).reshape(20, 30).astype(np.uint16)  # 12-bit data in 16 bits
    Image.fromarray(values).save(tmp_path / "w.png")
    minmax = read_image(tmp_path / "w.png")
    assert minmax.dtype == np.uint8 and minmax.min() == 0 and minmax.max() == 255
    shifted = read_image(tmp_path / "w.png", high_bit="shift")
    np.testing.assert_array_equal(shifted, (values >> 8).astype(np.uint8))
    assert to_uint8(np.full((3, 3), 7.0)).max() == 0
    with pytest.raises(InputError):
        to_uint8(np.zeros((2, 2)), high_bit="shift")


def test_bad_files(tmp_path, gray, monkeypatch):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageError, match="not a readable image"):
        read_image(tmp_path / "notes.png")
    Image.fromarray(gray).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(ImageError, match="no such"):
        read_image(tmp_path / "missing.png")
    Image.fromarray(gray[:4, :4]).save(tmp_path / "tiny.png")
    with pytest.raises(ImageError, match="outside the accepted range"):
        read_image(tmp_path / "tiny.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    with pytest.raises(ImageError, match="outside the accepted range"):
        read_image(tmp_path / "full.png")


def test_dicom_without_pydicom_is_a_clear_error(tmp_path):
    if importlib.util.find_spec("pydicom") is not None:
        pytest.skip("pydicom is installed")
    (tmp_path / "x.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    with pytest.raises(ImageError, match="pydicom"):
        read_image(tmp_path / "x.dcm")


def test_pad_and_crop():
    image = np.ones((3, 6), dtype=np.uint8)
    padded, (top, left) = pad_to_square(image)
    assert padded.shape == (6, 6) and (top, left) == (1, 0)
    assert padded[1:4].all() and not padded[0].any() and not padded[4:].any()
    tall, offset = pad_to_square(np.ones((7, 2), dtype=np.uint8))
    assert tall.shape == (7, 7) and offset == (0, 2)
    framed = np.zeros((10, 12), dtype=np.uint8)
    framed[2:7, 3:11] = 5
    cropped, box = crop_black_border(framed)
    assert box == (2, 3, 5, 8) and (cropped == 5).all()
    black = np.zeros((4, 4), dtype=np.uint8)
    assert crop_black_border(black)[1] == (0, 0, 4, 4)


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(1, 255)))
def test_crop_undoes_pad(image):
    padded, (top, left) = pad_to_square(image)
    np.testing.assert_array_equal(padded[top : top + image.shape[0], left : left + image.shape[1]], image)
    cropped, box = crop_black_border(padded)
    np.testing.assert_array_equal(cropped, image)
    assert box == (top, left, *image.shape)


def test_list_images(tmp_path, gray):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.JPG", "sub/c.png"):
        Image.fromarray(gray).convert("RGB").save(tmp_path / name, format="PNG")
    (tmp_path / "readme.txt").write_text("x")
    assert [i for i, _ in list_images(tmp_path)] == ["a.JPG", "b.png", "sub/c.png"]
    assert [i for i, _ in list_images(tmp_path, recursive=False)] == ["a.JPG", "b.png"]
    listing = tmp_path / "list.txt"
    listing.write_text("# my images\nsub/c.png\n\nb.png\n")
    items = list_images(listing)
    assert [i for i, _ in items] == ["sub/c.png", "b.png"] and items[0][1] == tmp_path / "sub" / "c.png"
    listing.write_text("b.png\nb.png\n")
    with pytest.raises(InputError, match="duplicate"):
        list_images(listing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        list_images(tmp_path / "empty")
    with pytest.raises(InputError, match="does not exist"):
        list_images(tmp_path / "nope")


def _box_mean(image: np.ndarray, k: int) -> np.ndarray:
    """Mean of k x k blocks, partial blocks at the bottom / right averaged over what they hold."""
    height, width = image.shape
    rows = -(-height // k) * k
    cols = -(-width // k) * k
    padded = np.zeros((rows, cols))
    counts = np.zeros((rows, cols))
    padded[:height, :width], counts[:height, :width] = image, 1
    total = padded.reshape(rows // k, k, cols // k, k).sum(axis=(1, 3))
    return total / counts.reshape(rows // k, k, cols // k, k).sum(axis=(1, 3))


@settings(max_examples=15, deadline=None)
@given(st.integers(40, 90), st.integers(40, 90), st.integers(1, 25), st.booleans())
def test_read_image_reduced_png_is_the_block_mean(tmp_path_factory, height, width, out_side, square):
    rng = np.random.default_rng(height * 1000 + width)
    pixels = rng.integers(0, 256, size=(height, width), dtype=np.uint8)
    path = tmp_path_factory.mktemp("reduced") / "r.png"
    Image.fromarray(pixels).save(path)
    reduced, k, full = images.read_image_reduced(path, out_side, square=square)
    assert full == (height, width)
    assert k == max(1, (max(height, width) if square else min(height, width)) // out_side)
    assert reduced.shape == (-(-height // k), -(-width // k)) and reduced.dtype == np.uint8
    # Pillow rounds whole blocks to nearest and may truncate partial ones.
    np.testing.assert_allclose(reduced, _box_mean(pixels.astype(float), k), atol=1.0)


def test_read_image_reduced_jpeg_scales_in_the_decoder(tmp_path):
    yy, xx = np.mgrid[0:601, 0:450]
    pixels = np.clip(30 + 0.25 * xx + 0.2 * yy + 20 * np.sin(xx / 40.0), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "s.jpg", quality=95)
    reduced, k, full = images.read_image_reduced(tmp_path / "s.jpg", 100)  # 601 / 100 -> k = 4 (powers of 2)
    assert (k, full, reduced.shape) == (4, (601, 450), (151, 113))
    assert np.abs(reduced - _box_mean(read_image(tmp_path / "s.jpg").astype(float), 4)).max() <= 3
    stretched, k, _ = images.read_image_reduced(tmp_path / "s.jpg", 100, square=False)  # 450 / 100 -> k = 4
    assert k == 4 and stretched.shape == (151, 113)
    same, k, _ = images.read_image_reduced(tmp_path / "s.jpg", 400)  # less than twice: full decode
    assert k == 1 and np.array_equal(same, read_image(tmp_path / "s.jpg"))
    # EXIF orientation 6 (rotate 90 degrees): pixels and full size come upright, as read_image gives them.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "turned.jpg", quality=95, exif=exif)
    upright = read_image(tmp_path / "turned.jpg")
    assert upright.shape == (450, 601)
    turned, k, full = images.read_image_reduced(tmp_path / "turned.jpg", 100)
    assert (k, full, turned.shape) == (4, (450, 601), (113, 151))
    assert np.abs(turned - _box_mean(upright.astype(float), 4)).max() <= 3
    with pytest.raises(InputError):
        images.read_image_reduced(tmp_path / "s.jpg", 0)
    with pytest.raises(ImageError, match="no such"):
        images.read_image_reduced(tmp_path / "missing.jpg", 100)


# ----------------------------------------------------------------------------- memory and lying headers


def _write_png16(path, width: int, height: int, gradient_every: int = 1000) -> None:
    """A 16-bit grayscale PNG, compressed row by row (never the whole image in memory).

    Rows are zero except every ``gradient_every``-th, which holds ``x * 4`` (mod 65536),
    so the file is tiny (deflate compresses zeros ~1000:1) but decodes to ``2 * W * H`` bytes.
    """
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(6)
    zero_row = bytes(1 + 2 * width)
    ramp_row = b"\0" + (np.arange(width, dtype=np.uint32) * 4 % 65536).astype(">u2").tobytes()
    pieces = [compressor.compress(ramp_row if y % gradient_every == 0 else zero_row) for y in range(height)]
    pieces.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(pieces)) + chunk(b"IEND", b""))


_LIMITED_READ = """
import resource, sys
import numpy as np
from chexmask_u_tools.images.read import read_image
from chexmask_u_tools.errors import ImageError
size = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:")) * 1024
budget = int(sys.argv[2]) * 2**20
resource.setrlimit(resource.RLIMIT_AS, (size + budget, size + budget))
try:
    pixels = read_image(sys.argv[1])
except ImageError as error:
    print("ImageError", error)
except MemoryError:
    print("MemoryError")
else:
    print("ok", pixels.shape, pixels.dtype, int(pixels[0, 1]), int(pixels[0, -1]), int(pixels[1].max()), int(pixels[-1].max()))
"""


def _read_under_limit(path, budget_mb: int) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _LIMITED_READ, str(path), str(budget_mb)], check=False, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


@pytest.mark.slow
def test_huge_16bit_png_is_refused_before_decoding(tmp_path):
    # 13000 x 13000 x 16 bit: ~330 KB on disk, 338 MB decoded, 6 GB through a float64 conversion.
    path = tmp_path / "huge.png"
    _write_png16(path, 13000, 13000)
    assert path.stat().st_size < 1_000_000
    out = _read_under_limit(path, 200)
    assert out.startswith("ImageError") and "MAX_PIXELS" in out, out


@pytest.mark.slow
def test_large_16bit_png_reads_in_bounded_memory(tmp_path):
    # 9000 x 9000 x 16 bit (81 M pixels, inside MAX_PIXELS): 162 MB decoded.  A whole-image float64
    # conversion needs several 648 MB temporaries; the strip conversion stays near decoded + result.
    path = tmp_path / "large.png"
    _write_png16(path, 9000, 9000, gradient_every=1000)
    out = _read_under_limit(path, 700)
    # min..max = 0..(8999 * 4) -> 255; pixel x = 1 holds 4 -> round(4 * 255 / 35996) = 0; rows 1 and the last are zero.
    assert out == "ok (9000, 9000) uint8 0 255 0 0", out


def _lying_jpeg(tmp_path, width: int, height: int):
    import struct

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, size=(64, 64), dtype=np.uint8)).save(tmp_path / "small.jpg")
    data = bytearray((tmp_path / "small.jpg").read_bytes())
    frame = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, frame + 5, height, width)
    path = tmp_path / "lying.jpg"
    path.write_bytes(bytes(data))
    return path


def test_jpeg_whose_header_claims_more_than_its_data_is_refused(tmp_path):
    path = _lying_jpeg(tmp_path, 9000, 9000)  # 2.6 KB of data for 1.27 M blocks: Pillow decodes gray garbage
    with pytest.raises(ImageError, match="coded data"):
        read_image(path)
    with pytest.raises(ImageError, match="coded data"):
        images.read_image_reduced(path, 256)
    # Cut before its end marker: Pillow's own truncation error, never a partial image.
    data = (tmp_path / "small.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) - 300])
    with pytest.raises(ImageError, match="truncated"):
        read_image(tmp_path / "cut.jpg")
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_most_compressible_valid_jpegs_pass_the_data_check(tmp_path, progressive, mode):
    # A constant image is the smallest a JPEG of its size can be; it must not trip the bound.
    image = Image.new(mode, (1200, 900), 128 if mode == "L" else (128, 128, 128))
    image.save(tmp_path / "flat.jpg", quality=10, progressive=progressive, subsampling=2 if mode == "RGB" else -1)
    pixels = read_image(tmp_path / "flat.jpg")
    assert pixels.shape == (900, 1200) and np.abs(pixels.astype(int) - 128).max() <= 2
