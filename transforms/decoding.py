"""Stage 4: decode and resize only the chosen images.

`decode_and_resize` is the one definition of the image preprocessing. It uses
the same TF ops, in the same order, as `tf.keras.utils.image_dataset_from_directory`
(`tf.image.decode_image(..., expand_animations=False)`, then `tf.image.resize`,
or Keras's `smart_resize` centre crop with `crop_to_aspect_ratio`), so the
pixels equal what Keras gives for the same file and settings. Where Keras
fails or is wrong (a BMP or GIF in grayscale, a GIF in rgba, an indexed-colour
BMP), `decode_pixels` decodes and converts with TF ops instead. Both the Beam
decode stage and the TFT `preprocessing_fn` (transforms/tft_graph.py) call it,
so training data and serving apply exactly the same preprocessing.

TensorFlow is imported lazily (in `DoFn.setup` on workers), so importing this
module to build a pipeline stays cheap.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import io
import itertools
import os
import re
import threading
import time
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from exemplar.transforms import contact_sheet, listing

INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area", "lanczos3",
                  "lanczos5", "gaussian", "mitchellcubic")
COLOR_MODES = {"rgb": 3, "grayscale": 1, "rgba": 4}
IMAGE_FORMATS = ("png", "jpeg")
# zlib level 1: ~5x faster than libpng's default (6) on 256x256 photos, ~6%
# larger; the pixels are the same (PNG is lossless).
PNG_COMPRESSION = 1

FAILURES_TAG = "failures"
# Decoding threads per worker: two per core (at most 16). Each thread also
# spends time holding the GIL (reading, hashing, thumbnails) or waiting for
# TF's inter-op threads, so one per core left the cores ~25% idle: on 2 cores,
# 4 threads made `all` 9-14% faster than 2; 6 or 8 gained nothing more.
DECODE_THREADS = max(1, min(16, 2 * (os.cpu_count() or 1)))


@dataclasses.dataclass(frozen=True)
class ImageSettings:
  """How chosen images are decoded, resized and stored."""
  height: int = 256
  width: int = 256
  interpolation: str = "bilinear"
  crop_to_aspect_ratio: bool = False
  color_mode: str = "rgb"
  image_format: str = "png"
  jpeg_quality: int = 95

  @property
  def channels(self) -> int:
    return COLOR_MODES[self.color_mode]

  @property
  def shape(self) -> Tuple[int, int, int]:
    return (self.height, self.width, self.channels)


def decode_and_resize(image_bytes, settings: ImageSettings, orientation=None):
  """Encoded image bytes (scalar tf.string) -> (float32 [H, W, C], src h, src w).

  Exactly Keras's `_load_image_tf` after its `tf.io.read_file` wherever Keras
  can decode the file (see `decode_pixels` for the files it cannot). With an
  EXIF `orientation` (int32 tensor; `--exif_transpose`) the image is turned
  upright first, which Keras does not do.
  """
  import tensorflow as tf
  image = decode_pixels(image_bytes, settings.channels)
  if orientation is not None:
    image = apply_orientation(image, orientation)
  shape = tf.shape(image)
  source_height, source_width = shape[0], shape[1]
  size = (settings.height, settings.width)
  if settings.crop_to_aspect_ratio:
    image = _centre_crop_to_aspect(image, size)
  image = tf.image.resize(image, size, method=settings.interpolation)
  image.set_shape(settings.shape)
  return image, source_height, source_width


# Magic bytes as TF's decode_image classifies files (decode_image_op.cc).
_BMP_MAGIC, _GIF_MAGIC, _RIFF_MAGIC, _WEBP_MAGIC = b"BM", b"GIF8", b"RIFF", b"WEBP"
_BMP_INFO_HEADER = 40  # BITMAPINFOHEADER; V4 (108) and V5 (124) extend it
_BMP_HEADER_BYTES = 54  # file header (14) + BITMAPINFOHEADER


def decode_pixels(image_bytes, channels: int):
  """Encoded bytes (scalar tf.string) -> uint8 [H, W, channels].

  JPEG, PNG and JPEG XL: `tf.image.decode_image(..., channels=channels,
  expand_animations=False)`, exactly as Keras decodes them.

  BMP, GIF and WebP are decoded at their own channels and converted with
  `to_channels`, because TF's decoders cannot give every mode (BMP: no
  grayscale; GIF: only RGB; WebP: only its own channel count). Where
  decode_image can give the mode, the conversion gives the same pixels.

  An indexed-colour BMP (1, 2, 4 or 8 bits per pixel), whose palette TF ignores
  (8-bit: indices stored as grey levels; 1-, 2- and 4-bit: refused), is decoded
  through its palette by `decode_indexed_bmp`.
  """
  import tensorflow as tf
  image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
  head = _first_bytes(image_bytes, 12)
  magic = lambda start, value: tf.equal(  # noqa: E731
      tf.strings.substr(head, start, len(value)), value)
  is_bmp = magic(0, _BMP_MAGIC)
  own_channels = tf.reduce_any(tf.stack([
      is_bmp, magic(0, _GIF_MAGIC),
      magic(0, _RIFF_MAGIC) & magic(8, _WEBP_MAGIC)
      & (tf.strings.length(image_bytes) > 12)]))
  header = bmp_header(image_bytes)
  # Every BMP TF's decoder cannot read right (see `decode_indexed_bmp`).
  indexed = is_bmp & ((header["header_size"] < _BMP_INFO_HEADER)
                      | ((header["bits"] != 24) & (header["bits"] != 32)))
  image = tf.case([
      (indexed, lambda: to_channels(decode_indexed_bmp(image_bytes), channels)),
      (own_channels, lambda: to_channels(_decode_own_channels(image_bytes), channels)),
  ], default=lambda: tf.image.decode_image(
      image_bytes, channels=channels, expand_animations=False))
  image.set_shape([None, None, channels])
  return image


def _decode_own_channels(image_bytes):
  """A BMP (24 or 32 bits), GIF (first frame) or WebP at its own channels."""
  import tensorflow as tf
  image = tf.image.decode_image(image_bytes, channels=0, expand_animations=False)
  image.set_shape([None, None, None])
  return image


def to_channels(image, channels: int):
  """uint8 RGB or RGBA [H, W, 3|4] -> uint8 [H, W, channels], with TF ops.

  grayscale: `tf.image.rgb_to_grayscale` of the RGB (alpha dropped first, as
  TF's PNG decoder does); rgba: RGB gets an opaque alpha (255); rgb: alpha
  dropped, as `decode_image(..., channels=3)` does.
  """
  import tensorflow as tf
  rgb = tf.ensure_shape(image[..., :3], [None, None, 3])
  if channels == 3:
    return rgb
  if channels == 1:
    return tf.image.rgb_to_grayscale(rgb)
  opaque = lambda: tf.concat(  # noqa: E731
      [rgb, tf.fill(tf.concat([tf.shape(rgb)[:2], [1]], 0), tf.constant(255, tf.uint8))],
      axis=-1)
  if image.shape[-1] is not None:  # channels known when tracing
    return image if image.shape[-1] == 4 else opaque()
  return tf.cond(tf.equal(tf.shape(image)[-1], 4), lambda: image, opaque)


def _first_bytes(image_bytes, count: int):
  """The first `count` bytes, padded with NULs when the file is shorter (a
  substr past the end would fail)."""
  import tensorflow as tf
  head = tf.strings.substr(image_bytes, 0, count)
  return tf.strings.join([head, tf.strings.substr(
      tf.constant(b"\0" * count), 0, count - tf.strings.length(head))])


def bmp_header(image_bytes):
  """The BMP header fields exemplar needs, as int64 scalars (0 where the
  file is too short): offset of the pixels, header size, width, height, bits
  per pixel, compression, colours used."""
  import tensorflow as tf
  raw = tf.cast(tf.io.decode_raw(_first_bytes(image_bytes, _BMP_HEADER_BYTES),
                                 tf.uint8), tf.int64)

  def field(offset: int, size: int, signed: bool = False):
    value = tf.reduce_sum(raw[offset:offset + size]
                          * tf.constant([256 ** i for i in range(size)], tf.int64))
    if signed:
      value = tf.where(value >= 2 ** (8 * size - 1), value - 2 ** (8 * size), value)
    return value

  return {"data_offset": field(10, 4), "header_size": field(14, 4),
          "width": field(18, 4, signed=True), "height": field(22, 4, signed=True),
          "bits": field(28, 2), "compression": field(30, 4),
          "colours_used": field(46, 4)}


def decode_indexed_bmp(image_bytes):
  """An indexed-colour BMP (uncompressed, 1, 2, 4 or 8 bits per pixel) ->
  uint8 RGB [H, W, 3] in its palette's colours.

  `decode_pixels` sends every BMP here that TF's decoder cannot read right
  (TF reads 24- and 32-bit ones); whatever this cannot decode either (RLE
  compression, 16 bits per pixel, an OS/2 header, a pixel beyond the palette,
  too few bytes) fails with a reason saying so, checked in that order.
  """
  import tensorflow as tf
  h = bmp_header(image_bytes)
  size = tf.cast(tf.strings.length(image_bytes), tf.int64)
  bits, width, height = h["bits"], h["width"], tf.abs(h["height"])
  valid_bits = tf.reduce_any(tf.equal(bits, tf.constant([1, 2, 4, 8], tf.int64)))
  colours = tf.where(
      h["colours_used"] > 0, h["colours_used"],
      tf.bitwise.left_shift(tf.constant(1, tf.int64), tf.where(valid_bits, bits, 0)))
  palette_start = 14 + h["header_size"]
  row_bytes = (width * bits + 31) // 32 * 4
  checks = _in_order([
      (size >= _BMP_HEADER_BYTES, [
          "truncated BMP: only", size, "bytes, fewer than a BMP header"]),
      (h["header_size"] >= _BMP_INFO_HEADER, [
          "unsupported BMP: a header of", h["header_size"],
          "bytes (OS/2, or invalid); exemplar reads those of 40 bytes and more"]),
      (valid_bits, [
          "unsupported BMP:", bits,
          "bits per pixel (TF reads 24 and 32; exemplar also 1, 2, 4 and 8)"]),
      (tf.equal(h["compression"], 0), [
          "unsupported BMP: indexed colour compressed with method",
          h["compression"], "(1: RLE8, 2: RLE4); exemplar reads uncompressed ones"]),
      ((width > 0) & (height > 0), ["invalid BMP: size", width, "x", h["height"]]),
      ((colours <= 256) & (palette_start + 4 * colours <= size), [
          "invalid BMP: its palette of", colours, "colours does not fit"]),
      (h["data_offset"] + row_bytes * height <= size, [
          "truncated BMP: its pixels need", h["data_offset"] + row_bytes * height,
          "bytes, the file has", size]),
  ])
  with tf.control_dependencies(checks):  # nothing below runs on a bad header
    bits, width, height, row_bytes = (
        tf.identity(bits), tf.identity(width), tf.identity(height),
        tf.identity(row_bytes))
    pixels = tf.strings.substr(image_bytes, h["data_offset"], row_bytes * height)
    palette = tf.strings.substr(image_bytes, palette_start, 4 * colours)
  rows = tf.reshape(tf.io.decode_raw(pixels, tf.uint8), tf.stack([height, row_bytes]))
  # Each byte holds 8 / bits pixels, the leftmost in its high bits.
  per_byte = 8 // bits
  shifts = tf.cast(8 - bits * (tf.range(per_byte) + 1), tf.uint8)
  mask = tf.cast(tf.bitwise.left_shift(tf.constant(1, tf.int64), bits) - 1, tf.uint8)
  indices = tf.bitwise.bitwise_and(
      tf.bitwise.right_shift(rows[:, :, tf.newaxis], shifts), mask)
  indices = tf.reshape(indices, tf.stack([height, row_bytes * per_byte]))[:, :width]
  # Rows are stored bottom-up unless the height is negative.
  indices = tf.cond(h["height"] > 0, lambda: tf.reverse(indices, [0]),
                    lambda: indices)
  indices = tf.cast(indices, tf.int32)
  in_palette = tf.debugging.Assert(
      tf.reduce_all(indices < tf.cast(colours, tf.int32)),
      ["invalid BMP: a pixel refers to colour", tf.reduce_max(indices),
       "of a palette of", colours])
  # Palette entries are blue, green, red, reserved (not alpha).
  rgb = tf.reverse(tf.reshape(tf.io.decode_raw(palette, tf.uint8), [-1, 4])[:, :3], [1])
  with tf.control_dependencies([in_palette]):
    return tf.ensure_shape(tf.gather(rgb, indices), [None, None, 3])


def _in_order(checks):
  """[(condition, message parts)] -> the last of tf.debugging.Asserts run one
  after another, so a file failing several reports the first."""
  import tensorflow as tf
  ops = []
  for condition, message in checks:
    with tf.control_dependencies(ops):
      ops = [tf.debugging.Assert(condition, message)]
  return ops


def _centre_crop_to_aspect(image, size):
  """Keras's `smart_resize` crop, as traced in a tf.data map (float32 maths)."""
  import tensorflow as tf
  shape = tf.shape(image)
  height, width = shape[-3], shape[-2]
  target_height, target_width = size
  crop_height = tf.cast(
      tf.cast(width * target_height, "float32") / target_width, "int32")
  crop_height = tf.maximum(tf.minimum(height, crop_height), 1)
  crop_width = tf.cast(
      tf.cast(height * target_width, "float32") / target_height, "int32")
  crop_width = tf.maximum(tf.minimum(width, crop_width), 1)
  h_start = tf.cast(tf.cast(height - crop_height, "float32") / 2, "int32")
  w_start = tf.cast(tf.cast(width - crop_width, "float32") / 2, "int32")
  return image[h_start:h_start + crop_height, w_start:w_start + crop_width, :]


def to_uint8(image):
  """Pixels as Keras gives them -> the uint8 pixels exemplar stores.

  Rounds half to even and clips (bicubic and lanczos overshoot [0, 255]).
  'nearest' resizing keeps uint8, which passes through unchanged.
  """
  import tensorflow as tf
  if image.dtype == tf.uint8:
    return image
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def encode(image_uint8, settings: ImageSettings):
  import tensorflow as tf
  if settings.image_format == "png":
    return tf.io.encode_png(image_uint8, compression=PNG_COMPRESSION)
  return tf.io.encode_jpeg(image_uint8, quality=settings.jpeg_quality)


class DecodeTask(NamedTuple):
  """Some ranks of one class and their candidates, best first; decode until
  `need` succeed.

  The task's ranks are first_rank, + stride, ... (`need` of them). Its
  candidates are the class's seeded positions of those ranks, then its spares:
  positions spare_start, + spare_stride, ... A task whose `seen` (files in the
  class) is above what its class sample held may draw more of the same
  sequence from a new listing; seen 0: never.
  """
  class_name: str
  label: int
  candidates: List[str]  # relative paths, in sampling-priority order
  need: int
  first_rank: int
  seen: int = 0
  stride: int = 1
  spare_start: int = -1  # -1: right after the ranks (one task for the class)
  spare_stride: int = 1


def spare_start(task: DecodeTask) -> int:
  """The seeded position of a task's first spare."""
  if task.spare_start < 0:  # one task for the class: right after its ranks
    return task.first_rank + task.need * task.stride
  return task.spare_start


def task_candidates(class_candidates: Sequence[str], task: DecodeTask) -> List[str]:
  """A task's candidates among its class's seeded candidates: the positions of
  its ranks, then of its spares."""
  count = len(class_candidates)
  ranks = range(task.first_rank, task.first_rank + task.need * task.stride, task.stride)
  positions = [p for p in ranks if p < count]
  positions += range(spare_start(task), count, task.spare_stride)
  return [class_candidates[p] for p in positions]


class DecodedImage(NamedTuple):
  """One chosen image, decoded, resized and encoded for storage."""
  class_name: str
  label: int
  rank: int  # 0-based; the class's stored images (k mode; with gaps where a
  # class came out short) or its seeded order (every file; gaps at failures)
  relative_path: str
  source_path: str
  encoded: bytes
  source_height: int
  source_width: int
  sha256: str
  # The contact sheet's thumbnail (a small JPEG), made while the pixels were at
  # hand, for the first images of a class; b"" for the rest.
  thumbnail: bytes = b""


class DecodeFailure(NamedTuple):
  class_name: str
  relative_path: str
  source_path: str
  reason: str


def tf_error_reason(message: str, limit: int = 300) -> str:
  """The cause in a TF error message, without tf.function's call-site noise.

  A failure inside a tf.function reads "Graph execution error: / Detected at
  node ... / File ... / <the cause> / [[{{node ...}}]]"; people want the cause.
  """
  for line in (message or "").splitlines():
    line = _NESTED_FUNCTION.sub("", line).strip()
    if not line or line.startswith(("Graph execution error", "Detected at node",
                                    "File ", "[[")):
      continue
    line = line.split("\t [[")[0].strip()
    if line.startswith(_ASSERTION) and line.endswith("]"):
      # tf.debugging.Assert's "[text] [value] [text]": exemplar's own reasons.
      line = " ".join(line[len(_ASSERTION):-1].split("] ["))
    return line[:limit]
  return first_line(message, limit)


_ASSERTION = "assertion failed: ["
# An op failing inside a tf.cond / tf.case branch names the branch's function.
_NESTED_FUNCTION = re.compile(r"^\s*(\{\{function_node [^}]*\}\}\s*)+")


def first_line(message: str, limit: int = 300) -> str:
  line = (message or "").strip().splitlines()[0] if message and message.strip() else ""
  return line[:limit] or "unknown error"


def header_size(raw: bytes) -> Optional[Tuple[int, int]]:
  """(height, width) from the image header, without decoding; None if unknown.

  Pillow reads only the header here, so a file claiming enormous dimensions is
  refused before TF would allocate its pixels.
  """
  from PIL import Image
  if raw.startswith(_JPEG_XL_MAGIC):
    return jpeg_xl_size(raw)
  # Pillow's own bomb check would raise before telling the size; ours is
  # --max_pixels, applied by the caller.
  Image.MAX_IMAGE_PIXELS = None
  try:
    with Image.open(io.BytesIO(raw)) as image:
      width, height = image.size
  except Exception:  # not an image Pillow knows: TF decides
    return None
  return height, width


# JPEG XL SizeHeader aspect ratios (ISO/IEC 18181-1, D.2): width = height * n / d.
_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9),
               6: (5, 4), 7: (2, 1)}


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
  from PIL import Image
  try:
    with Image.open(io.BytesIO(raw)) as image:
      value = int(image.getexif().get(_EXIF_ORIENTATION, 1))
  except Exception:  # no or broken EXIF: upright
    return 1
  return value if 1 <= value <= 8 else 1


