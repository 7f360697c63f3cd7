"""Every valid image decodes in every colour mode, in the right colours.

TF's decoders (so Keras) cannot give every mode for every format: BMP has no
grayscale, GIF is RGB only, and an indexed-colour BMP's palette is ignored
(8-bit: the indices come out as grey levels; 1-, 2- and 4-bit: refused).
exemplar decodes those at their own channels and converts them with TF ops
(`tf.image.rgb_to_grayscale`; an opaque alpha for rgba), and reads an
indexed BMP through its palette. Real files are written with Pillow (or, for
the kinds Pillow cannot write, by hand and checked against Pillow's reading).
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
from typing import Dict, Sequence, Tuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import noise_image, run_cli
from tests.test_bad_input import read_csv, read_records
from exemplar.transforms.decoding import DecodeResult, ImageDecoder, ImageSettings

HEIGHT, WIDTH = 12, 18  # every test image; decoded at this size bilinear is the identity
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
COLOURS = [RED, GREEN, BLUE, (255, 255, 255), (10, 20, 30), (200, 120, 40), (128, 128, 128)]
MODES = {"grayscale": 1, "rgb": 3, "rgba": 4}


# --- files --------------------------------------------------------------------

def encoded(image: Image.Image, fmt: str, **save_args) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **save_args)
  return buffer.getvalue()


def solid(colour, mode: str = "RGB") -> Image.Image:
  return Image.new(mode, (WIDTH, HEIGHT), colour)


def noise(seed: int, channels: int = 3) -> np.ndarray:
  return noise_image(np.random.default_rng(seed), HEIGHT, WIDTH, channels)


def palette_image(seed: int, colours: int = 16) -> Image.Image:
  """A Pillow 'P' image: random indices into a random palette."""
  rng = np.random.default_rng(seed)
  image = Image.fromarray(rng.integers(0, colours, (HEIGHT, WIDTH), dtype=np.uint8), "P")
  image.putpalette(rng.integers(0, 256, 3 * colours, dtype=np.uint8).tobytes())
  return image


def indexed_bmp(indices: np.ndarray, palette: Sequence[Tuple[int, int, int]], bits: int,
                top_down: bool = False, compression: int = 0, header_size: int = 40,
                pixels: bytes = b"") -> bytes:
  """An uncompressed indexed-colour BMP (BITMAPINFOHEADER, or a longer
  header of zeros after it), as Pillow cannot write 2- or 4-bit ones.
  `pixels` replaces the packed pixel data (for RLE)."""
  height, width = indices.shape
  per_byte = 8 // bits
  row_bytes = (width * bits + 31) // 32 * 4
  rows = []
  for row in indices:
    packed = bytearray(row_bytes)
    for x, value in enumerate(row):
      packed[x // per_byte] |= int(value) << (8 - bits * (x % per_byte + 1))
    rows.append(bytes(packed))
  data = pixels or b"".join(rows if top_down else rows[::-1])
  colour_table = b"".join(bytes((b, g, r, 0)) for r, g, b in palette)
  offset = 14 + header_size + len(colour_table)
  info = struct.pack("<IiiHHIIiiII", header_size, width, -height if top_down else height,
                     1, bits, compression, len(data), 2835, 2835, len(palette), 0)
  info += b"\0" * (header_size - 40)
  return (struct.pack("<2sIHHI", b"BM", offset + len(data), 0, 0, offset)
          + info + colour_table + data)


def rle8(indices: np.ndarray) -> bytes:
  """BI_RLE8 pixel data: one run per pixel, rows bottom-up."""
  out = bytearray()
  for row in indices[::-1]:
    for value in row:
      out += bytes((1, int(value)))
    out += b"\0\0"  # end of line
  return bytes(out) + b"\0\1"  # end of bitmap


def bmp16(array: np.ndarray) -> bytes:
  """A 16-bit (BI_RGB, 5-5-5) BMP, which Pillow reads but cannot write."""
  height, width, _ = array.shape
  values = ((array[..., 0].astype(np.uint16) >> 3) << 10
            | (array[..., 1].astype(np.uint16) >> 3) << 5 | array[..., 2] >> 3)
  row_bytes = (width * 2 + 3) // 4 * 4
  data = b"".join(row.astype("<u2").tobytes().ljust(row_bytes, b"\0")
                  for row in values[::-1])
  info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 16, 0, len(data), 2835, 2835, 0, 0)
  return struct.pack("<2sIHHI", b"BM", 54 + len(data), 0, 0, 54) + info + data


def os2_bmp(indices: np.ndarray, palette) -> bytes:
  """An 8-bit BMP with the 12-byte OS/2 BITMAPCOREHEADER (3-byte palette)."""
  height, width = indices.shape
  row_bytes = (width + 3) // 4 * 4
  data = b"".join(row.astype(np.uint8).tobytes().ljust(row_bytes, b"\0")
                  for row in indices[::-1])
  colour_table = b"".join(bytes((b, g, r)) for r, g, b in palette)
  offset = 14 + 12 + len(colour_table)
  return (struct.pack("<2sIHHI", b"BM", offset + len(data), 0, 0, offset)
          + struct.pack("<IHHHH", 12, width, height, 1, 8) + colour_table + data)


def pillow_rgb(raw: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(raw)) as image:
    return np.asarray(image.convert("RGB"))


# --- what the modes must give -------------------------------------------------

def tf_grayscale(rgb) -> np.ndarray:
  """TF's rgb_to_grayscale of uint8 RGB pixels (or of one colour)."""
  import tensorflow as tf
  return tf.image.rgb_to_grayscale(np.asarray(rgb, np.uint8)).numpy()


