"""The stored record of one image: transforms/writing.py's serialize_example,
read back by TF's own parser."""

import hashlib

import tensorflow as tf

from exemplar.transforms import writing
from exemplar.transforms.decoding import DecodedImage, ImageSettings


def _image(encoded: bytes, class_name: str = "n01440764", label: int = 3) -> DecodedImage:
  return DecodedImage(
      class_name=class_name, label=label, rank=0,
      relative_path=f"{class_name}/x_0001.JPEG",
      source_path=f"/data/train/{class_name}/x_0001.JPEG", encoded=encoded,
      source_height=375, source_width=500,
      sha256=hashlib.sha256(encoded).hexdigest())


def _built_from_messages(image: DecodedImage) -> bytes:
  """The same Example built the tf.train way, from constructed Features."""
  def b(value: bytes):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

  def i(value: int):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

  return tf.train.Example(features=tf.train.Features(feature={
      "image": b(image.encoded), "label": i(image.label),
      "image/filename": b(image.source_path.encode()),
      "image/relative_path": b(image.relative_path.encode()),
      "image/class_name": b(image.class_name.encode()),
      "image/source_height": i(image.source_height),
      "image/source_width": i(image.source_width),
      "image/sha256": b(image.sha256.encode()),
  })).SerializeToString(deterministic=True)


def test_serialize_example_is_the_tf_train_example_and_parses_back():
  settings = ImageSettings()
  for image in (_image(bytes(range(256)) * 400),
                _image(b"", class_name="caf\u00e9 \u732b", label=0),
                _image(b"\x89PNG" + b"\0" * 10, class_name="x" * 300, label=2**40)):
    record = writing.serialize_example(image, settings)
    assert record == _built_from_messages(image)
    parsed = tf.io.parse_single_example(record, {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "image/class_name": tf.io.FixedLenFeature([], tf.string),
        "image/relative_path": tf.io.FixedLenFeature([], tf.string),
        "image/source_width": tf.io.FixedLenFeature([], tf.int64),
        "image/sha256": tf.io.FixedLenFeature([], tf.string),
    })
    assert parsed["image"].numpy() == image.encoded
    assert parsed["label"].numpy() == image.label
    assert parsed["image/class_name"].numpy().decode() == image.class_name
    assert parsed["image/relative_path"].numpy().decode() == image.relative_path
    assert parsed["image/source_width"].numpy() == 500
    assert parsed["image/sha256"].numpy().decode() == image.sha256