_EXIF_ORIENTATION = 0x0112
# A bare JPEG XL codestream, or the ISO container's signature box.
_JPEG_XL_MAGIC = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \x0d\x0a\x87\x0a")


def apply_orientation(image, orientation):
  """Turns a decoded image upright for an EXIF orientation (scalar int32 tensor)."""
  import tensorflow as tf
  branches = [
      lambda: image,                                       # 1 upright
      lambda: tf.image.flip_left_right(image),             # 2 mirrored
      lambda: tf.image.rot90(image, 2),                    # 3 upside down
      lambda: tf.image.flip_up_down(image),                # 4 mirrored, upside down
      lambda: tf.image.transpose(image),                   # 5
      lambda: tf.image.rot90(image, 3),                    # 6 rotated 90 CW
      lambda: tf.image.rot90(tf.image.transpose(image), 2),  # 7
      lambda: tf.image.rot90(image, 1),                    # 8 rotated 90 CCW
  ]
  return tf.switch_case(tf.clip_by_value(orientation - 1, 0, 7), branches)


class ImageDecoder:
  """Raw file bytes -> DecodeResult, or a failure reason (a str).

  Plain Python around one traced tf.function, so the decode rules are
  unit-testable and fuzzable without a pipeline. Build it where TF may be
  imported (DoFn.setup on workers).
  """

  def __init__(self, settings: ImageSettings, max_pixels: int = 0,
               exif_transpose: bool = False):
    import tensorflow as tf
    self._tf = tf
    self._max_pixels = max_pixels
    self._exif_transpose = exif_transpose

    @tf.function(input_signature=[tf.TensorSpec([], tf.string),
                                  tf.TensorSpec([], tf.int32)])
    def decode_encode(image_bytes, orientation):
      image, height, width = decode_and_resize(
          image_bytes, settings, orientation if exif_transpose else None)
      pixels = to_uint8(image)
      return encode(pixels, settings), pixels, height, width

    self._decode_encode = decode_encode

  def decode(self, raw: bytes, thumbnail_size: int = 0):
    """`thumbnail_size` > 0 also makes the contact-sheet thumbnail from the
    pixels, here on the decoding thread, instead of decoding the stored image
    again on the one worker that draws the sheet."""
    if not raw:
      return "empty file"
    if self._max_pixels:
      size = header_size(raw)
      if size and size[0] * size[1] > self._max_pixels:
        return (f"too large: header says {size[1]}x{size[0]} = "
                f"{size[0] * size[1]} pixels > --max_pixels {self._max_pixels}")
      if size is None and raw.startswith(_JPEG_XL_MAGIC):
        # TF decodes JPEG XL but Pillow cannot read its header; a header that
        # cannot be checked is not trusted with an allocation.
        return "cannot decode: JPEG XL header unreadable"
    orientation = exif_orientation(raw) if self._exif_transpose else 1
    tf = self._tf
    try:
      encoded, pixels, height, width = self._decode_encode(
          tf.constant(raw), tf.constant(orientation, tf.int32))
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
            tf.errors.OutOfRangeError, tf.errors.ResourceExhaustedError,
            tf.errors.DataLossError) as e:
      return f"cannot decode: {tf_error_reason(e.message)}"
    thumbnail = (contact_sheet.thumbnail_jpeg(pixels.numpy(), thumbnail_size)
                 if thumbnail_size else b"")
    return DecodeResult(encoded.numpy(), int(height), int(width),
                        hashlib.sha256(raw).hexdigest(), thumbnail)


