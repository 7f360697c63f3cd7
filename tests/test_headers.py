"""transforms/headers.py's PNG and JPEG size readers against Pillow's, which
they stand in front of (Pillow still reads every other header)."""

import io
import struct
import zlib

import numpy as np
from PIL import Image

from exemplar.transforms import headers


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
  out = io.BytesIO()
  image.save(out, fmt, **options)
  return out.getvalue()


def _pillow_size(raw: bytes):
  image = headers.open_header(raw)
  if image is None:
    return None
  with image:
    return image.size[1], image.size[0]


def _jpegs():
  rng = np.random.default_rng(7)
  rgb = Image.fromarray(rng.integers(0, 255, (37, 53, 3), np.uint8))
  exif = Image.Exif()
  exif[0x0112] = 6
  yield _encoded(rgb, "JPEG")
  yield _encoded(rgb, "JPEG", progressive=True)
  yield _encoded(rgb, "JPEG", optimize=True, quality=20, subsampling=0)
  yield _encoded(rgb, "JPEG", exif=exif.tobytes())
  yield _encoded(rgb, "JPEG", icc_profile=b"\0" * 3000, restart_marker_blocks=1)
  yield _encoded(rgb.convert("L"), "JPEG")
  yield _encoded(rgb.convert("CMYK"), "JPEG")
  yield _encoded(Image.new("RGB", (1, 65500), "red"), "JPEG")


def test_jpeg_size_is_pillows_on_every_kind_of_jpeg():
  for raw in _jpegs():
    assert headers.jpeg_size(raw) == _pillow_size(raw) != None  # noqa: E711
    assert headers.header_size(raw) == _pillow_size(raw)
    # Fill bytes before a marker are allowed (ITU T.81, B.1.1.2).
    padded = raw[:2] + b"\xff\xff" + raw[2:]
    assert headers.jpeg_size(padded) == _pillow_size(raw)


def test_jpeg_size_claims_nothing_it_cannot_walk_to_a_scan():
  raw = next(_jpegs())
  sos = raw.index(b"\xff\xda")
  assert headers.jpeg_size(raw[:sos]) is None          # ends before the scan
  assert headers.jpeg_size(raw[:6]) is None            # ends inside a segment
  assert headers.jpeg_size(raw[:2] + b"junk" + raw[2:]) is None
  assert headers.jpeg_size(raw[:2] + b"\xff\x00\x00\x04" + raw[2:]) is None
  assert headers.jpeg_size(b"\xff\xd8\xff\xda\x00\x08" + b"\0" * 8) is None  # no frame
  assert headers.jpeg_size(b"\x89PNG") is None
  # A lying frame header still gives its claim: that is what max_pixels checks.
  frame = raw.index(b"\xff\xc0")
  huge = raw[:frame + 5] + struct.pack(">HH", 60000, 60000) + raw[frame + 9:]
  assert headers.jpeg_size(huge) == (60000, 60000) == _pillow_size(huge)


def test_png_size_is_pillows_and_needs_the_ihdr_first():
  rng = np.random.default_rng(8)
  for array in (rng.integers(0, 255, (19, 7, 3), np.uint8),
                rng.integers(0, 255, (1, 300), np.uint8),
                rng.integers(0, 255, (5, 6, 4), np.uint8)):
    raw = _encoded(Image.fromarray(array), "PNG")
    assert headers.png_size(raw) == _pillow_size(raw) == array.shape[:2]
    assert headers.header_size(raw) == array.shape[:2]
  assert headers.png_size(raw[:20]) is None
  text = b"tEXt" + b"k\0v"
  chunk = struct.pack(">I", 3) + text + struct.pack(">I", zlib.crc32(text))
  assert headers.png_size(raw[:8] + chunk + raw[8:]) is None  # IHDR not first


def test_jpeg_size_is_not_led_past_the_frame_by_a_stuffed_zero():
  """FF 00 between segments is junk to libjpeg and Pillow, which scan on to
  the next marker; read as a segment's length it could skip the real frame
  header and land on a small one hidden in an APP1 payload: --max_pixels
  would let a large image through."""
  raw = _encoded(Image.new("RGB", (2000, 3000)), "JPEG", quality=50)
  body = raw[2:]
  position = 0
  while body[position + 1] != 0xC4:  # the segments before the first DHT
    position += 2 + int.from_bytes(body[position + 2:position + 4], "big")
  fake = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, 10, 10, 3) + bytes(
      [1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1])
  skip = b"\xff\xe2" + struct.pack(">H", 2 + position)
  app1 = b"\xff\xe1" + struct.pack(">H", 2 + len(fake) + len(skip))
  crafted = b"\xff\xd8" + b"\xff\x00\x00\x06" + app1 + fake + skip + body
  assert _pillow_size(crafted) == (3000, 2000)
  assert headers.jpeg_size(crafted) is None
  assert headers.header_size(crafted) == (3000, 2000)
