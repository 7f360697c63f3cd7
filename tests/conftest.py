"""Shared fixtures: real image trees on disk and real exemplar runs."""

from __future__ import annotations

import os
from typing import Dict, List, Sequence

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_image(path: str, array: np.ndarray, fmt: str, **save_args) -> str:
  """Writes a real image file with Pillow."""
  from PIL import Image
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, format=fmt, **save_args)
  return path


def noise_image(rng: np.random.Generator, height: int, width: int,
                channels: int = 3) -> np.ndarray:
  """A smooth random image (noise would make JPEG sizes explode)."""
  small = rng.integers(0, 256, size=(max(2, -(-height // 8)), max(2, -(-width // 8)),
                                     channels), dtype=np.uint8)
  big = np.kron(small, np.ones((8, 8, 1), dtype=np.uint8))[:height, :width]
  if channels == 1:
    return big[:, :, 0]
  return np.ascontiguousarray(big)


# Bytes for files the listing stage only names: it never decodes them.
FAKE_IMAGE = b"not decoded by the listing stage"


def touch(root: str, relative: str, data: bytes = FAKE_IMAGE) -> str:
  """Writes `data` at root/relative ('/'-separated), making its folders."""
  path = os.path.join(root, *relative.split("/"))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)
  return path


def make_tree(root: str, files_per_class: Dict[str, int], seed: int = 0,
              size=(40, 56)) -> List[str]:
  """`root/<class>/img_###.jpg|png` with the given counts; returns relative paths."""
  rng = np.random.default_rng(seed)
  relative = []
  for class_name, count in files_per_class.items():
    os.makedirs(os.path.join(root, class_name), exist_ok=True)
    for i in range(count):
      fmt, ext = (("PNG", "png") if i % 2 else ("JPEG", "jpg"))
      rel = f"{class_name}/img_{i:03d}.{ext}"
      write_image(os.path.join(root, rel), noise_image(rng, *size), fmt)
      relative.append(rel)
  return relative


@pytest.fixture
def small_tree(tmp_path) -> str:
  root = str(tmp_path / "images")
  make_tree(root, {"apple": 5, "banana": 3, "cherry": 4})
  return root


def run_cli(argv: Sequence[str]) -> int:
  from exemplar.main import main
  return main(list(argv))