class DecodeResult(NamedTuple):
  encoded: bytes
  source_height: int
  source_width: int
  sha256: str
  thumbnail: bytes = b""


def read_file(path: str) -> Union[bytes, str]:
  """The file's bytes, or a failure reason (a str) if it cannot be read."""
  try:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      return f.read()
  except Exception as e:  # noqa: BLE001 - any file system's read error is a recorded skip
    return f"unreadable: {first_line(str(e))}"


def decoded_image(class_name: str, label: int, rank: int, relative_path: str,
                  source_path: str, result: DecodeResult) -> DecodedImage:
  return DecodedImage(
      class_name=class_name, label=label, rank=rank,
      relative_path=relative_path, source_path=source_path,
      encoded=result.encoded, source_height=result.source_height,
      source_width=result.source_width, sha256=result.sha256,
      thumbnail=result.thumbnail)


def decode_pool() -> concurrent.futures.ThreadPoolExecutor:
  """Threads for decoding: TF's decode, resize and encode release the GIL, so
  a few threads use every core of an in-process run, with no worker
  processes to start and no images copied between them."""
  return concurrent.futures.ThreadPoolExecutor(
      DECODE_THREADS, thread_name_prefix="decode")


def decode_file(decoder: ImageDecoder, source_path: str, thumbnail_size: int = 0):
  """Reads and decodes one file: (DecodeResult or failure reason, msec)."""
  started = time.monotonic()
  raw = read_file(source_path)
  result = raw if isinstance(raw, str) else decoder.decode(raw, thumbnail_size)
  return result, int((time.monotonic() - started) * 1000)


