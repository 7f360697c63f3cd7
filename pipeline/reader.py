"""Read an exemplar output folder back as a `tf.data.Dataset`.

    from exemplar import load_dataset
    ds = load_dataset("exemplar_output", batch_size=32)
    ds.class_names  # as image_dataset_from_directory gives it

The drop-in counterpart of `tf.keras.utils.image_dataset_from_directory`:
elements are `(image uint8 [H, W, C], label int64)`, batched when
`batch_size` is given.
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional

from apache_beam.io.filesystems import FileSystems

from exemplar.transforms.decoding import COLOR_MODES


def _read_text(path: str) -> str:
  with FileSystems.open(path) as f:
    return f.read().decode("utf-8")


def shard_paths(output_dir: str, summary: Dict) -> List[str]:
  """The dataset's shard files, in shard order, by the exact names its
  summary lists (never a glob: the folder's name may hold '[' or '?')."""
  return [FileSystems.join(output_dir, shard["file"]) for shard in summary["shards"]]


def load_dataset(output_dir: str, batch_size: Optional[int] = None,
                 shuffle: bool = False, seed: Optional[int] = None):
  """The images and labels of an exemplar output folder as a tf.data.Dataset.

  Raises FileNotFoundError for a folder that holds no finished dataset.
  """
  import tensorflow as tf
  from exemplar.transforms import metadata

  if not FileSystems.exists(FileSystems.join(output_dir, metadata.SUCCESS_MARKER)):
    raise FileNotFoundError(
        f"{output_dir} holds no finished exemplar dataset (no {metadata.SUCCESS_MARKER})")
  class_names = _read_text(
      FileSystems.join(output_dir, metadata.CLASS_NAMES_FILE)).splitlines()
  summary = json.loads(_read_text(FileSystems.join(output_dir, metadata.SUMMARY_JSON)))
  height, width = summary["config"]["image_size"]
  channels = COLOR_MODES[summary["config"]["color_mode"]]
  spec = {
      "image": tf.io.FixedLenFeature([], tf.string),
      "label": tf.io.FixedLenFeature([], tf.int64),
      "image/filename": tf.io.FixedLenFeature([], tf.string),
  }

  def parse(serialized):
    features = tf.io.parse_single_example(serialized, spec)
    image = tf.io.decode_image(features["image"], channels=channels,
                               expand_animations=False)
    image.set_shape((height, width, channels))
    return image, features["label"]

  paths = shard_paths(output_dir, summary)
  dataset = tf.data.TFRecordDataset(paths)
  if shuffle:
    dataset = dataset.shuffle(1024, seed=seed)
  dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
  if batch_size:
    dataset = dataset.batch(batch_size)
  dataset = dataset.prefetch(tf.data.AUTOTUNE)
  dataset.class_names = class_names
  dataset.file_paths = _file_paths(output_dir)
  return dataset


def _file_paths(output_dir: str) -> List[str]:
  """Source paths in record order (the manifest is sorted like the shards)."""
  import csv
  import io
  from exemplar.transforms import metadata
  text = _read_text(FileSystems.join(output_dir, metadata.MANIFEST_FILE))
  rows = list(csv.DictReader(io.StringIO(text)))
  return [row["source_path"] for row in sorted(rows, key=lambda r: r["shard"])]
