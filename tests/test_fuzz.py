"""Fuzzing the decode rules: any bytes give a DecodeResult or a reason, fast.

Hypothesis feeds `ImageDecoder.decode` random bytes and real JPEG/PNG/GIF/BMP
files with bit flips, truncations, overwritten and inserted bytes, spliced
headers and rewritten dimension fields. Then one real pipeline run over a tree
of fuzzed files checks that every listed file ends up in exactly one of
manifest.csv and errors.csv.
"""

from __future__ import annotations

import csv
import io
import os
import struct
import time
from typing import Dict, List

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import noise_image, run_cli
from exemplar.transforms.decoding import DecodeResult, ImageDecoder, ImageSettings

MAX_PIXELS = 1 << 20
# One decode of a small image takes milliseconds; far above that means the
# decoder worked on what a header claimed rather than what the file holds.
SLOW_SECONDS = 5.0


def _encoded(image: Image.Image, fmt: str, **save_args) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **save_args)
  return buffer.getvalue()


def _seed_files() -> Dict[str, bytes]:
  rng = np.random.default_rng(0)
  rgb = Image.fromarray(noise_image(rng, 24, 32))
  frames = [Image.fromarray(noise_image(rng, 24, 32)) for _ in range(2)]
  return {
      "jpeg": _encoded(rgb, "JPEG", quality=80),
      "progressive_jpeg": _encoded(rgb, "JPEG", progressive=True),
      "png": _encoded(rgb, "PNG"),
      "palette_png": _encoded(rgb.convert("P"), "PNG", transparency=3),
      "gray_png": _encoded(rgb.convert("L"), "PNG"),
      "gif": _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]),
      "bmp": _encoded(rgb, "BMP"),
      # Not one of Keras's extensions, but TF decodes WebP whatever the name.
      "webp": _encoded(rgb, "WEBP", lossless=True),
  }


SEEDS = _seed_files()
FORMATS = sorted(SEEDS)


def set_dimensions(raw: bytes, fmt: str, width: int, height: int) -> bytes:
  """Rewrites the width and height fields of the format's header, if present."""
  data = bytearray(raw)

  def pack(layout: str, at: int, *values: int) -> None:
    if 0 <= at and at + struct.calcsize(layout) <= len(data):
      struct.pack_into(layout, data, at, *values)

  if fmt.endswith("jpeg"):
    for marker in (b"\xff\xc0", b"\xff\xc2"):
      at = data.find(marker)
      if at >= 0:
        pack(">HH", at + 5, height & 0xFFFF, width & 0xFFFF)
  elif fmt.endswith("png"):
    pack(">II", 16, width, height)  # IHDR (its CRC is now wrong)
  elif fmt == "gif":
    pack("<HH", 6, width & 0xFFFF, height & 0xFFFF)
  elif fmt == "bmp":
    pack("<ii", 18, width & 0x7FFFFFFF, height & 0x7FFFFFFF)
  return bytes(data)


def mutate(raw: bytes, fmt: str, operations) -> bytes:
  data = bytearray(raw)
  for op in operations:
    kind, where = op[0], op[1]
    at = int(where * len(data)) if data else 0
    if kind == "flip" and data:
      data[min(at, len(data) - 1)] ^= 1 << op[2]
    elif kind == "truncate":
      data = data[:at]
    elif kind == "overwrite":
      data[at:at + len(op[2])] = op[2]
    elif kind == "insert":
      data[at:at] = op[2]
    elif kind == "splice":  # this file's start, another file's rest
      other = SEEDS[op[2]]
      data = data[:at] + other[int(op[3] * len(other)):]
    elif kind == "dimensions":
      data = bytearray(set_dimensions(bytes(data), fmt, op[2], op[3]))
  return bytes(data)


fraction = st.floats(min_value=0, max_value=1, exclude_max=True)
operation = st.one_of(
    st.tuples(st.just("flip"), fraction, st.integers(0, 7)),
    st.tuples(st.just("truncate"), fraction),
    st.tuples(st.just("overwrite"), fraction, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("insert"), fraction, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("splice"), fraction, st.sampled_from(FORMATS), fraction),
    st.tuples(st.just("dimensions"), fraction,
              st.sampled_from([0, 1, 7, 255, 4096, 65535, 100_000, 2**31 - 1]),
              st.sampled_from([0, 1, 9, 256, 4096, 65535, 100_000, 2**31 - 1])),
)


@pytest.fixture(scope="module")
def decoder() -> ImageDecoder:
  return ImageDecoder(ImageSettings(height=12, width=10), max_pixels=MAX_PIXELS)


def check_decode(decoder: ImageDecoder, raw: bytes) -> None:
  started = time.monotonic()
  result = decoder.decode(raw)  # must not raise
  seconds = time.monotonic() - started
  assert seconds < SLOW_SECONDS, (seconds, raw[:64])
  if isinstance(result, str):
    assert result and "\n" not in result and len(result) < 400, result
    assert result.startswith(("empty file", "too large", "cannot decode")), result
  else:
    assert isinstance(result, DecodeResult)
    assert result.source_height * result.source_width <= MAX_PIXELS
    import tensorflow as tf
    assert tf.io.decode_png(result.encoded).shape == (12, 10, 3)


FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def test_seed_files_decode(decoder):
  for fmt, raw in SEEDS.items():
    result = decoder.decode(raw)
    assert isinstance(result, DecodeResult), (fmt, result)
    assert (result.source_height, result.source_width) == (24, 32)


@FUZZ
@given(raw=st.binary(max_size=4096))
def test_random_bytes(decoder, raw):
  check_decode(decoder, raw)


@FUZZ
@given(prefix=st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a",
                               b"GIF87a", b"BM", b"RIFF\x1a\x00\x00\x00WEBPVP8",
                               b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n"]),
       rest=st.binary(max_size=2048))
def test_random_bytes_behind_a_magic_number(decoder, prefix, rest):
  check_decode(decoder, prefix + rest)


@FUZZ
@given(fmt=st.sampled_from(FORMATS), operations=st.lists(operation, min_size=1, max_size=4))
def test_mutated_images(decoder, fmt, operations):
  check_decode(decoder, mutate(SEEDS[fmt], fmt, operations))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_truncation_of_every_seed_file(decoder, fmt):
  raw = SEEDS[fmt]
  for end in sorted(set(range(0, len(raw), max(1, len(raw) // 60))) | {len(raw) - 1}):
    check_decode(decoder, raw[:end])


def jpeg_xl_codestream(side: int) -> bytes:
  """A bare JPEG XL codestream header claiming side x side pixels: signature
  FF 0A, then SizeHeader bits (LSB first): not small, an 18-bit height - 1,
  ratio 1 (width = height), all-default metadata."""
  bits = [0, 0, 1] + [((side - 1) >> i) & 1 for i in range(18)] + [1, 0, 0, 1]
  bits += [0] * (-len(bits) % 8)
  body = bytes(sum(b << j for j, b in enumerate(bits[i:i + 8]))
               for i in range(0, len(bits), 8))
  return b"\xff\x0a" + body + b"\0" * 8


def test_jpeg_xl_header_claims_are_refused_as_too_large(decoder):
  raw = jpeg_xl_codestream(20_000)
  reason = decoder.decode(raw)
  assert isinstance(reason, str) and reason.startswith("too large"), reason


@FUZZ
@given(side=st.integers(1, 2**18), tail=st.binary(max_size=64))
def test_jpeg_xl_headers_of_any_size(decoder, side, tail):
  """Small claims reach TF's JPEG XL decoder, big ones are refused: never slow."""
  raw = jpeg_xl_codestream(side)[:-8] + tail
  check_decode(decoder, raw)


# --- one pipeline run over a tree of fuzzed files ----------------------------

def fuzzed_tree(root: str, count: int = 40) -> List[str]:
  """`count` files, mutated from the seeds with a fixed RNG; some stay valid."""
  rng = np.random.default_rng(1234)
  extensions = {"jpeg": "jpg", "progressive_jpeg": "jpeg", "png": "png",
                "palette_png": "png", "gray_png": "PNG", "gif": "gif", "bmp": "bmp",
                "webp": "jpg"}
  relative = []
  for i in range(count):
    fmt = FORMATS[i % len(FORMATS)]
    data = bytearray(SEEDS[fmt])
    kind = i % 5
    if kind == 1:  # bit flips
      for at in rng.integers(0, len(data), size=int(rng.integers(1, 20))):
        data[at] ^= 1 << int(rng.integers(0, 8))
    elif kind == 2:  # truncation
      data = data[:int(rng.integers(0, len(data)))]
    elif kind == 3:  # a header spliced onto another format's body
      other = SEEDS[FORMATS[int(rng.integers(0, len(FORMATS)))]]
      data = data[:int(rng.integers(1, 64))] + other[int(rng.integers(0, len(other))):]
    elif kind == 4:  # random bytes
      data = bytearray(rng.integers(0, 256, size=int(rng.integers(0, 600)),
                                    dtype=np.uint8).tobytes())
    rel = f"class_{i % 3}/fuzz_{i:02d}.{extensions[fmt]}"
    os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
    with open(os.path.join(root, rel), "wb") as f:
      f.write(bytes(data))
    relative.append(rel)
  return relative


@pytest.mark.slow
def test_pipeline_over_fuzzed_files_accounts_for_every_file(tmp_path):
  root, out = str(tmp_path / "images"), str(tmp_path / "out")
  listed = fuzzed_tree(root)
  assert run_cli(["--input_dir", root, "--output_dir", out, "--samples_per_class", "all",
                  "--image_size", "12", "10", "--max_pixels", str(MAX_PIXELS)]) == 0
  with open(os.path.join(out, "manifest.csv"), newline="") as f:
    stored = [row["relative_path"] for row in csv.DictReader(f)]
  with open(os.path.join(out, "errors.csv"), newline="") as f:
    errors = list(csv.DictReader(f))
  failed = [row["relative_path"] for row in errors]
  assert len(stored) == len(set(stored)) and len(failed) == len(set(failed))
  assert not set(stored) & set(failed)
  assert sorted(stored + failed) == sorted(listed)
  # The fuzzing is not vacuous: both outcomes occur, and every reason is one line.
  assert len(stored) >= 8 and len(failed) >= 8, (len(stored), len(failed))
  assert all(row["reason"] and "\n" not in row["reason"] for row in errors)
  assert os.path.exists(os.path.join(out, "_SUCCESS"))
