"""Baseline: the seed question's example 2, "glob the first file per class".

    python benchmarks/baselines/glob_first_file.py ROOT [--stack]

The function is the seed's code unchanged (os.listdir, glob.glob(...)[0],
keras load_img + img_to_array, from_tensor_slices); the run iterates the
dataset once, as its usage comment says. Not random, writes nothing.

On TF 2.21, `from_tensor_slices` of a Python list of 1,000 float32 arrays
converts element by element (~50 ms per 256x256x3 image), which dominates
the seed's run. `--stack` is the one-line fix (np.stack the list first): a
stricter baseline, reported beside the verbatim one.
"""

import os
import time

_STARTED = time.perf_counter()

import argparse  # noqa: E402
import glob  # noqa: E402

import numpy as np  # noqa: E402

import tensorflow as tf  # noqa: E402


def single_sample_per_class_deterministic(directory, image_size=(256, 256), batch_size=32):
  classes = os.listdir(directory)
  images = []
  labels = []

  for i, class_name in enumerate(classes):
    class_dir = os.path.join(directory, class_name)
    image_path = glob.glob(os.path.join(class_dir, '*'))[0]  # selects first image
    img = tf.keras.preprocessing.image.load_img(image_path, target_size=image_size)
    img_array = tf.keras.preprocessing.image.img_to_array(img)
    images.append(img_array)
    labels.append(i)

  dataset = tf.data.Dataset.from_tensor_slices((images, labels))
  dataset = dataset.batch(batch_size)
  return dataset


def single_sample_per_class_stacked(directory, image_size=(256, 256), batch_size=32):
  """The same, with the list of arrays stacked before from_tensor_slices."""
  classes = os.listdir(directory)
  images = []
  labels = []

  for i, class_name in enumerate(classes):
    class_dir = os.path.join(directory, class_name)
    image_path = glob.glob(os.path.join(class_dir, '*'))[0]  # selects first image
    img = tf.keras.preprocessing.image.load_img(image_path, target_size=image_size)
    img_array = tf.keras.preprocessing.image.img_to_array(img)
    images.append(img_array)
    labels.append(i)

  dataset = tf.data.Dataset.from_tensor_slices((np.stack(images), np.array(labels)))
  dataset = dataset.batch(batch_size)
  return dataset


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("root")
  parser.add_argument("--stack", action="store_true")
  args = parser.parse_args()
  imported = time.perf_counter()
  make = (single_sample_per_class_stacked if args.stack
          else single_sample_per_class_deterministic)
  dataset = make(args.root)
  count = sum(int(labels.shape[0]) for _, labels in dataset)
  done = time.perf_counter()
  print(f"STAGE images={count} import_seconds={imported - _STARTED:.3f} "
        f"work_seconds={done - imported:.3f}")
