"""The TFT transform_fn a run writes, applied to raw file bytes at "serving"."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from tests.conftest import make_tree, run_cli

pytestmark = pytest.mark.slow  # TFT graphs built and run: seconds each

# Sorted order a, b, c; by frequency b, c, a; reverse-lexicographic c, b, a:
# a tft.vocabulary-based label would differ from Keras's sorted-class index.
COUNTS = {"b": 3, "c": 2, "a": 1}

SETTINGS = [
    pytest.param(["--image_size", "20", "28", "--interpolation", "bicubic",
                  "--crop_to_aspect_ratio"], 3, id="bicubic-crop-rgb"),
    pytest.param(["--image_size", "17", "9", "--color_mode", "grayscale"], 1,
                 id="bilinear-grayscale"),
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp("tft") / "images")
  make_tree(root, COUNTS, seed=3, size=(48, 72))
  return root


def stored_pixels(out: str):
  from exemplar import load_dataset
  ds = load_dataset(out, batch_size=None, shuffle=False, dtype="uint8", verbose=False)
  return {path: (image.numpy(), int(label))
          for path, (image, label) in zip(ds.file_paths, ds)}


@pytest.mark.parametrize("flags,channels", SETTINGS)
def test_transform_fn_reproduces_stored_pixels_and_sorted_labels(tree, tmp_path, flags,
                                                                 channels):
  import tensorflow as tf
  import tensorflow_transform as tft

  out = str(tmp_path / "out")
  assert run_cli(["--input_dir", tree, "--output_dir", out,
                  "--samples_per_class", "all"] + flags) == 0
  height, width = int(flags[1]), int(flags[2])
  stored = stored_pixels(out)
  with open(os.path.join(out, "manifest.csv"), newline="") as f:
    manifest = list(csv.DictReader(f))
  assert len(manifest) == sum(COUNTS.values()) == len(stored)

  paths = [row["source_path"] for row in manifest]
  raw = [open(path, "rb").read() for path in paths]
  names = [row["class_name"] for row in manifest]
  transform = tft.TFTransformOutput(os.path.join(out, "transform"))
  result = transform.transform_raw_features({
      "image_bytes": tf.constant(raw + [raw[0]]),
      "class_name": tf.constant(names + ["zebra"]),
  })
  images, labels = result["image"], result["label"]
  assert images.dtype == tf.float32
  assert tuple(images.shape) == (len(raw) + 1, height, width, channels)
  labels = labels.numpy().tolist()
  assert labels[:-1] == [sorted(COUNTS).index(name) for name in names]
  assert labels[-1] == -1

  pixels = np.clip(np.round(images.numpy()), 0, 255).astype(np.uint8)
  for i, path in enumerate(paths):
    stored_image, stored_label = stored[path]
    np.testing.assert_array_equal(pixels[i], stored_image, err_msg=path)
    assert labels[i] == stored_label == int(manifest[i]["label"])
  # The unknown-class row still gets the image preprocessing.
  np.testing.assert_array_equal(pixels[-1], pixels[0])


@pytest.fixture(scope="module")
def rgba_run(tree, tmp_path_factory) -> str:
  out = str(tmp_path_factory.mktemp("tft_rgba") / "out")
  # JPEGs cannot decode as rgba (as in Keras): the png files are used.
  assert run_cli(["--input_dir", tree, "--output_dir", out, "--image_size", "8", "12",
                  "--color_mode", "rgba"]) == 0
  return out


def test_transform_fn_schema(tree, rgba_run):
  import tensorflow as tf
  import tensorflow_transform as tft

  transform = tft.TFTransformOutput(os.path.join(rgba_run, "transform"))
  spec = transform.transformed_feature_spec()
  assert set(spec) == {"image", "label"}
  assert spec["image"].dtype == tf.float32
  assert list(spec["image"].shape) == [8, 12, 4]
  assert spec["label"].dtype == tf.int64
  png = open(os.path.join(tree, "c", "img_001.png"), "rb").read()
  result = transform.transform_raw_features({
      "image_bytes": tf.constant([png, png]), "class_name": tf.constant(["c", "C"])})
  assert result["label"].numpy().tolist() == [2, -1]  # names are case-sensitive
  assert tuple(result["image"].shape) == (2, 8, 12, 4)


def test_transform_output_knows_the_raw_feature_spec(rgba_run):
  import tensorflow as tf
  import tensorflow_transform as tft

  transform = tft.TFTransformOutput(os.path.join(rgba_run, "transform"))
  assert transform.raw_feature_spec() == {
      "image_bytes": tf.io.FixedLenFeature([], tf.string),
      "class_name": tf.io.FixedLenFeature([], tf.string)}


def test_direct_graph_writes_what_analyze_dataset_writes(tmp_path):
  """build_transform_graph_direct (the run's path) against TFT's own
  AnalyzeDataset pipeline: the same files, the same schemas. (saved_model.pb
  and fingerprint.pb name traced functions with a process-wide counter.)"""
  from exemplar.transforms import tft_graph
  from exemplar.transforms.decoding import ImageSettings
  settings = ImageSettings(height=12, width=10, interpolation="bicubic")

  def files(folder):
    return {os.path.relpath(os.path.join(d, n), folder): open(os.path.join(d, n), "rb").read()
            for d, _, names in os.walk(folder) for n in names}

  tft_graph.build_transform_graph([], ["a", "b"], settings, str(tmp_path / "beam"),
                                  str(tmp_path / "s1"))
  tft_graph.build_transform_graph_direct(["a", "b"], settings, str(tmp_path / "direct"),
                                         str(tmp_path / "s2"))
  beam, direct = files(str(tmp_path / "beam")), files(str(tmp_path / "direct"))
  assert sorted(beam) == sorted(direct)
  for name in beam:
    if not name.endswith(("saved_model.pb", "fingerprint.pb")):
      assert beam[name] == direct[name], name
