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
  refused before TF would allocate its pixels. PNG and JPEG, nearly every
  file, are read first by `png_size` and `jpeg_size` (~2 us against Pillow's
  ~20-100 us, all of it holding the GIL that the decoding threads share);
  whatever they cannot walk cleanly goes to Pillow.
  """
  if is_jpeg_xl(raw):
    return jpeg_xl_size(raw)
  size = png_size(raw) or jpeg_size(raw)
  if size:
    return size
  try:
    image = open_header(raw)
    if image is None:
      return None
    with image:
      width, height = image.size
  except Exception:  # not an image Pillow knows: TF decides
    return None
  return height, width


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers (ITU T.81, B.1.1.3): SOF0-3, 5-7, 9-11, 13-15; C4
# (DHT), C8 (JPG) and CC (DAC) are not frames.
_JPEG_FRAMES = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA,
                          0xCB, 0xCD, 0xCE, 0xCF))
# Markers without a length (T.81, B.1.1.2): TEM, RST0-7, SOI.
_JPEG_STANDALONE = frozenset((0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7,
                              0xD8))


def png_size(raw: bytes) -> Optional[Tuple[int, int]]:
  """(height, width) from a PNG's IHDR, which the PNG specification puts
  first (ISO 15948, 5.6); None if `raw` does not start that way."""
  if raw.startswith(_PNG_MAGIC) and raw[12:16] == b"IHDR" and len(raw) >= 24:
    width, height = struct.unpack(">II", raw[16:24])
    return height, width
  return None


def jpeg_size(raw: bytes) -> Optional[Tuple[int, int]]:
  """(height, width) from a JPEG's frame header, or None.

  Walks the marker segments from SOI to the first scan (SOS) and takes the
  last frame header (SOFn) before it, as Pillow's JPEG plugin does; None
  when there is no frame header or a segment does not walk cleanly (junk
  between segments, a short length, the file ends first), for Pillow to
  judge.
  """
  if not raw.startswith(b"\xff\xd8"):
    return None
  size, position, end = None, 2, len(raw)
  while position + 4 <= end:
    if raw[position] != 0xFF:
      return None
    marker = raw[position + 1]
    if marker == 0xFF:  # a fill byte before a marker
      position += 1
      continue
    if marker in _JPEG_STANDALONE:
      position += 2
      continue
    if marker < 0xC0:
      # Not a marker with a length: FF 00 is a stuffed zero, which libjpeg
      # (TF's decoder) and Pillow skip as junk while they look on for the
      # next marker, and 02-BF are reserved. Reading a length here would walk
      # a different path from theirs (past the frame header they read):
      # Pillow judges it.
      return None
    length = int.from_bytes(raw[position + 2:position + 4], "big")
    if length < 2 or position + 2 + length > end:
      return None
    if marker == 0xDA:  # start of scan: the header is over
      return size
    if marker in _JPEG_FRAMES:
      if length < 8:
        return None
      size = (int.from_bytes(raw[position + 5:position + 7], "big"),
              int.from_bytes(raw[position + 7:position + 9], "big"))
    position += 2 + length
  return None


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