def in_mode(rgb: np.ndarray, mode: str) -> np.ndarray:
  """Known RGB pixels as the mode must store them."""
  if mode == "grayscale":
    return tf_grayscale(rgb)
  if mode == "rgba":
    return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
  return rgb


_decoders: Dict[str, ImageDecoder] = {}


def decode(raw: bytes, mode: str):
  """Stored pixels (uint8 [H, W, C]) for a file, or the failure reason."""
  import tensorflow as tf
  if mode not in _decoders:
    _decoders[mode] = ImageDecoder(ImageSettings(height=HEIGHT, width=WIDTH, color_mode=mode))
  result = _decoders[mode].decode(raw)
  if not isinstance(result, DecodeResult):
    return result
  assert (result.source_height, result.source_width) == (HEIGHT, WIDTH)
  return tf.io.decode_png(result.encoded).numpy()


def assert_decodes_to(raw: bytes, mode: str, expected: np.ndarray) -> None:
  pixels = decode(raw, mode)
  assert not isinstance(pixels, str), pixels
  assert pixels.shape == (HEIGHT, WIDTH, MODES[mode])
  np.testing.assert_array_equal(pixels, expected)


# --- what TF does by itself (why exemplar converts) ---------------------------

def test_what_tf_does_with_each_bmp_and_gif_kind():
  """The TF 2.21 behaviour this file works around, kind by kind."""
  import tensorflow as tf

  def tf_decode(raw, channels):
    try:
      return tf.io.decode_image(raw, channels=channels, expand_animations=False).numpy()
    except tf.errors.InvalidArgumentError as e:
      return e.message

  indices = np.ones((HEIGHT, WIDTH), np.uint8)
  palette = [(0, 0, 0), RED]
  # 8-bit palette BMP: the index (1) comes out as a grey level; no grayscale.
  p8 = tf_decode(indexed_bmp(indices, palette, 8), 3)
  assert p8[0, 0].tolist() == [1, 1, 1]
  assert "must be 0, 3 or 4 for BMP" in tf_decode(indexed_bmp(indices, palette, 8), 1)
  # 1-, 2- and 4-bit: refused in every mode.
  for bits in (1, 2, 4):
    for channels in (0, 3):
      assert "must be 1, 3 or 4" in tf_decode(indexed_bmp(indices, palette, bits), channels)
  # 16-bit: refused; 24- and 32-bit: read, but not as grayscale.
  assert "must be 1, 3 or 4, was 2" in tf_decode(bmp16(noise(1)), 3)
  for raw in (encoded(solid(RED), "BMP"), encoded(solid(RED + (128,), "RGBA"), "BMP")):
    assert tf_decode(raw, 3)[0, 0].tolist() == list(RED)
    assert "must be 0, 3 or 4 for BMP" in tf_decode(raw, 1)
  # GIF: RGB only.
  gif = encoded(solid(RED), "GIF")
  assert tf_decode(gif, 3)[0, 0].tolist() == list(RED)
  assert "channels must be 0 or 3 for GIF, got 1" in tf_decode(gif, 1)
  assert "channels must be 0 or 3 for GIF, got 4" in tf_decode(gif, 4)


