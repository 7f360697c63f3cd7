"""Baseline: the seed question's example 1, image_dataset_from_directory and
keep the first image seen of each class.

    python benchmarks/baselines/keras_first_per_class.py ROOT [--limit N]

The function body is the seed's code (shuffle=True, seed=42, batch_size=1).
Keras decodes and resizes every image of the tree; `--limit N` stops after N
images so an ImageNet-sized tree can be timed on a bounded subset: the run
prints the time to build the dataset (Keras's own listing) and the per-image
time of the loop, from which run.py extrapolates the whole tree (labelled as
such in the table).
"""

import argparse
import time

_STARTED = time.perf_counter()

import tensorflow as tf  # noqa: E402


def first_per_class(directory, image_size=(256, 256), limit=None):
  ds = tf.keras.utils.image_dataset_from_directory(
      directory,
      labels='inferred',
      label_mode='int',
      image_size=image_size,
      batch_size=1,  # crucial for individual image processing
      shuffle=True,  # ensures random sampling later
      seed=42  # for reproducibility
  )
  listed = time.perf_counter()
  if limit:
    ds = ds.take(limit)
  class_samples = {}
  seen = 0
  first_batch = None
  for images, labels in ds:
    if first_batch is None:
      first_batch = time.perf_counter()
    seen += 1
    class_label = labels[0].numpy()
    if class_label not in class_samples:
      class_samples[class_label] = images[0]
  return class_samples, seen, listed, first_batch


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("root")
  parser.add_argument("--limit", type=int, default=None)
  args = parser.parse_args()
  imported = time.perf_counter()
  samples, seen, listed, first_batch = first_per_class(args.root, limit=args.limit)
  done = time.perf_counter()
  # Per-image time excludes the first batch (pipeline warm-up).
  per_image = (done - first_batch) / max(1, seen - 1)
  print(f"STAGE images={seen} classes_kept={len(samples)} "
        f"import_seconds={imported - _STARTED:.3f} "
        f"list_seconds={listed - imported:.3f} "
        f"first_batch_seconds={first_batch - listed:.3f} "
        f"loop_seconds={done - listed:.3f} per_image_seconds={per_image:.6f}")
