"""Baseline: `image_dataset_from_directory` merely iterating a tree.

    python benchmarks/baselines/keras_iterate.py ROOT

Keras's defaults (batch 32, 256x256 bilinear, shuffled file order): every
image is read, decoded and resized, on tf.data's parallel map over all cores,
and nothing is written. exemplar's `--samples_per_class all` does the same
decode and resize and also encodes and writes TFRecords.
"""

import sys
import time

_STARTED = time.perf_counter()

import tensorflow as tf  # noqa: E402

if __name__ == "__main__":
  imported = time.perf_counter()
  ds = tf.keras.utils.image_dataset_from_directory(sys.argv[1], image_size=(256, 256))
  listed = time.perf_counter()
  count = 0
  for images, _ in ds:
    count += int(images.shape[0])
  done = time.perf_counter()
  print(f"STAGE images={count} import_seconds={imported - _STARTED:.3f} "
        f"list_seconds={listed - imported:.3f} loop_seconds={done - listed:.3f}")