def test_how_tf_grayscale_of_png_relates_to_rgb_to_grayscale():
  """decode_image(channels=1) of an RGB PNG is libpng's conversion (weights
  .299/.587/.114 in 15-bit fixed point, truncated); tf.image.rgb_to_grayscale
  (exemplar's conversion of BMP/GIF) has the same weights but rounds. They
  agree on greys and primaries and differ by at most 1 elsewhere."""
  import tensorflow as tf

  def png_grey(pixels):
    raw = encoded(Image.fromarray(np.asarray(pixels, np.uint8)), "PNG")
    return tf.io.decode_image(raw, channels=1).numpy()

  pixels = noise(7)
  r, g, b = (pixels[..., i].astype(np.int64) for i in range(3))
  libpng = np.where((r == g) & (g == b), r, (9797 * r + 19234 * g + 3737 * b) >> 15)
  np.testing.assert_array_equal(png_grey(pixels)[..., 0], libpng)
  assert np.abs(png_grey(pixels).astype(int) - tf_grayscale(pixels).astype(int)).max() <= 1
  greys = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=-1)
  np.testing.assert_array_equal(tf_grayscale(greys), png_grey(greys))
  for colour in (RED, GREEN, BLUE):
    assert png_grey([[colour]])[0, 0, 0] == tf_grayscale([[colour]])[0, 0, 0]
  assert (png_grey([[(200, 120, 40)]])[0, 0, 0], tf_grayscale([[(200, 120, 40)]])[0, 0, 0]) \
      == (134, 135)  # 134.8: truncated vs rounded


# --- BMP and GIF in grayscale and rgba ----------------------------------------

@pytest.mark.parametrize("mode", ["grayscale", "rgba"])
@pytest.mark.parametrize("colour", COLOURS, ids=str)
def test_solid_gif_and_bmp_decode_to_the_converted_colour(mode, colour):
  expected = in_mode(np.full((HEIGHT, WIDTH, 3), colour, np.uint8), mode)
  assert_decodes_to(encoded(solid(colour), "GIF"), mode, expected)
  assert_decodes_to(encoded(solid(colour), "BMP"), mode, expected)


@pytest.mark.parametrize("mode", list(MODES))
def test_noisy_gif_and_bmp_decode_in_every_mode(mode):
  """Many colours at once: the GIF's first frame and a 24-bit BMP, each the
  conversion of its RGB pixels."""
  frames = [Image.fromarray(noise(10 + i)) for i in range(2)]
  gif = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
  assert_decodes_to(gif, mode, in_mode(pillow_rgb(gif), mode))
  bmp = encoded(Image.fromarray(noise(12)), "BMP")
  assert_decodes_to(bmp, mode, in_mode(noise(12), mode))


