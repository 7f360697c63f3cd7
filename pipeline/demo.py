"""The embedded demo: a small, real-looking image tree built on first use.

Made from the sample photographs scikit-image ships inside its wheel (no
download): each class is one photograph, and its files are different crops,
flips and scales of it, saved in the formats real folders mix (JPEG, PNG,
grayscale, a nested folder), so `exemplar` with no arguments runs the whole
job on a fresh machine, offline.
"""

from __future__ import annotations

import os
import tempfile
from typing import Dict

import numpy as np

# class name -> scikit-image sample photo
DEMO_PHOTOS: Dict[str, str] = {
    "astronaut": "astronaut.png",
    "cat": "chelsea.png",
    "coffee": "coffee.png",
    "coins": "coins.png",
    "galaxy": "hubble_deep_field.jpg",
    "motorcycle": "motorcycle_left.png",
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
}
FILES_PER_CLASS = 6
DEMO_VERSION = "1"


def default_demo_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "exemplar", f"demo-tree-v{DEMO_VERSION}")


def _photo(name: str) -> np.ndarray:
  from skimage import io as skio
  import skimage
  path = os.path.join(os.path.dirname(skimage.__file__), "data", name)
  return np.asarray(skio.imread(path))


def _variant(photo: np.ndarray, index: int, rng: np.random.Generator) -> np.ndarray:
  """A crop of 60-95% of the photo, sometimes flipped."""
  height, width = photo.shape[:2]
  scale = rng.uniform(0.6, 0.95)
  crop_h, crop_w = max(16, int(height * scale)), max(16, int(width * scale))
  top = int(rng.integers(0, height - crop_h + 1))
  left = int(rng.integers(0, width - crop_w + 1))
  crop = photo[top:top + crop_h, left:left + crop_w]
  if index % 2:
    crop = crop[:, ::-1]
  return np.ascontiguousarray(crop)


def build_demo_tree(root: str) -> str:
  """Writes the demo tree under `root` (deterministic bytes); returns root."""
  from PIL import Image
  rng = np.random.default_rng(20261124)
  for class_name, photo_name in DEMO_PHOTOS.items():
    photo = _photo(photo_name)
    if photo.ndim == 3 and photo.shape[2] == 4:
      photo = photo[:, :, :3]
    folder = os.path.join(root, class_name)
    os.makedirs(os.path.join(folder, "more"), exist_ok=True)
    for index in range(FILES_PER_CLASS):
      image = Image.fromarray(_variant(photo, index, rng))
      if index == FILES_PER_CLASS - 1:  # a nested folder, as real trees have
        path = os.path.join(folder, "more", f"{class_name}_{index:02d}.png")
        image.save(path, format="PNG")
      elif index % 3 == 2:
        image.save(os.path.join(folder, f"{class_name}_{index:02d}.png"), format="PNG")
      else:
        image.convert("RGB").save(
            os.path.join(folder, f"{class_name}_{index:02d}.jpg"), format="JPEG",
            quality=90)
  return root


def ensure_demo_tree(root: str | None = None) -> str:
  """The demo tree's path, building it first if it is not there yet."""
  root = root or default_demo_dir()
  marker = os.path.join(root, ".complete")
  if os.path.exists(marker):
    return root
  parent = os.path.dirname(root)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".demo-", dir=parent)
  build_demo_tree(staging)
  open(os.path.join(staging, ".complete"), "w").close()
  try:
    os.rename(staging, root)
  except OSError:  # another process built it first
    import shutil
    shutil.rmtree(staging, ignore_errors=True)
  return root
