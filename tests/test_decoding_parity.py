"""Pixel parity with `tf.keras.utils.image_dataset_from_directory`, per format.

One exemplar run per setting converts a one-class tree holding every format
Keras accepts; each stored image must equal Keras's float pixels rounded and
clipped to uint8, exactly. Files that TF cannot decode in a colour mode must
fail in Keras too, and exemplar must record them in errors.csv, not crash,
except GIFs and BMPs, which exemplar converts (tests/test_colour_modes.py).
"""

from __future__ import annotations

import csv
import json
import os
from typing import Dict, Tuple

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # Keras's loader on real trees: seconds each

WIDE = (37, 53)  # odd sizes: resizing and centre crops do not divide evenly
TALL = (61, 29)
CLASS = "things"


def noise_image(rng: np.random.Generator, height: int, width: int,
                channels: int = 3) -> np.ndarray:
  """Smooth random pixels of exactly height x width (blocks of 4)."""
  small = rng.integers(0, 256, (-(-height // 4), -(-width // 4), channels), dtype=np.uint8)
  big = np.kron(small, np.ones((4, 4, 1), dtype=np.uint8))[:height, :width]
  return np.ascontiguousarray(big[:, :, 0] if channels == 1 else big)


def _save(root: str, name: str, image: Image.Image, **save_args) -> None:
  path = os.path.join(root, CLASS, name)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image.save(path, **save_args)


def _encode_png16(array: np.ndarray) -> bytes:
  import tensorflow as tf
  return tf.io.encode_png(tf.constant(array, dtype=tf.uint16)).numpy()


def make_format_tree(root: str, seed: int = 0) -> Dict[str, str]:
  """Every format in a wide and a tall size; returns {file name: format}."""
  rng = np.random.default_rng(seed)
  formats = {}
  for tag, (h, w) in (("wide", WIDE), ("tall", TALL)):
    rgb = lambda: Image.fromarray(noise_image(rng, h, w))  # noqa: E731

    def add(kind: str, ext: str, image: Image.Image, **save_args):
      name = f"{kind}_{tag}.{ext}"
      _save(root, name, image, **save_args)
      formats[name] = kind

    add("rgb_jpeg", "jpg", rgb(), quality=90)
    add("gray_jpeg", "JPG", Image.fromarray(noise_image(rng, h, w, 1)), quality=90)
    add("cmyk_jpeg", "jpeg",
        Image.frombytes("CMYK", (w, h), noise_image(rng, h, w, 4).tobytes()))
    add("rgb_png", "png", rgb())
    add("rgba_png", "png", Image.fromarray(noise_image(rng, h, w, 4), "RGBA"))
    add("gray_alpha_png", "png", Image.fromarray(noise_image(rng, h, w, 2), "LA"))
    add("palette_png", "png", rgb().quantize(16))
    add("palette_transparent_png", "Png", rgb().quantize(16), transparency=3)
    add("gray16_png", "png",
        Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.uint16)))
    name = f"rgb16_png_{tag}.png"
    with open(os.path.join(root, CLASS, name), "wb") as f:
      f.write(_encode_png16(rng.integers(0, 65536, (h, w, 3)).astype(np.uint16)))
    formats[name] = "rgb16_png"
    frames = [rgb() for _ in range(3)]
    add("animated_gif", "gif", frames[0], save_all=True, append_images=frames[1:],
        duration=50, loop=0)
    add("rgb_bmp", "bmp", rgb())
    add("rgba_bmp", "BMP", Image.fromarray(noise_image(rng, h, w, 4), "RGBA"))
  return formats


def keras_modules():
  """Both Keras releases TF users have: Keras 3 (`tf.keras` by default) and
  tf_keras (Keras 2, which `tf.keras` becomes once tensorflow-transform is
  imported, as it sets TF_USE_LEGACY_KERAS=1)."""
  import keras
  import tf_keras
  return {"keras3": keras, "tf_keras": tf_keras}


def keras_pixels(keras, root: str, size: Tuple[int, int], interpolation: str, crop: bool,
                 color_mode: str):
  """({path: uint8 pixels} Keras decodes, {paths} Keras fails on)."""
  import tensorflow as tf
  ds = keras.utils.image_dataset_from_directory(
      root, labels="inferred", shuffle=False, batch_size=None, image_size=size,
      interpolation=interpolation, crop_to_aspect_ratio=crop, color_mode=color_mode)
  paths = list(ds.file_paths)
  # Pair each element with its path before dropping the ones that fail.
  pairs = tf.data.Dataset.zip(
      (ds, tf.data.Dataset.from_tensor_slices(paths))).ignore_errors()
  ok = {}
  for (image, _), path in pairs:
    ok[path.numpy().decode()] = np.clip(np.round(image.numpy()), 0, 255).astype(np.uint8)
  return ok, set(paths) - set(ok)


def exemplar_pixels(out: str):
  from exemplar import load_dataset
  ds = load_dataset(out, batch_size=None, shuffle=False, dtype="uint8", verbose=False)
  images = [image.numpy() for image, _ in ds]
  assert len(images) == len(ds.file_paths)
  return dict(zip(ds.file_paths, images))


def read_csv(path: str):
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


# Files that TF 2.21's decode_image rejects in each colour mode (Keras too).
GIF_BMP_CMYK = {"animated_gif", "rgb_bmp", "rgba_bmp", "cmyk_jpeg"}
JPEG_GIF = {"rgb_jpeg", "gray_jpeg", "cmyk_jpeg", "animated_gif"}
# Of those, the ones exemplar decodes anyway, at their own channels converted
# with TF ops (tests/test_colour_modes.py): {color_mode: kinds}.
BEYOND_KERAS = {"grayscale": {"animated_gif", "rgb_bmp", "rgba_bmp"},
                "rgba": {"animated_gif", "rgb_jpeg", "gray_jpeg", "cmyk_jpeg"}}


def converted_pixels(path: str, size: Tuple[int, int], interpolation: str, color_mode: str):
  """What exemplar must store for a GIF or BMP Keras cannot give in a mode:
  its RGB converted (grayscale: tf.image.rgb_to_grayscale; rgba: alpha 255),
  then Keras's resize, rounded."""
  import tensorflow as tf
  with open(path, "rb") as f:
    rgb = tf.io.decode_image(f.read(), channels=3, expand_animations=False)
  if color_mode == "grayscale":
    image = tf.image.rgb_to_grayscale(rgb)
  else:
    image = tf.concat([rgb, tf.fill(tf.concat([tf.shape(rgb)[:2], [1]], 0),
                                    tf.constant(255, tf.uint8))], axis=-1)
  resized = tf.image.resize(image, size, method=interpolation)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()

SETTINGS = [
    # id, image_size, interpolation, crop_to_aspect_ratio, color_mode, expected failures
    pytest.param((24, 40), "bilinear", False, "rgb", set(), id="bilinear-rgb"),
    # At the source size bilinear is the identity: shows the raw decoded frame.
    pytest.param(WIDE, "bilinear", False, "rgb", set(), id="bilinear-rgb-source-size"),
    pytest.param((2 * WIDE[0], 2 * WIDE[1]), "nearest", False, "rgb", set(),
                 id="nearest-rgb-2x"),
    pytest.param((30, 30), "bicubic", True, "rgb", set(), id="bicubic-crop-rgb"),
    pytest.param((40, 16), "area", True, "rgb", set(), id="area-crop-tall-rgb"),
    pytest.param((19, 45), "lanczos3", False, "rgb", set(), id="lanczos3-rgb"),
    pytest.param((24, 40), "bilinear", False, "grayscale", GIF_BMP_CMYK,
                 id="bilinear-grayscale"),
    pytest.param((24, 40), "bilinear", False, "rgba", JPEG_GIF, id="bilinear-rgba"),
]


@pytest.fixture(scope="module")
def format_tree(tmp_path_factory) -> Tuple[str, Dict[str, str]]:
  root = str(tmp_path_factory.mktemp("formats") / "images")
  return root, make_format_tree(root)


@pytest.mark.parametrize("size,interpolation,crop,color_mode,expected_failures", SETTINGS)
def test_pixels_equal_keras(format_tree, tmp_path, size, interpolation, crop,
                            color_mode, expected_failures):
  root, formats = format_tree
  out = str(tmp_path / "out")
  argv = ["--input_dir", root, "--output_dir", out, "--samples_per_class", "all",
          "--image_size", str(size[0]), str(size[1]), "--interpolation", interpolation,
          "--color_mode", color_mode]
  if crop:
    argv.append("--crop_to_aspect_ratio")
  assert run_cli(argv) == 0

  ours = exemplar_pixels(out)
  channels = {"rgb": 3, "grayscale": 1, "rgba": 4}[color_mode]
  errors = read_csv(os.path.join(out, "errors.csv"))
  summary = json.load(open(os.path.join(out, "summary.json")))
  manifest = read_csv(os.path.join(out, "manifest.csv"))

  for keras_name, keras in keras_modules().items():
    keras_ok, keras_failed = keras_pixels(keras, root, size, interpolation, crop, color_mode)
    # The same files decode, and the same files fail, but for the GIFs and
    # BMPs that exemplar decodes beyond Keras.
    beyond = {p for p in keras_failed
              if formats[os.path.basename(p)] in BEYOND_KERAS.get(color_mode, set())}
    assert set(ours) == set(keras_ok) | beyond, keras_name
    failed_kinds = {formats[os.path.basename(p)] for p in keras_failed}
    assert failed_kinds == expected_failures, keras_name
    assert {row["source_path"] for row in errors} == keras_failed - beyond
    for path in beyond:
      assert not crop  # converted_pixels does not crop
      np.testing.assert_array_equal(
          ours[path], converted_pixels(path, size, interpolation, color_mode), err_msg=path)
    mismatched = []
    for path, expected in keras_ok.items():
      got = ours[path]
      assert got.shape == (size[0], size[1], channels) and got.dtype == np.uint8
      if not np.array_equal(got, expected):
        diff = np.abs(got.astype(int) - expected.astype(int))
        mismatched.append(f"{os.path.basename(path)}: {int((diff > 0).sum())} px, "
                          f"max {int(diff.max())}")
    assert not mismatched, (keras_name, mismatched)

  assert all(row["reason"].startswith("cannot decode") for row in errors)
  assert summary["num_failed"] == len(errors)
  assert summary["num_examples"] == len(ours) == 2 * len(set(formats.values())) - len(errors)
  # Every decodable source image was stored once.
  assert sorted(r["source_path"] for r in manifest) == sorted(ours)

  if size == WIDE and color_mode == "rgb":
    # Exact pixels of lossless sources, and the GIF's first frame (Keras's rule).
    gif = os.path.join(root, CLASS, "animated_gif_wide.gif")
    with Image.open(gif) as image:
      assert image.n_frames == 3
      first = np.asarray(image.convert("RGB"))
      image.seek(1)
      second = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(ours[gif], first)
    assert not np.array_equal(ours[gif], second)
    for name in ("rgb_png_wide.png", "rgb_bmp_wide.bmp", "palette_png_wide.png"):
      with Image.open(os.path.join(root, CLASS, name)) as image:
        expected = np.asarray(image.convert("RGB"))
      np.testing.assert_array_equal(ours[os.path.join(root, CLASS, name)], expected)


def test_failure_reason_says_why(format_tree, tmp_path):
  root, _ = format_tree
  out = str(tmp_path / "out")
  # A CMYK JPEG in grayscale: libjpeg cannot convert it (Keras fails too).
  assert run_cli(["--input_dir", root, "--output_dir", out, "--samples_per_class", "all",
                  "--image_size", "8", "8", "--color_mode", "grayscale"]) == 0
  reasons = {os.path.basename(r["source_path"]): r["reason"]
             for r in read_csv(os.path.join(out, "errors.csv"))}
  assert reasons and all(name.startswith("cmyk_jpeg") for name in reasons), reasons
  assert all(reason.startswith("cannot decode: ") and "\n" not in reason
             for reason in reasons.values()), reasons
