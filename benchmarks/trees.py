"""The benchmark image trees, built once and cached outside git.

  * `imagenet`: 1,000 classes x 1,300 files, ImageNet-shaped (`n00000000/
    n00000000_0.JPEG`). Every file is a HARD LINK to one of 64 distinct real
    500x375 JPEGs, so the tree costs 1.3M directory entries, not 80 GB; ext4
    allows ~65,000 links per file and each source gets ~20,300.
  * `mid`: 1,000 classes x 130 files, built the same way: the 130k tree for the
    memory-growth check. It has the same classes as `imagenet`, so a k=1 run
    decodes and writes the same 1,000 images on both and the growth measures
    what the number of files costs, not the number of classes.
  * `photos`: 10,000 distinct 500x375 JPEGs, 100 classes x 100 (decode
    throughput and `--samples_per_class all`).

Every JPEG is a random crop of one of the photographs scikit-image ships in its
wheel (skimage/data), resized to 500x375 and saved at quality 90, so nothing is
downloaded and the bytes are the same on every machine with the same Pillow.
A tree is built in a staging folder, renamed into place, then marked complete
by an empty `<tree>.complete` file beside it, so an interrupted build is never
mistaken for a finished one.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import tempfile
from typing import Dict, List, Sequence, Tuple

import numpy as np

WIDTH, HEIGHT = 500, 375
JPEG_QUALITY = 90
# scikit-image's photographs (grayscale ones become RGB), the crop material.
PHOTOS = (
    "astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg",
    "ihc.png", "motorcycle_left.png", "motorcycle_right.png", "retina.jpg",
    "rocket.jpg", "camera.png", "brick.png", "grass.png", "gravel.png",
    "moon.png", "cell.png", "coins.png",
)
NUM_LINK_SOURCES = 64
TREES_VERSION = "1"
COMPLETE = ".complete"

# name -> (classes, files per class, distinct JPEGs or None for one per file)
TREES: Dict[str, Tuple[int, int, int | None]] = {
    "imagenet": (1000, 1300, NUM_LINK_SOURCES),
    "mid": (1000, 130, NUM_LINK_SOURCES),
    "photos": (100, 100, None),
    # for --quick: the growth check's small side, and a 1,000-photo tree
    "small": (1000, 13, NUM_LINK_SOURCES),
    "photos_small": (10, 100, None),
}


def default_trees_dir() -> str:
  """Outside the repository, so `grep -r` and test collection never walk it."""
  return os.environ.get("EXEMPLAR_BENCH_TREES", "/tmp/exemplar-bench-trees")


def _photos() -> List[np.ndarray]:
  import skimage
  from PIL import Image
  folder = os.path.join(os.path.dirname(skimage.__file__), "data")
  return [np.asarray(Image.open(os.path.join(folder, name)).convert("RGB"))
          for name in PHOTOS]


_PHOTO_CACHE: List[np.ndarray] = []


def make_jpeg(index: int) -> bytes:
  """The `index`-th distinct 500x375 JPEG: a seeded random crop of a photo."""
  from PIL import Image
  if not _PHOTO_CACHE:
    _PHOTO_CACHE.extend(_photos())
  rng = np.random.default_rng([20260311, index])
  photo = _PHOTO_CACHE[index % len(_PHOTO_CACHE)]
  height, width = photo.shape[:2]
  # A 4:3 window of 45-100% of the largest one that fits, anywhere in the photo.
  full_w = min(width, height * 4 // 3)
  crop_w = max(32, int(full_w * rng.uniform(0.45, 1.0)))
  crop_h = crop_w * 3 // 4
  top = int(rng.integers(0, height - crop_h + 1))
  left = int(rng.integers(0, width - crop_w + 1))
  crop = photo[top:top + crop_h, left:left + crop_w]
  if rng.integers(2):
    crop = crop[:, ::-1]
  image = Image.fromarray(np.ascontiguousarray(crop)).resize(
      (WIDTH, HEIGHT), Image.BILINEAR)
  out = io.BytesIO()
  image.save(out, format="JPEG", quality=JPEG_QUALITY)
  return out.getvalue()


def class_name(index: int) -> str:
  return f"n{index:08d}"


def file_name(class_index: int, index: int) -> str:
  return f"{class_name(class_index)}_{index}.JPEG"


def _write_jpegs(folder: str, names: Sequence[Tuple[int, str]], workers: int) -> None:
  """Writes make_jpeg(i) to folder/name for each (i, name), on `workers` processes."""
  indices = [i for i, _ in names]
  with multiprocessing.get_context("fork").Pool(workers) as pool:
    for (_, name), data in zip(names, pool.imap(make_jpeg, indices, chunksize=64)):
      path = os.path.join(folder, name)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "wb") as f:
        f.write(data)


def build_tree(root: str, classes: int, files_per_class: int,
               distinct: int | None, sources_dir: str, workers: int = 2) -> None:
  """Writes one tree at `root` (which must not exist yet)."""
  if distinct is None:  # every file is its own JPEG
    names = [(c * files_per_class + i, f"{class_name(c)}/{file_name(c, i)}")
             for c in range(classes) for i in range(files_per_class)]
    _write_jpegs(root, names, workers)
    return
  sources = ensure_sources(sources_dir, distinct, workers)
  os.makedirs(root)
  n = 0
  for c in range(classes):
    folder = os.path.join(root, class_name(c))
    os.mkdir(folder)
    for i in range(files_per_class):
      os.link(sources[n % distinct], os.path.join(folder, file_name(c, i)))
      n += 1


def ensure_sources(folder: str, count: int, workers: int) -> List[str]:
  """The `count` distinct JPEGs hard-linked trees point at."""
  paths = [os.path.join(folder, f"source_{i:03d}.jpg") for i in range(count)]
  if not os.path.exists(os.path.join(folder, COMPLETE)):
    os.makedirs(folder, exist_ok=True)
    _write_jpegs(folder, [(i, os.path.basename(p)) for i, p in enumerate(paths)],
                 workers)
    open(os.path.join(folder, COMPLETE), "w").close()
  return paths


def ensure_tree(name: str, trees_dir: str | None = None, log=print) -> str:
  """The path of tree `name`, building it first if it is not there yet."""
  trees_dir = trees_dir or default_trees_dir()
  classes, files_per_class, distinct = TREES[name]
  root = os.path.join(trees_dir, f"{name}-{classes}x{files_per_class}-v{TREES_VERSION}")
  marker = root + COMPLETE  # beside the tree: inside, the seed's scripts would list it
  if os.path.exists(marker):
    return root
  os.makedirs(trees_dir, exist_ok=True)
  log(f"building {name} tree ({classes} x {files_per_class} files) at {root} ...")
  staging = tempfile.mkdtemp(prefix=f".{name}-", dir=trees_dir)
  tree = os.path.join(staging, "tree")
  build_tree(tree, classes, files_per_class, distinct,
             os.path.join(trees_dir, f"sources-{distinct}-v{TREES_VERSION}"))
  if os.path.exists(root):  # an incomplete earlier build
    shutil.rmtree(root)
  os.rename(tree, root)
  shutil.rmtree(staging, ignore_errors=True)
  open(marker, "w").close()
  return root


if __name__ == "__main__":
  import sys
  for tree_name in sys.argv[1:] or list(TREES):
    print(ensure_tree(tree_name))
