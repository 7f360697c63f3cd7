"""Stage 4: decode and resize only the chosen images.

`decode_and_resize` is the one definition of the image preprocessing. It uses
the same TF ops, in the same order, as `tf.keras.utils.image_dataset_from_directory`
(`tf.image.decode_image(..., expand_animations=False)`, then `tf.image.resize`,
or Keras's `smart_resize` centre crop with `crop_to_aspect_ratio`), so the
pixels equal what Keras gives for the same file and settings. Both the Beam
decode stage and the TFT `preprocessing_fn` (transforms/tft_graph.py) call it,
so training data and serving apply exactly the same preprocessing.

TensorFlow is imported lazily (in `DoFn.setup` on workers), so importing this
module to build a pipeline stays cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms import listing

_LOGGER = logging.getLogger(__name__)

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
  jpeg_quality: int = 95

  @property
  def channels(self) -> int:
    return COLOR_MODES[self.color_mode]

  @property
  def shape(self) -> Tuple[int, int, int]:
    return (self.height, self.width, self.channels)


def decode_and_resize(image_bytes, settings: ImageSettings):
  """Encoded image bytes (scalar tf.string) -> (float32 [H, W, C], src h, src w).

  Exactly Keras's `_load_image_tf` after its `tf.io.read_file`.
  """
  import tensorflow as tf
  image = tf.image.decode_image(
      image_bytes, channels=settings.channels, expand_animations=False)
  shape = tf.shape(image)
  source_height, source_width = shape[0], shape[1]
  size = (settings.height, settings.width)
  if settings.crop_to_aspect_ratio:
    image = _centre_crop_to_aspect(image, size)
  image = tf.image.resize(image, size, method=settings.interpolation)
  image.set_shape(settings.shape)
  return image, source_height, source_width


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
  """Float pixels as Keras gives them -> the uint8 pixels exemplar stores.

  Rounds half to even and clips (bicubic and lanczos overshoot [0, 255]).
  """
  import tensorflow as tf
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def encode(image_uint8, settings: ImageSettings):
  import tensorflow as tf
  if settings.image_format == "png":
    return tf.io.encode_png(image_uint8)
  return tf.io.encode_jpeg(image_uint8, quality=settings.jpeg_quality)


class DecodeTask(NamedTuple):
  """Candidates of one class, best first; decode until `need` succeed."""
  class_name: str
  label: int
  candidates: List[str]  # relative paths, in sampling-priority order
  need: int
  first_rank: int  # rank of candidates[0] within its class (for chunked tasks)


class DecodedImage(NamedTuple):
  """One chosen image, decoded, resized and encoded for storage."""
  class_name: str
  label: int
  rank: int  # 0-based position among the class's stored images
  relative_path: str
  source_path: str
  encoded: bytes
  source_height: int
  source_width: int
  sha256: str
  source_bytes: bytes  # raw file bytes (rank 0 only), for the TFT analysis


class DecodeFailure(NamedTuple):
  class_name: str
  relative_path: str
  source_path: str
  reason: str


def first_line(message: str, limit: int = 300) -> str:
  line = (message or "").strip().splitlines()[0] if message and message.strip() else ""
  return line[:limit] or "unknown error"


class DecodeChosen(beam.DoFn):
  """DecodeTask -> DecodedImage (main) and DecodeFailure (tagged 'failures').

  Walks a class's candidates in priority order and stops at `need` decoded
  images, so a broken pick is replaced by the next candidate of the same seeded
  sample and the result stays deterministic.
  """

  def __init__(self, input_root: str, settings: ImageSettings):
    self._root = listing.normalize_root(input_root)
    self._settings = settings
    self._decoded = Metrics.counter("exemplar", "images_decoded")
    self._failed = Metrics.counter("exemplar", "images_failed")

  def setup(self):
    import tensorflow as tf
    settings = self._settings

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def decode_encode(image_bytes):
      image, height, width = decode_and_resize(image_bytes, settings)
      return encode(to_uint8(image), settings), height, width

    self._tf = tf
    self._decode_encode = decode_encode

  def process(self, task: DecodeTask) -> Iterator:
    task = DecodeTask(*task)
    stored = 0
    for offset, relative_path in enumerate(task.candidates):
      if stored >= task.need:
        break
      source_path = listing.join(self._root, relative_path)
      result = self._decode_one(source_path)
      if isinstance(result, str):
        self._failed.inc()
        yield beam.pvalue.TaggedOutput(FAILURES_TAG, DecodeFailure(
            task.class_name, relative_path, source_path, result))
        continue
      encoded, height, width, digest, raw = result
      self._decoded.inc()
      yield DecodedImage(
          class_name=task.class_name, label=task.label,
          rank=task.first_rank + stored, relative_path=relative_path,
          source_path=source_path, encoded=encoded, source_height=height,
          source_width=width, sha256=digest,
          # The first image of a class feeds the TFT analysis; no more is needed.
          source_bytes=raw if task.first_rank + stored == 0 else b"")
      stored += 1

  def _decode_one(self, source_path: str):
    """-> (encoded, height, width, sha256, raw bytes), or a failure reason."""
    try:
      with FileSystems.open(source_path) as f:
        raw = f.read()
    except Exception as e:  # any file system's read error is a recorded skip
      return f"unreadable: {first_line(str(e))}"
    if not raw:
      return "empty file"
    try:
      encoded, height, width = self._decode_encode(self._tf.constant(raw))
    except (self._tf.errors.InvalidArgumentError,
            self._tf.errors.UnimplementedError,
            self._tf.errors.OutOfRangeError,
            self._tf.errors.ResourceExhaustedError) as e:
      return f"cannot decode: {first_line(e.message)}"
    return (encoded.numpy(), int(height), int(width),
            hashlib.sha256(raw).hexdigest(), raw)


def decode_tasks(class_name: str, label: int, candidates: Sequence[str],
                 need: Optional[int], chunk_size: int) -> Iterable[DecodeTask]:
  """Splits a class's candidates into decode tasks.

  With a sample (`need` = k) the class is one task, so spares replace failures
  in order. Without one (`need` None: every file) the class is cut into chunks
  that decode in parallel.
  """
  if need is not None:
    yield DecodeTask(class_name, label, list(candidates), need, 0)
    return
  for start in range(0, len(candidates), chunk_size):
    chunk = list(candidates[start:start + chunk_size])
    yield DecodeTask(class_name, label, chunk, len(chunk), start)
