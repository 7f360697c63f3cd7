"""Stage 4's image operations: decode, resize, encode, in TF ops.

`decode_and_resize` is the one definition of the image preprocessing. It uses
the same TF ops, in the same order, as `tf.keras.utils.image_dataset_from_directory`
(`tf.image.decode_image(..., expand_animations=False)`, then `tf.image.resize`,
or Keras's `smart_resize` centre crop with `crop_to_aspect_ratio`), so the
pixels equal what Keras gives for the same file and settings. Where Keras
fails or is wrong (a BMP or GIF in grayscale, a GIF in rgba, an indexed-colour
BMP), `decode_pixels` decodes and converts with TF ops instead. Both the Beam
decode stage and the TFT `preprocessing_fn` (transforms/tft_graph.py) call it,
so training data and serving apply exactly the same preprocessing.

`ImageDecoder` runs them on one file's bytes, or on several in one TF call
(`decode_batch`: the same results), after the header checks of
transforms/headers.py; which files are decoded, in what order, on which
threads, is transforms/decode_tasks.py.

TensorFlow is imported lazily (in `DoFn.setup` on workers), so importing this
module to build a pipeline stays cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import threading
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from exemplar.transforms import headers, png_encoder

INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area", "lanczos3",
                  "lanczos5", "gaussian", "mitchellcubic")
COLOR_MODES = {"rgb": 3, "grayscale": 1, "rgba": 4}
IMAGE_FORMATS = ("png", "jpeg")

FAILURES_TAG = "failures"


@dataclasses.dataclass(frozen=True)
class ImageSettings:
  """How chosen images are decoded, resized and stored."""
  height: int = 256
  width: int = 256
  interpolation: str = "bilinear"
  crop_to_aspect_ratio: bool = False
  color_mode: str = "rgb"
  image_format: str = "png"
  jpeg_quality: int = 95  # tf.io.encode_jpeg's quality, 0-100
  png_compression: int = png_encoder.DEFLATE_LEVEL  # libdeflate's level, 0-12

  @property
  def channels(self) -> int:
    return COLOR_MODES[self.color_mode]

  @property
  def shape(self) -> Tuple[int, int, int]:
    return (self.height, self.width, self.channels)

  def encoding(self, jpeg_quality: int, png_compression: int) -> "ImageSettings":
    """These settings with the format's own encoder setting, and the other
    format's at its default: that one changes no byte, so it must not change
    the resume keys or the config fingerprint. Values are checked by the
    caller (options.validate, write_dataset.check_image_settings)."""
    defaults = ImageSettings()
    return dataclasses.replace(
        self,
        jpeg_quality=jpeg_quality if self.image_format == "jpeg" else defaults.jpeg_quality,
        png_compression=(png_compression if self.image_format == "png"
                         else defaults.png_compression))


def decode_and_resize(image_bytes, settings: ImageSettings, orientation=None,
                      plain: bool = False):
  """Encoded image bytes (scalar tf.string) -> (float32 [H, W, C], src h, src w).

  Exactly Keras's `_load_image_tf` after its `tf.io.read_file` wherever Keras
  can decode the file (see `decode_pixels` for the files it cannot). With an
  EXIF `orientation` (int32 tensor; `--exif_transpose`) the image is turned
  upright first, which Keras does not do. `plain`: the caller has checked
  (`is_plain`) that `tf.image.decode_image` alone gives the pixels, which
  skips `decode_pixels`'s format dispatch (~0.75 ms an image).
  """
  import tensorflow as tf
  if plain:
    image = tf.image.decode_image(image_bytes, channels=settings.channels,
                                  expand_animations=False)
    image.set_shape([None, None, settings.channels])
  else:
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


def is_plain(head: bytes, channels: int) -> bool:
  """Whether `decode_pixels` would hand a file starting with `head` straight
  to `tf.image.decode_image` at `channels`: a PNG, or a JPEG not asked for
  with an alpha channel. (A pure function of the first bytes.)"""
  return head.startswith(_PNG_MAGIC) or (head.startswith(_JPEG_MAGIC) and channels != 4)


# Magic bytes as TF's decode_image classifies files (decode_image_op.cc).
_BMP_MAGIC, _GIF_MAGIC, _RIFF_MAGIC, _WEBP_MAGIC = b"BM", b"GIF8", b"RIFF", b"WEBP"
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_BMP_INFO_HEADER = 40  # BITMAPINFOHEADER; V4 (108) and V5 (124) extend it
_BMP_HEADER_BYTES = 54  # file header (14) + BITMAPINFOHEADER


def decode_pixels(image_bytes, channels: int):
  """Encoded bytes (scalar tf.string) -> uint8 [H, W, channels].

  JPEG, PNG and JPEG XL: `tf.image.decode_image(..., channels=channels,
  expand_animations=False)`, exactly as Keras decodes them.

  BMP, GIF and WebP are decoded at their own channels and converted with
  `to_channels`, because TF's decoders cannot give every mode (BMP: no
  grayscale; GIF: only RGB; WebP: only its own channel count), and so is a
  JPEG asked for as rgba (libjpeg gives no alpha: RGB plus an opaque one).
  Where decode_image can give the mode, the conversion gives the same pixels.
  (A CMYK JPEG asked for as grayscale still fails, as in Keras: libjpeg
  cannot convert it.)

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
  cases = [
      (indexed, lambda: to_channels(decode_indexed_bmp(image_bytes), channels)),
      (own_channels, lambda: to_channels(_decode_own_channels(image_bytes), channels))]
  if channels == 4:
    cases.append((magic(0, _JPEG_MAGIC), lambda: to_channels(
        tf.image.decode_jpeg(image_bytes, channels=3), 4)))
  image = tf.case(cases, default=lambda: tf.image.decode_image(
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


def encode_jpeg(image_uint8, settings: ImageSettings):
  """uint8 [height, width, channels] tensor -> JPEG bytes (a scalar string)."""
  import tensorflow as tf
  return tf.io.encode_jpeg(image_uint8, quality=settings.jpeg_quality)


def encode(pixels, settings: ImageSettings) -> bytes:
  """uint8 pixels (tensor or array [height, width, channels]) -> stored bytes.

  PNG through transforms/png_encoder.py (libdeflate: ~2-3x faster than
  `tf.io.encode_png`'s zlib at about the same size); JPEG through TF.
  """
  if settings.image_format == "png":
    return png_encoder.encode_png(np.asarray(pixels), settings.png_compression)
  return encode_jpeg(pixels, settings).numpy()


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
  split: str = "train"  # its TFDS split; `rank` is its rank in its class there


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


# The most files one call of ImageDecoder's batch function takes.
_MAX_BATCH = 64


class ImageDecoder:
  """Raw file bytes -> DecodeResult, or a failure reason (a str).

  Plain Python around traced tf.functions, so the decode rules are
  unit-testable and fuzzable without a pipeline. Build it where TF may be
  imported (DoFn.setup on workers).
  """

  def __init__(self, settings: ImageSettings, max_pixels: int = 0,
               exif_transpose: bool = False):
    import tensorflow as tf
    self._tf = tf
    self._max_pixels = max_pixels
    self._exif_transpose = exif_transpose

    def decode_encode(image_bytes, orientation, plain: bool):
      """One file's graph: (encoded, pixels, height, width)."""
      image, height, width = decode_and_resize(
          image_bytes, settings, orientation if exif_transpose else None, plain)
      pixels = to_uint8(image)
      # PNG is encoded outside the graph (png_encoder); JPEG inside it.
      encoded = (encode_jpeg(pixels, settings) if settings.image_format == "jpeg"
                 else tf.constant(b""))
      return encoded, pixels, height, width

    def traced(plain: bool):
      return tf.function(lambda image_bytes, orientation: decode_encode(
          image_bytes, orientation, plain),
          input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32)])

    # PNG and JPEG (most files) skip the format dispatch; same pixels.
    self._traced = {True: traced(True), False: traced(False)}
    # Calling a concrete function skips tf.function's argument binding,
    # ~0.1-0.2 ms a call with the GIL held (~10% of a decoding thread's
    # time). Each is traced on first use (a run of JPEGs never needs the
    # dispatching one), once, under the lock.
    self._concrete = {}
    self._trace_lock = threading.Lock()
    # The orientation of nearly every call, made once: a scalar tensor costs
    # ~0.05 ms to make, a tenth of a call's own Python work.
    self._upright = tf.constant(1, tf.int32)
    self._channels = settings.channels
    self._png = settings.image_format == "png"
    self._png_compression = settings.png_compression
    # Imported here: contact_sheet imports Beam, which the image ops do not need.
    from exemplar.transforms.contact_sheet import thumbnail_jpeg
    self._thumbnail_jpeg = thumbnail_jpeg

    # `decode_batch`'s function: the per-file one's ops under tf.map_fn, one
    # file after another. A call costs ~0.17 ms of Python and TF dispatch
    # before any pixel is touched, and calls from several threads do not
    # overlap: 8 files a call took `all`'s decode phase on 10,000 photos from
    # 20.2-21.8 s to 16.9-17.5 s (benchmarks/stages/run_phases.py, README's
    # Performance). PNG and JPEG only (`plain`).
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string),
                                  tf.TensorSpec([None], tf.int32)])
    def decode_encode_batch(images_bytes, orientations):
      return tf.map_fn(
          lambda args: decode_encode(*args, plain=True),
          (images_bytes, orientations), parallel_iterations=1,
          fn_output_signature=(tf.TensorSpec([], tf.string),
                               tf.TensorSpec(settings.shape, tf.uint8),
                               tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)))
    self._traced_batch = decode_encode_batch
    self._batch_limit = _MAX_BATCH  # files a call takes: see `_batch_went`
    self._batch_lock = threading.Lock()
    # What a file TF cannot decode raises (a call's other errors are bugs).
    self._decode_errors = (
        tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
        tf.errors.OutOfRangeError, tf.errors.ResourceExhaustedError,
        tf.errors.DataLossError)

  def _orientation(self, raw: bytes) -> int:
    """The EXIF orientation the graph applies: 1 (upright) unless asked to."""
    return headers.exif_orientation(raw) if self._exif_transpose else 1

  def _function(self, key):
    """The concrete function: key True/False (one file, plain or not), or
    "batch"."""
    function = self._concrete.get(key)
    if function is None:
      with self._trace_lock:
        function = self._concrete.get(key)
        if function is None:
          traced = self._traced_batch if key == "batch" else self._traced[key]
          function = self._concrete[key] = traced.get_concrete_function()
    return function

  def _refusal(self, raw: bytes):
    """Why `raw` is not decoded at all (a str), else None: the checks made
    before TF sees the bytes."""
    if not raw:
      return "empty file"
    if self._max_pixels:
      size = headers.header_size(raw)
      if size and size[0] * size[1] > self._max_pixels:
        return (f"too large: header says {size[1]}x{size[0]} = "
                f"{size[0] * size[1]} pixels > max_pixels {self._max_pixels}")
      if size is None and headers.is_jpeg_xl(raw):
        # TF decodes JPEG XL but Pillow cannot read its header; a header that
        # cannot be checked is not trusted with an allocation.
        return "cannot decode: JPEG XL header unreadable"
    return None

  def _result(self, raw: bytes, encoded, pixels: np.ndarray, height, width,
              thumbnail_size: int) -> "DecodeResult":
    """The graph's outputs for one file -> its DecodeResult (PNG encoded
    here, outside the graph)."""
    if self._png:
      encoded = png_encoder.encode_png(pixels, self._png_compression)
    thumbnail = (self._thumbnail_jpeg(pixels, thumbnail_size)
                 if thumbnail_size else b"")
    return DecodeResult(encoded, int(height), int(width),
                        hashlib.sha256(raw).hexdigest(), thumbnail)

  def decode_batch(self, raws: Sequence[bytes],
                   thumbnail_sizes: Optional[Sequence[int]] = None
                   ) -> List[Union["DecodeResult", str]]:
    """`decode` of several files, in one TF call where it can: a list of
    DecodeResult or failure reason (str), in the order of `raws`, each equal
    to what `decode(raw, thumbnail_size)` gives (`thumbnail_sizes`: one per
    file, 0 for none; default none).

    Files refused before decoding get their reason; the PNG and JPEG files
    among the rest are decoded and resized by calls of the batch function
    (as many files a call as the last calls allow, see `_batch_went`); any
    other format, and every file of a call that fails (one broken file fails
    the call), go through `decode` one by one.

    Raises:
      ValueError: `thumbnail_sizes` does not hold one size per file.
    """
    if thumbnail_sizes is None:
      sizes = [0] * len(raws)
    else:
      sizes = [int(size) for size in thumbnail_sizes]
      if len(sizes) != len(raws):
        raise ValueError(f"decode_batch takes one thumbnail size per file: "
                         f"{len(sizes)} for {len(raws)} files")
    results: List[Union[DecodeResult, str, None]] = [None] * len(raws)
    plain = []  # indices of the files for the batch function
    for index, raw in enumerate(raws):
      refusal = self._refusal(raw)
      if refusal is not None:
        results[index] = refusal
      elif is_plain(raw[:8], self._channels):
        plain.append(index)
    start = 0
    while start < len(plain):
      with self._batch_lock:
        limit = self._batch_limit
      chunk = plain[start:start + limit]
      start += len(chunk)
      if len(chunk) > 1:
        self._batch_went(self._decode_together(raws, chunk, sizes, results), len(chunk))
      else:
        results[chunk[0]] = self.decode(raws[chunk[0]], sizes[chunk[0]])
        self._batch_went(not isinstance(results[chunk[0]], str), 1)
    for index, raw in enumerate(raws):
      if results[index] is None:
        results[index] = self.decode(raw, sizes[index])
    return results

  def _decode_together(self, raws, chunk: Sequence[int], sizes: Sequence[int],
                       results: list) -> bool:
    """One call of the batch function for `raws[i] for i in chunk`; fills
    their `results` and returns True, or returns False if the call failed."""
    tf = self._tf
    orientations = [self._orientation(raws[i]) for i in chunk]
    try:
      encoded, pixels, heights, widths = self._function("batch")(
          tf.constant([raws[i] for i in chunk]), tf.constant(orientations, tf.int32))
    except self._decode_errors:
      return False  # each file alone: the broken one gets its own reason
    encoded, pixels = encoded.numpy(), pixels.numpy()
    heights, widths = heights.numpy(), widths.numpy()
    for row, index in enumerate(chunk):
      results[index] = self._result(raws[index], encoded[row], pixels[row],
                                    heights[row], widths[row], sizes[index])
    return True

  def _batch_went(self, ok: bool, files: int) -> None:
    """After a call of `files` files: adds one to the files a call takes when
    it worked (a file decoded alone counts as a call of one); when a call of
    several failed (all its files are decoded again one by one), takes half
    as many as that call held. A file that fails alone cost nothing twice:
    no change. So a tree with many broken files is decoded about file by
    file (with 5% of them broken, calls of 8 would lose more than they save)."""
    with self._batch_lock:
      if ok:
        self._batch_limit = min(_MAX_BATCH, self._batch_limit + 1)
      elif files > 1:
        self._batch_limit = max(1, min(self._batch_limit, files) // 2)

  def decode(self, raw: bytes, thumbnail_size: int = 0):
    """`thumbnail_size` > 0 also makes the contact-sheet thumbnail from the
    pixels, here on the decoding thread, instead of decoding the stored image
    again on the one worker that draws the sheet."""
    refusal = self._refusal(raw)
    if refusal is not None:
      return refusal
    orientation = self._orientation(raw)
    tf = self._tf
    try:
      encoded, pixels, height, width = self._function(is_plain(raw[:8], self._channels))(
          tf.constant(raw),
          self._upright if orientation == 1 else tf.constant(orientation, tf.int32))
    except self._decode_errors as e:
      return f"cannot decode: {tf_error_reason(e.message)}"
    return self._result(raw, encoded.numpy(), pixels.numpy(), height, width,
                        thumbnail_size)


class DecodeResult(NamedTuple):
  encoded: bytes
  source_height: int
  source_width: int
  sha256: str
  thumbnail: bytes = b""
