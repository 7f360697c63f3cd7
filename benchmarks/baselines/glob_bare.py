"""Baseline: the bare glob-first script, the issue's yardstick for k=1.

    python benchmarks/baselines/glob_bare.py ROOT

Exactly what the issue describes: import TensorFlow, list the root's folders
(os.listdir order), glob each one, `load_img` + `img_to_array` of the first
file per class. Not random, no output.

Unlike baselines/glob_first_file.py (the seed's fuller example 2), it builds
no dataset: no `from_tensor_slices`, no batching, no iteration, so none of
the ~50 ms-per-image list conversion TF 2.21 spends there. It is the cheaper
of the two, which makes it the stricter yardstick.

Kept verbatim-naive, as a user would write it: the folder name goes into the
glob pattern unescaped (a class named `a[1]` would be matched as a pattern,
and a folder whose glob is empty raises IndexError), files are neither
filtered by extension nor sorted, and the "first" file is whatever order the
directory returns.
"""

import os
import time

_STARTED = time.perf_counter()

import glob  # noqa: E402
import sys  # noqa: E402

import tensorflow as tf  # noqa: E402


def first_image_per_class(directory, image_size=(256, 256)):
  loaded = 0  # the harness's check only
  for class_name in os.listdir(directory):
    class_dir = os.path.join(directory, class_name)
    image_path = glob.glob(os.path.join(class_dir, '*'))[0]
    img = tf.keras.preprocessing.image.load_img(image_path, target_size=image_size)
    tf.keras.preprocessing.image.img_to_array(img)
    loaded += 1
  return loaded


if __name__ == "__main__":
  root = sys.argv[1]
  imported = time.perf_counter()
  images = first_image_per_class(root)
  done = time.perf_counter()
  print(f"STAGE images={images} import_seconds={imported - _STARTED:.3f} "
        f"work_seconds={done - imported:.3f}")
