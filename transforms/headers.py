"""Image headers, read without decoding: the size a file claims and its EXIF
orientation.

`ImageDecoder` (transforms/decoding.py) refuses a file whose header claims
more than `max_pixels` before TF would allocate its pixels, and turns images
upright by their EXIF orientation when asked. Pillow reads the headers of
the formats it knows; JPEG XL, which TF decodes but Pillow does not read, has
its own small reader here.

Pillow's `Image.open` checks every image against the process-wide
`Image.MAX_IMAGE_PIXELS`: above it, it warns, and above twice it, it raises
before telling the size. exemplar changes neither that setting (it belongs
to the whole process, and to anyone else using Pillow in it) nor the
warnings filters (not thread-safe): `open_header` opens through Pillow's
registered format plugins as `Image.open` does, without that check. The
limit is exemplar's own `max_pixels`, applied by the caller.
"""

from __future__ import annotations

import io
import struct
from typing import Optional, Tuple

_EXIF_ORIENTATION = 0x0112
# A bare JPEG XL codestream, or the ISO container's signature box.
_JPEG_XL_MAGIC = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \x0d\x0a\x87\x0a")
# JPEG XL SizeHeader aspect ratios (ISO/IEC 18181-1, D.2): width = height * n / d.
_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9),
               6: (5, 4), 7: (2, 1)}


def is_jpeg_xl(raw: bytes) -> bool:
  """Whether `raw` starts like a JPEG XL file (bare codestream or container)."""
  return raw.startswith(_JPEG_XL_MAGIC)


def open_header(raw: bytes):
  """A Pillow image of `raw` with only its header read, or None when no
  Pillow format plugin takes it. Close it after use (`with`).

  What `Image.open` does (each registered plugin whose `accept` takes the
  first 16 bytes, in registration order, the common formats first), without
  its decompression-bomb check against `Image.MAX_IMAGE_PIXELS` (see the
  module docstring). Errors other than a plugin's "not my format" propagate,
  as they do from `Image.open`.
  """
  from PIL import Image
  Image.preinit()  # the common formats first, as Image.open tries them
  Image.init()     # then every other plugin; both are no-ops once done
  prefix = raw[:16]
  for format_id in list(Image.ID):
    factory, accept = Image.OPEN[format_id]
    accepted = not accept or accept(prefix)
    if not accepted or isinstance(accepted, str):  # a str: a warning, not a match
      continue
    try:
      return factory(io.BytesIO(raw), "")
    except (SyntaxError, IndexError, TypeError, struct.error):
      continue  # not this format after all
  return None


def header_size(raw: bytes) -> Optional[Tuple[int, int]]:
  """(height, width) from the image header, without decoding; None if unknown.

  Pillow reads only the header here, so a file claiming enormous dimensions is
  refused before TF would allocate its pixels.
  """
  if is_jpeg_xl(raw):
    return jpeg_xl_size(raw)
  try:
    image = open_header(raw)
    if image is None:
      return None
    with image:
      width, height = image.size
  except Exception:  # not an image Pillow knows: TF decides
    return None
  return height, width


def jpeg_xl_size(raw: bytes) -> Optional[Tuple[int, int]]:
  """(height, width) from a JPEG XL SizeHeader (bare or boxed), or None.

  TF decodes JPEG XL but Pillow cannot read its header, so this reads the
  few bit-packed fields that give the size.
  """
  if raw.startswith(_JPEG_XL_MAGIC[1]):  # the container: find the codestream box
    at = raw.find(b"jxlc")
    if at < 0 or raw[at + 4:at + 6] != b"\xff\x0a":
      return None
    raw = raw[at + 4:]
  bits = int.from_bytes(raw[2:18], "little")
  position = 0

  def read(count: int) -> int:
    nonlocal position
    value = (bits >> position) & ((1 << count) - 1)
    position += count
    return value

  def u32() -> int:
    return read((9, 13, 18, 30)[read(2)]) + 1

  small = read(1)
  height = (read(5) + 1) * 8 if small else u32()
  ratio = read(3)
  if ratio:
    numerator, denominator = _JXL_RATIOS[ratio]
    width = height * numerator // denominator
  else:
    width = (read(5) + 1) * 8 if small else u32()
  return height, width


def exif_orientation(raw: bytes) -> int:
  """The EXIF orientation tag (1-8), 1 when absent or unreadable."""
  try:
    image = open_header(raw)
    if image is None:
      return 1
    with image:
      value = int(image.getexif().get(_EXIF_ORIENTATION, 1))
  except Exception:  # no or broken EXIF: upright
    return 1
  return value if 1 <= value <= 8 else 1
