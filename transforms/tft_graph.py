"""Stage 7: the tensorflow-transform graph that serving applies to raw bytes.

The `preprocessing_fn` calls the same `decode_and_resize` as the Beam decode
stage, so a model served with this graph sees exactly the training pixels
(as float32, as Keras gives them; TFT schemas have no uint8).

Raw features:  image_bytes (the file's bytes), class_name (the folder name).
Outputs:       image float32 [H, W, C], label int64 (-1 for an unknown class).

Labels are the index in the sorted class list, embedded as a constant rather
than computed with `tft.vocabulary`, whose order (by frequency, then
reverse-lexicographic) would not match Keras's sorted-class ids.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence

import apache_beam as beam

from transforms.decoding import ImageSettings, decode_and_resize

TRANSFORM_DIR = "transform"  # holds transform_fn/ and transformed_metadata/


def raw_feature_spec() -> Dict:
  import tensorflow as tf
  return {
      "image_bytes": tf.io.FixedLenFeature([], tf.string),
      "class_name": tf.io.FixedLenFeature([], tf.string),
  }


def make_preprocessing_fn(class_names: Sequence[str],
                          settings: ImageSettings) -> Callable:
  class_names = list(class_names)

  def preprocessing_fn(inputs):
    import tensorflow as tf
    images = tf.map_fn(
        # float32 for every method ('nearest' keeps the decoded uint8).
        lambda image_bytes: tf.cast(
            decode_and_resize(image_bytes, settings)[0], tf.float32),
        inputs["image_bytes"],
        fn_output_signature=tf.TensorSpec(settings.shape, tf.float32))
    names = tf.constant(class_names, dtype=tf.string)
    matches = tf.equal(
        tf.expand_dims(inputs["class_name"], 1), tf.expand_dims(names, 0))
    found = tf.reduce_any(matches, axis=1)
    index = tf.argmax(tf.cast(matches, tf.int32), axis=1, output_type=tf.int64)
    label = tf.where(found, index, tf.constant(-1, tf.int64))
    return {"image": images, "label": label}

  return preprocessing_fn


class WriteTransformGraph(beam.PTransform):
  """PCollection[{image_bytes, class_name}] -> the transform_fn, written.

  Returns TFT's completion PCollection, so later steps can wait for it.
  """

  def __init__(self, transform_dir: str, temp_dir: str,
               class_names: Sequence[str], settings: ImageSettings):
    super().__init__()
    self._transform_dir = transform_dir
    self._temp_dir = temp_dir
    self._class_names = list(class_names)
    self._settings = settings

  def expand(self, raw_examples):
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam

    metadata = tft.DatasetMetadata.from_feature_spec(raw_feature_spec())
    with tft_beam.Context(temp_dir=self._temp_dir):
      transform_fn = (
          (raw_examples, metadata)
          | "AnalyzeDataset" >> tft_beam.AnalyzeDataset(
              make_preprocessing_fn(self._class_names, self._settings)))
      # (saved_model_dir, transformed_metadata)
      return transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(
          self._transform_dir)