def test_32_bit_bmp_drops_its_alpha_for_grayscale_and_keeps_it_for_rgba():
  rgba = noise(13, 4)
  raw = encoded(Image.fromarray(rgba, "RGBA"), "BMP")
  assert_decodes_to(raw, "grayscale", tf_grayscale(rgba[..., :3]))
  assert_decodes_to(raw, "rgba", rgba)  # as TF's decode_image(channels=4) gives it
  assert_decodes_to(raw, "rgb", rgba[..., :3])


def test_webp_decodes_in_every_mode():
  """Outside Keras's extensions, but a WebP named .png reaches TF, which gives
  only its own channel count (no grayscale)."""
  rgb, rgba = noise(14), noise(15, 4)
  lossless = encoded(Image.fromarray(rgb), "WEBP", lossless=True)
  with_alpha = encoded(Image.fromarray(rgba, "RGBA"), "WEBP", lossless=True)
  for mode in MODES:
    assert_decodes_to(lossless, mode, in_mode(rgb, mode))
  assert_decodes_to(with_alpha, "grayscale", tf_grayscale(rgba[..., :3]))
  assert_decodes_to(with_alpha, "rgb", rgba[..., :3])
  assert_decodes_to(with_alpha, "rgba", rgba)


# --- indexed-colour BMP -------------------------------------------------------

def test_solid_red_8_bit_palette_bmp_is_stored_red():
  image = Image.new("P", (WIDTH, HEIGHT), 1)
  image.putpalette(bytes((0, 0, 0) + RED))
  raw = encoded(image, "BMP")
  assert raw[28] == 8  # an 8-bit palette BMP, as Pillow writes it
  assert_decodes_to(raw, "rgb", np.full((HEIGHT, WIDTH, 3), RED, np.uint8))
  assert_decodes_to(raw, "grayscale", np.full((HEIGHT, WIDTH, 1), 76, np.uint8))
  assert_decodes_to(raw, "rgba", np.full((HEIGHT, WIDTH, 4), RED + (255,), np.uint8))


@pytest.mark.parametrize("mode", list(MODES))
def test_pillow_palette_and_bilevel_bmps_get_their_colours(mode):
  """The indexed BMPs Pillow writes: 'P' (8-bit, 16 colours used), 'L'
  (8-bit, grey palette) and '1' (1-bit)."""
  files = [encoded(palette_image(20), "BMP"), encoded(Image.fromarray(noise(21, 1)), "BMP"),
           encoded(Image.fromarray(noise(22, 1)).convert("1"), "BMP")]
  assert [raw[28] for raw in files] == [8, 8, 1]
  for raw in files:
    assert_decodes_to(raw, mode, in_mode(pillow_rgb(raw), mode))


@pytest.mark.parametrize("top_down", [False, True], ids=["bottom_up", "top_down"])
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_indexed_bmp_of_every_bit_count_gets_its_palette(bits, top_down):
  rng = np.random.default_rng(bits)
  colours = 2 ** bits
  palette = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(colours)]
  indices = rng.integers(0, colours, (HEIGHT, WIDTH))
  raw = indexed_bmp(indices, palette, bits, top_down=top_down)
  expected = np.asarray(palette, np.uint8)[indices]
  if bits != 2:  # Pillow reads 1-, 4- and 8-bit BMPs: the file is what we meant
    np.testing.assert_array_equal(pillow_rgb(raw), expected)
  for mode in MODES:
    assert_decodes_to(raw, mode, in_mode(expected, mode))


def test_indexed_bmp_with_a_v5_header_gets_its_palette():
  indices = np.random.default_rng(3).integers(0, 3, (HEIGHT, WIDTH))
  raw = indexed_bmp(indices, [RED, GREEN, BLUE], 4, header_size=124)
  assert_decodes_to(raw, "rgb", np.asarray([RED, GREEN, BLUE], np.uint8)[indices])


# --- BMP kinds exemplar cannot read: recorded with a reason, never wrong pixels

