"""transforms/png_encoder.py: every reader gets the exact pixels back.

Readers: libpng through `tf.io.decode_png` (what `load_dataset` and Keras
use), Pillow, and TFDS's `Image` feature (what `tfds.builder_from_directory`
uses). Inputs: photos resized as exemplar resizes them, noise, flat colour,
every channel count, 1-pixel and odd shapes.
"""

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from exemplar.transforms import decoding, png_encoder

PIL = pytest.importorskip("PIL.Image")


def _tf_decode(data: bytes) -> np.ndarray:
  import tensorflow as tf
  return tf.io.decode_png(data, channels=0).numpy()


def _pil_decode(data: bytes, shape) -> np.ndarray:
  return np.asarray(PIL.open(io.BytesIO(data))).reshape(shape)


def _photos():
  from skimage import data
  import tensorflow as tf
  out = []
  for name in ("astronaut", "coffee", "chelsea"):
    image = tf.image.resize(getattr(data, name)(), (256, 256))
    out.append(decoding.to_uint8(image).numpy())
  return out


@pytest.fixture(scope="module")
def images():
  rng = np.random.default_rng(0)
  photos = _photos()
  out = list(photos)
  out.append(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))  # noise
  out.append(np.full((256, 256, 3), (200, 30, 7), np.uint8))  # flat
  out.append(photos[0][..., :1].copy())  # grey
  out.append(np.concatenate([photos[1], photos[2][..., :1]], axis=-1))  # rgba
  out.append(np.ascontiguousarray(photos[0][::-1, ::2]))  # 256x128
  for shape in ((1, 1, 3), (1, 7, 1), (9, 1, 4), (3, 5, 2), (257, 255, 3)):
    out.append(rng.integers(0, 256, shape, dtype=np.uint8))
  return out


def test_libpng_and_pillow_decode_the_exact_pixels(images):
  for pixels in images:
    data = png_encoder.encode_png(pixels)
    assert data.startswith(png_encoder.SIGNATURE)
    np.testing.assert_array_equal(_tf_decode(data), pixels)
    np.testing.assert_array_equal(_pil_decode(data, pixels.shape), pixels)


def test_tfds_image_feature_decodes_the_exact_pixels(images):
  import tensorflow_datasets as tfds
  for pixels in images[:4] + images[5:7]:
    feature = tfds.features.Image(shape=(None, None, pixels.shape[2]), encoding_format="png")
    encoded = feature.encode_example(png_encoder.encode_png(pixels))
    np.testing.assert_array_equal(feature.decode_example(encoded).numpy(), pixels)


def test_a_photo_compresses_like_zlib_level_1(images):
  """Within 5% of `tf.io.encode_png(compression=1)`, the encoder it replaced."""
  import tensorflow as tf
  for pixels in images[:3]:
    ours = len(png_encoder.encode_png(pixels))
    zlib1 = len(tf.io.encode_png(pixels, compression=1).numpy())
    assert ours <= 1.05 * zlib1, (ours, zlib1)
    assert ours < 0.7 * pixels.size  # compressed, not stored


def test_same_pixels_give_the_same_bytes(images):
  for pixels in images:
    assert png_encoder.encode_png(pixels) == png_encoder.encode_png(pixels.copy())


def test_strided_views_encode_as_their_pixels(images):
  view = images[0][10:70:3, ::-2]
  np.testing.assert_array_equal(_tf_decode(png_encoder.encode_png(view)), view)


@pytest.mark.parametrize("bad", [
    np.zeros((4, 4, 3), np.float32),
    np.zeros((4, 4), np.uint8),
    np.zeros((4, 4, 5), np.uint8),
    np.zeros((0, 4, 3), np.uint8),
    np.zeros((4, 0, 1), np.uint8),
])
def test_not_an_image_is_a_value_error(bad):
  with pytest.raises(ValueError, match="encode_png takes"):
    png_encoder.encode_png(bad)


def test_the_decoder_stores_png_from_this_encoder():
  """ImageDecoder's stored bytes are encode_png of the pixels it returns."""
  import tensorflow as tf
  from skimage import data
  raw = tf.io.encode_jpeg(data.coffee()).numpy()
  result = decoding.ImageDecoder(decoding.ImageSettings()).decode(raw)
  pixels = _tf_decode(result.encoded)
  assert pixels.shape == (256, 256, 3)
  assert result.encoded == png_encoder.encode_png(pixels)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=40)
                  .filter(lambda s: s[2] <= 4)))
def test_any_small_image_round_trips(pixels):
  np.testing.assert_array_equal(_tf_decode(png_encoder.encode_png(pixels)), pixels)


def test_every_level_round_trips_and_trades_time_for_bytes(images):
  """Level 0 stores (about the raw size), higher levels are never larger on
  a photo; every level decodes to the exact pixels and is deterministic."""
  photo = images[0]
  sizes = {}
  for level in (0, 1, 2, 6, png_encoder.MAX_LEVEL):
    data = png_encoder.encode_png(photo, level)
    np.testing.assert_array_equal(_tf_decode(data), photo)
    np.testing.assert_array_equal(_pil_decode(data, photo.shape), photo)
    assert data == png_encoder.encode_png(photo.copy(), level)
    sizes[level] = len(data)
  assert sizes[0] > photo.size  # stored: the rows, their filter bytes, framing
  assert sizes[0] > 1.5 * sizes[1] >= 1.5 * sizes[6] >= 1.5 * sizes[png_encoder.MAX_LEVEL]
  assert png_encoder.encoder_id(0) != png_encoder.encoder_id()


@pytest.mark.parametrize("level", [-1, png_encoder.MAX_LEVEL + 1])
def test_a_level_outside_libdeflates_is_a_value_error(images, level):
  with pytest.raises(ValueError, match="level is 0 to 12"):
    png_encoder.encode_png(images[0], level)