def in_order(pool, work, items: Iterable, lookahead: int) -> Iterator:
  """Yields work(item) for each item, in order, running up to `lookahead`
  items ahead on `pool`'s threads: cores busy, memory bounded."""
  pending = collections.deque()
  items = iter(items)
  for item in itertools.islice(items, lookahead):
    pending.append(pool.submit(work, item))
  while pending:
    result = pending.popleft().result()
    for item in itertools.islice(items, 1):
      pending.append(pool.submit(work, item))
    yield result


# What TaskDecoder returns for a task, in order: ("decoded", msec,
# DecodedImage), ("failed", msec, DecodeFailure) or ("refill", 0, None).
TaskEvent = Tuple[str, int, object]


class TaskDecoder:
  """DecodeTask -> its events, in order. Plain Python, safe to call from
  several threads at once (the traced TF function is).

  Walks a task's candidates in priority order and stops at `need` decoded
  images, so a broken pick is replaced by the task's next candidate (with one
  task per class: the class's next in seeded order) and the result stays
  deterministic.
  """

  def __init__(self, input_root: str, decoder: ImageDecoder, seed: int,
               thumbnail_ranks: int = 0,
               thumbnail_size: int = contact_sheet.DEFAULT_CELL_SIZE):
    self._root = listing.normalize_root(input_root)
    self._decoder = decoder
    self._seed = seed
    # Images ranked below `thumbnail_ranks` in their class carry a thumbnail.
    self._thumbnail_ranks = thumbnail_ranks
    self._thumbnail_size = thumbnail_size
    # {class: (candidates held, seeded candidates)} from re-listings, shared by
    # the class's tasks on this worker's threads.
    self._listed: Dict[str, Tuple[int, List[str]]] = {}
    self._lock = threading.Lock()  # guards _class_locks
    self._class_locks: Dict[str, threading.Lock] = {}

  def __call__(self, task: DecodeTask) -> List[TaskEvent]:
    events: List[TaskEvent] = []
    stored, tried = 0, 0
    candidates = list(task.candidates)
    while stored < task.need:
      if tried == len(candidates):
        more = self._more_candidates(task, candidates)
        if len(more) > len(candidates):
          events.append(("refill", 0, None))
        candidates = more
        if tried == len(candidates):
          break  # the class has no more files
      relative_path = candidates[tried]
      tried += 1
      source_path = listing.join(self._root, relative_path)
      rank = task.first_rank + stored * task.stride
      result, msec = decode_file(
          self._decoder, source_path,
          self._thumbnail_size if rank < self._thumbnail_ranks else 0)
      if isinstance(result, str):
        events.append(("failed", msec, DecodeFailure(
            task.class_name, relative_path, source_path, result)))
        continue
      events.append(("decoded", msec, decoded_image(
          task.class_name, task.label, rank, relative_path, source_path, result)))
      stored += 1
    return events

  def _more_candidates(self, task: DecodeTask, candidates: List[str]) -> List[str]:
    """More of the task's seeded sequence, when every candidate it held failed.

    Lists the class again (one listing at a time per class on this worker;
    the class's other tasks reuse it when it is long enough) and takes twice
    as many of the task's candidates, the first ones being those already
    tried, so the picks stay deterministic.
    """
    if task.seen <= len(candidates):
      return candidates
    from exemplar.transforms import sampling  # pylint: disable=g-import-not-at-top
    wanted = 2 * len(candidates) + task.need
    capacity = spare_start(task) + max(0, wanted - task.need) * task.spare_stride + 1
    with self._lock:
      class_lock = self._class_locks.setdefault(task.class_name, threading.Lock())
    with class_lock:  # the class's other tasks wait for this listing
      cached = self._listed.get(task.class_name)
      if cached is None or cached[0] < min(capacity, task.seen):
        # A little more than this task needs covers its sibling tasks too
        # (their spares start up to one spare_stride later).
        sample = sampling.sample_paths(
            listing.walk_class_folder(self._root, task.class_name), self._seed,
            max(capacity + task.spare_stride, cached[0] * 2 if cached else 0))
        cached = (len(sample.candidates), [path for _, path in sample.candidates])
        self._listed[task.class_name] = cached
    more = task_candidates(cached[1], task)
    if more[:len(candidates)] != candidates:  # the folder changed under us
      return candidates
    return more