def unsupported_bmps() -> Dict[str, Tuple[bytes, str]]:
  indices = np.random.default_rng(4).integers(0, 3, (HEIGHT, WIDTH))
  palette = [RED, GREEN, BLUE]
  rle = indexed_bmp(indices, palette, 8, compression=1, pixels=rle8(indices))
  beyond = indexed_bmp(np.full((HEIGHT, WIDTH), 5), palette, 8)
  full = indexed_bmp(indices, palette, 8)
  return {
      "rle8": (rle, "cannot decode: unsupported BMP: indexed colour compressed with method 1 "
                    "(1: RLE8, 2: RLE4)"),
      "16_bit": (bmp16(noise(5)), "cannot decode: unsupported BMP: 16 bits per pixel"),
      "os2_header": (os2_bmp(indices, palette),
                     "cannot decode: unsupported BMP: a header of 12 bytes (OS/2, or invalid)"),
      "beyond_palette": (beyond, "cannot decode: invalid BMP: a pixel refers to colour 5 "
                                 "of a palette of 3"),
      "truncated": (full[:-20], "cannot decode: truncated BMP: its pixels need"),
  }


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("kind", list(unsupported_bmps()))
def test_unsupported_bmp_kinds_are_refused_with_a_clear_reason(kind, mode):
  raw, reason = unsupported_bmps()[kind]
  if kind in ("rle8", "16_bit", "os2_header"):  # real files: Pillow reads them
    assert pillow_rgb(raw).shape == (HEIGHT, WIDTH, 3)
  result = decode(raw, mode)
  assert isinstance(result, str) and result.startswith(reason), result
  assert "\n" not in result and "{{" not in result


# Header fields of an indexed BMP (offset, layout) and values worth trying.
_FIELDS = {"data_offset": (10, 4), "header_size": (14, 4), "width": (18, 4),
           "height": (22, 4), "bits": (28, 2), "compression": (30, 4), "colours_used": (46, 4)}
_VALUES = [0, 1, 2, 3, 4, 8, 12, 16, 24, 32, 40, 64, 124, 255, 256, 257, 4096,
           65535, 2**31 - 1, -1, -(2**31)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(st.tuples(st.sampled_from(list(_FIELDS)), st.sampled_from(_VALUES)),
                        min_size=1, max_size=4),
       keep=st.floats(min_value=0.0, max_value=1.0))
def test_mangled_indexed_bmp_headers_decode_or_give_a_reason(changes, keep):
  """With no --max_pixels, whatever an indexed BMP's header claims gives
  pixels or a one-line reason, quickly, and never an unhandled error."""
  raw = bytearray(indexed_bmp(np.random.default_rng(6).integers(0, 16, (HEIGHT, WIDTH)),
                              [(i, 2 * i, 3 * i) for i in range(16)], 4))
  for field, value in changes:
    offset, size = _FIELDS[field]
    raw[offset:offset + size] = (value % 2**(8 * size)).to_bytes(size, "little")
  raw = bytes(raw[:max(2, int(keep * len(raw)) if keep < 0.9 else len(raw))])
  started = time.monotonic()
  result = decode_any_size(raw, "grayscale" if keep < 0.5 else "rgb")
  assert time.monotonic() - started < 5.0
  if isinstance(result, str):
    assert result.startswith("cannot decode: ") and "\n" not in result, result
    assert len(result) < 400 and "{{" not in result, result


def decode_any_size(raw: bytes, mode: str = "rgb"):
  """Like `decode`, for files of any size (stored at HEIGHT x WIDTH): a
  mangled header may describe another valid image."""
  if ("any", mode) not in _decoders:
    _decoders[("any", mode)] = ImageDecoder(
        ImageSettings(height=HEIGHT, width=WIDTH, color_mode=mode))
  return _decoders[("any", mode)].decode(raw)


# --- the serving graph --------------------------------------------------------

