"""A fast lossless PNG encoder: numpy's Up filter + libdeflate level 1.

    encode_png(pixels)  # uint8 [height, width, channels] -> PNG bytes

Why not a library's PNG encoder: the PNG encoders on PyPI that are well kept
(libpng through TF, Pillow, OpenCV or imagecodecs; libspng through
imagecodecs) spend 1.6-5.8 ms on a 256x256 RGB photo at any real compression,
because zlib's deflate does the work; the one under 1 ms stores the pixels
uncompressed (1.8x the bytes). libdeflate (through the `deflate` package)
compresses those rows in about a third of zlib's time at about zlib level
1's size. What is ours is only the container the PNG
specification defines around one deflate stream: the signature, IHDR, one
IDAT and IEND (RFC 2083 / ISO 15948, chapters 5 and 11). Every reader
(libpng in `tf.io.decode_png`, Pillow, TFDS's `Image` feature) gets the exact
pixels back; tests/test_png_encoder.py checks that. The measurements are in
benchmarks/png_encoders.md.

Output bytes are a pure function of the pixels and the pinned `deflate`
version. (ISA-L's deflate, through `isal`, was ~3x faster still, but gave
two different streams for the same rows in different processes: a resumed
run's shards then differed from an undisturbed run's.)
"""

from __future__ import annotations

import struct
from typing import List

import deflate
import numpy as np

# libdeflate's levels: 0 stores the rows uncompressed, 1 (the default) is its
# fastest compressing level, 12 its smallest. On 256x256 RGB photos, one
# core (benchmarks/stages/op_costs.py; benchmarks/results.md, section 5):
# 0: 0.04 ms, 197 kB; 1: 1.00 ms, 89 kB; 2: 1.5 ms, 84 kB; 6: 2.9 ms, 82 kB;
# 12: 39 ms, 77 kB.
DEFLATE_LEVEL = 1
MAX_LEVEL = 12
SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types by channel count: grey, grey+alpha, RGB, RGBA.
COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}
FILTER_UP = 2  # each byte minus the byte above it (mod 256)


def encoder_id(level: int = DEFLATE_LEVEL) -> str:
  """What fixes the bytes `encode_png` writes at `level` (for resume keys)."""
  from importlib import metadata
  return f"libdeflate (deflate {metadata.version('deflate')}) level {level} filter up"


def _chunk(tag: bytes, data) -> List[bytes]:
  """A PNG chunk as parts to join: length, type, data (bytes-like), CRC-32
  of type + data. libdeflate's CRC-32 is zlib's (the standard one), ~8x
  faster on a ~90 kB IDAT: 0.004 ms against 0.03 ms of a ~1 ms encode."""
  return [struct.pack(">I", len(data)), tag, data,
          struct.pack(">I", deflate.crc32(data, deflate.crc32(tag)))]


def filter_up(pixels: np.ndarray) -> np.ndarray:
  """uint8 [height, width, channels] -> PNG scanlines, filter type Up.

  Returns uint8 [height, 1 + width * channels]: each row's filter byte, then
  the row minus the row above (the first row minus zeros, i.e. itself).
  """
  height = pixels.shape[0]
  rows = pixels.reshape(height, -1)
  lines = np.empty((height, rows.shape[1] + 1), np.uint8)
  lines[:, 0] = FILTER_UP
  lines[0, 1:] = rows[0]
  np.subtract(rows[1:], rows[:-1], out=lines[1:, 1:])  # wraps mod 256
  return lines


def encode_png(pixels: np.ndarray, level: int = DEFLATE_LEVEL) -> bytes:
  """Pixels -> an 8-bit, non-interlaced PNG of them (lossless).

  Args:
    pixels: uint8 array [height, width, channels], channels 1 (grey),
      2 (grey + alpha), 3 (RGB) or 4 (RGBA); height and width >= 1.
    level: libdeflate's compression level, 0 (stored: fastest, largest) to
      12 (smallest, slowest); see DEFLATE_LEVEL for measured costs.

  Returns:
    PNG bytes that `tf.io.decode_png`, Pillow and TFDS decode to `pixels`.

  Raises:
    ValueError: not a uint8 array of that shape, or a level outside 0-12.
  """
  if not 0 <= level <= MAX_LEVEL:
    raise ValueError(f"encode_png's level is 0 to {MAX_LEVEL}; got {level}")
  if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in COLOR_TYPES:
    raise ValueError(f"encode_png takes uint8 [height, width, 1-4]; got "
                     f"{pixels.dtype} {list(pixels.shape)}")
  height, width, channels = pixels.shape
  if not height or not width:
    raise ValueError(f"encode_png takes a non-empty image; got {list(pixels.shape)}")
  header = struct.pack(">IIBBBBB", width, height, 8, COLOR_TYPES[channels], 0, 0, 0)
  idat = deflate.zlib_compress(filter_up(np.ascontiguousarray(pixels)), level)
  return b"".join([SIGNATURE, *_chunk(b"IHDR", header), *_chunk(b"IDAT", idat),
                   *_chunk(b"IEND", b"")])