def test_serving_graph_decodes_the_same_colours():
  """tft_graph's preprocessing_fn calls the same decode_and_resize: a palette
  BMP and a GIF come out right in serving too, in grayscale."""
  import tensorflow as tf
  from exemplar.transforms import tft_graph
  settings = ImageSettings(height=HEIGHT, width=WIDTH, color_mode="grayscale")
  preprocessing_fn = tf.function(tft_graph.make_preprocessing_fn(["a"], settings))
  palette = palette_image(30)
  files = [encoded(palette, "BMP"), encoded(solid(BLUE), "GIF")]
  outputs = preprocessing_fn({"image_bytes": tf.constant(files),
                              "class_name": tf.constant([b"a", b"a"])})
  for raw, image in zip(files, outputs["image"].numpy()):
    np.testing.assert_array_equal(image, tf_grayscale(pillow_rgb(raw)).astype(np.float32))


# --- a real run ---------------------------------------------------------------

@pytest.mark.slow
def test_grayscale_run_keeps_a_class_made_only_of_gif_and_bmp(tmp_path):
  root, out = tmp_path / "images", str(tmp_path / "out")
  sprites = {
      "red.gif": encoded(solid(RED), "GIF"),
      "noise.gif": encoded(Image.fromarray(noise(40)), "GIF"),
      "rgb24.bmp": encoded(Image.fromarray(noise(41)), "BMP"),
      "rgba32.bmp": encoded(Image.fromarray(noise(42, 4), "RGBA"), "BMP"),
      "palette8.bmp": encoded(palette_image(43), "BMP"),
      "bilevel.bmp": encoded(Image.fromarray(noise(44, 1)).convert("1"), "BMP"),
      "nibbles.bmp": indexed_bmp(np.random.default_rng(45).integers(0, 3, (HEIGHT, WIDTH)),
                                 [RED, GREEN, BLUE], 4),
  }
  photos = {"a.png": encoded(Image.fromarray(noise(46)), "PNG")}
  for class_name, files in (("sprites", sprites), ("photos", photos)):
    (root / class_name).mkdir(parents=True)
    for name, raw in files.items():
      (root / class_name / name).write_bytes(raw)

  assert run_cli(["--input_dir", str(root), "--output_dir", out, "--samples_per_class", "all",
                  "--image_size", str(HEIGHT), str(WIDTH), "--color_mode", "grayscale"]) == 0

  assert read_csv(os.path.join(out, "errors.csv")) == []
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert summary["num_failed"] == 0 and summary["classes_short"] == []
  assert summary["num_examples"] == len(sprites) + len(photos)
  records = read_records(out)
  assert set(records) == {f"sprites/{n}" for n in sprites} | {"photos/a.png"}
  for name, raw in sprites.items():
    pixels = records[f"sprites/{name}"][0]
    assert pixels.shape == (HEIGHT, WIDTH, 1), name
    np.testing.assert_array_equal(pixels, tf_grayscale(pillow_rgb(raw)), err_msg=name)
  # The PNG is Keras's (libpng's) grayscale, as before.
  import tensorflow as tf
  np.testing.assert_array_equal(records["photos/a.png"][0],
                                tf.io.decode_image(photos["a.png"], channels=1).numpy())


@pytest.mark.parametrize("head, channels, plain", [
    (b"\x89PNG\r\n\x1a\n", 1, True), (b"\x89PNG\r\n\x1a\n", 4, True),
    (b"\xff\xd8\xff\xe0", 3, True), (b"\xff\xd8\xff\xe0", 1, True),
    (b"\xff\xd8\xff\xe0", 4, False),  # JPEG + alpha: converted by decode_pixels
    (b"BM", 3, False), (b"GIF89a", 3, False), (b"RIFF\0\0\0\0WEBP", 3, False),
    (b"\xff\x0a", 3, False), (b"", 3, False)])
def test_only_files_decode_image_decodes_alone_skip_the_dispatch(head, channels, plain):
  from exemplar.transforms.decoding import is_plain
  assert is_plain(head, channels) is plain
