"""`load_dataset` as a drop-in for Keras 3's `image_dataset_from_directory`.

Keras here is Keras 3 (`import keras`): once tensorflow_transform is imported
(an exemplar run imports it) `tf.keras` is tf_keras, Keras 2.

One exemplar run (module fixture) writes 3 classes x 12 picks = 36 records of
24x32 RGB in 2 shards, with `--image_size` equal to the sources' size: a
bilinear resize to the same size is the identity, so the stored PNGs hold the
decoded source pixels exactly, and resizing them at read time runs Keras's op
on the same uint8 input as Keras does on the source file. That is why the
parity test asks for equality (no tolerance); a stored image already resized
to another size would be resized twice, which differs from Keras's single
resize.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import warnings
from typing import Dict, List, Tuple

import numpy as np
import pytest

from tests.conftest import make_tree, run_cli

pytestmark = pytest.mark.slow  # one whole CLI run writes the dataset read here

SOURCE_SIZE = (24, 32)
COUNTS = {"apple": 13, "banana": 12, "cherry": 14}
K = 12
N = K * len(COUNTS)
CLASSES = sorted(COUNTS)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> str:
  base = tmp_path_factory.mktemp("reader")
  tree = str(base / "images")
  make_tree(tree, COUNTS, seed=5, size=SOURCE_SIZE)
  output_dir = str(base / "out")
  assert run_cli(["--input_dir", tree, "--output_dir", output_dir, "--samples_per_class",
                  str(K), "--image_size", *map(str, SOURCE_SIZE), "--num_shards", "2",
                  "--no_contact_sheet"]) == 0
  return output_dir


def manifest(output_dir: str) -> List[Dict[str, str]]:
  with open(os.path.join(output_dir, "manifest.csv"), newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def label_of(output_dir: str) -> Dict[str, int]:
  return {row["source_path"]: int(row["label"]) for row in manifest(output_dir)}


def load(output_dir: str, **kwargs):
  from exemplar import load_dataset
  kwargs.setdefault("verbose", False)
  return load_dataset(output_dir, **kwargs)


def stored(output_dir: str) -> Dict[str, Tuple[bytes, np.ndarray]]:
  """{source path: (stored encoded image, stored uint8 pixels)}, read with
  plain tf.data from the shards the summary lists."""
  import tensorflow as tf
  summary = json.load(open(os.path.join(output_dir, "summary.json")))
  paths = [os.path.join(output_dir, s["file"]) for s in summary["shards"]]
  spec = {"image": tf.io.FixedLenFeature([], tf.string),
          "image/filename": tf.io.FixedLenFeature([], tf.string)}
  found = {}
  for serialized in tf.data.TFRecordDataset(paths):
    features = tf.io.parse_single_example(serialized, spec)
    encoded = features["image"].numpy()
    found[features["image/filename"].numpy().decode()] = (
        encoded, tf.io.decode_png(encoded).numpy())
  return found


def keys(dataset) -> List[bytes]:
  """Each element's image bytes, in iteration order (the images are unique)."""
  found = []
  for images, _ in dataset:
    found.extend(image.tobytes() for image in np.asarray(images))
  return found


# --- defaults ------------------------------------------------------------------


def test_defaults_are_keras_defaults(out, capsys):
  import tensorflow as tf
  ds = load(out, verbose=True)
  assert capsys.readouterr().out == f"Found {N} files belonging to 3 classes.\n"
  images_spec, labels_spec = ds.element_spec
  assert images_spec == tf.TensorSpec((None, *SOURCE_SIZE, 3), tf.float32)
  assert labels_spec == tf.TensorSpec((None,), tf.int32)
  assert int(ds.cardinality()) == len(ds) == 2  # 36 = 32 + 4
  batches = [(images.numpy(), labels.numpy()) for images, labels in ds]
  assert [images.shape for images, _ in batches] == [(32, *SOURCE_SIZE, 3),
                                                     (4, *SOURCE_SIZE, 3)]
  assert batches[0][0].dtype == np.float32 and batches[0][1].dtype == np.int32
  assert sorted(np.concatenate([labels for _, labels in batches]).tolist()) == sorted(
      label_of(out).values())
  assert ds.class_names == CLASSES
  assert sorted(ds.file_paths) == sorted(label_of(out))
  # The stored pixels, as float32.
  pixels = {v[1].tobytes() for v in stored(out).values()}
  assert {image.astype(np.uint8).tobytes() for images, _ in batches for image in images} == pixels


def test_shuffle_is_seeded_reshuffled_each_epoch_and_mixes_classes(out):
  ordered = keys(load(out, shuffle=False))
  first = load(out, seed=3)
  a = keys(first)
  assert sorted(a) == sorted(ordered) and a != ordered
  assert keys(load(out, seed=3)) == a           # same seed, same order
  assert keys(load(out, seed=4)) != a
  assert keys(first) != a                       # a new order each epoch, as Keras's
  # Records are stored in (rank, label) order: the classes take turns.
  labels = np.concatenate([labels.numpy() for _, labels in load(out, shuffle=False)])
  assert labels.tolist() == [0, 1, 2] * (N // 3)
  # The buffer spans the whole split: the first batch draws from all of it.
  position = {key: i for i, key in enumerate(ordered)}
  assert max(position[key] for key in a[:12]) >= N * 3 // 4


def test_seed_none_draws_a_seed_from_numpy_as_keras_does(out):
  np.random.seed(11)
  a = keys(load(out))
  np.random.seed(11)
  assert keys(load(out)) == a
  assert keys(load(out, seed=None, shuffle=False)) == keys(load(out, shuffle=False))


def test_unbatched_unshuffled_follows_file_paths(out):
  ds = load(out, batch_size=None, shuffle=False)
  assert len(ds) == N
  pixels = stored(out)
  labels = label_of(out)
  elements = [(image.numpy(), int(label)) for image, label in ds]
  assert len(elements) == len(ds.file_paths) == N
  for path, (image, label) in zip(ds.file_paths, elements):
    assert image.dtype == np.float32 and image.shape == (*SOURCE_SIZE, 3)
    np.testing.assert_array_equal(image, pixels[path][1].astype(np.float32))
    assert label == labels[path]


def test_dtype_uint8_gives_the_stored_pixels(out):
  import tensorflow as tf
  ds = load(out, batch_size=None, shuffle=False, dtype="uint8")
  assert ds.element_spec[0] == tf.TensorSpec((*SOURCE_SIZE, 3), tf.uint8)
  pixels = stored(out)
  for path, (image, _) in zip(ds.file_paths, ds):
    np.testing.assert_array_equal(image.numpy(), pixels[path][1])
  # Resized: rounded half to even and clipped, as exemplar stores pixels.
  resized = load(out, batch_size=None, shuffle=False, image_size=(12, 20),
                 interpolation="bicubic", dtype="uint8")
  floats = load(out, batch_size=None, shuffle=False, image_size=(12, 20),
                interpolation="bicubic")
  for (a, _), (b, _) in zip(resized, floats):
    np.testing.assert_array_equal(
        a.numpy(), np.clip(np.round(b.numpy()), 0, 255).astype(np.uint8))


# --- labels ----------------------------------------------------------------------


@pytest.mark.parametrize("label_mode", ["int", "categorical", "binary", None])
def test_label_modes(out, label_mode):
  import tensorflow as tf
  class_names = ["banana", "apple"] if label_mode == "binary" else None
  ds = load(out, label_mode=label_mode, class_names=class_names, batch_size=8,
            shuffle=False)
  names = class_names or CLASSES
  truth = [names.index(CLASSES[label_of(out)[p]]) for p in ds.file_paths]
  assert len(ds) == -(-len(truth) // 8)
  if label_mode is None:
    assert ds.element_spec == tf.TensorSpec((None, *SOURCE_SIZE, 3), tf.float32)
    assert ds.class_names is None
    assert sum(int(images.shape[0]) for images in ds) == N
    return
  labels = np.concatenate([labels.numpy() for _, labels in ds])
  spec = ds.element_spec[1]
  if label_mode == "int":
    assert spec == tf.TensorSpec((None,), tf.int32)
    assert labels.tolist() == truth
  elif label_mode == "categorical":
    assert spec == tf.TensorSpec((None, 3), tf.float32)
    np.testing.assert_array_equal(labels, np.eye(3, dtype=np.float32)[truth])
  else:
    assert spec == tf.TensorSpec((None, 1), tf.float32)
    np.testing.assert_array_equal(labels, np.array(truth, np.float32)[:, None])
  assert ds.class_names == names


def test_labels_none_gives_images_only(out, capsys):
  import tensorflow as tf
  ds = load(out, labels=None, verbose=True)
  assert capsys.readouterr().out == f"Found {N} files.\n"
  assert ds.element_spec == tf.TensorSpec((None, *SOURCE_SIZE, 3), tf.float32)
  assert ds.class_names is None and len(ds.file_paths) == N


def test_class_names_reorder_remaps_labels_and_a_subset_selects(out):
  order = ["cherry", "apple", "banana"]
  ds = load(out, class_names=order, batch_size=None, shuffle=False)
  assert ds.class_names == order
  stored_labels = label_of(out)
  pairs = [(path, int(label)) for path, (_, label) in zip(ds.file_paths, ds)]
  assert len(pairs) == N
  assert all(label == order.index(CLASSES[stored_labels[path]]) for path, label in pairs)
  # A subset, as Keras 3 allows: only those classes, labelled in that order.
  subset = load(out, class_names=["cherry", "apple"], batch_size=None, shuffle=False)
  assert len(subset) == 2 * K and len(subset.file_paths) == 2 * K
  assert {CLASSES[stored_labels[p]] for p in subset.file_paths} == {"cherry", "apple"}
  assert [int(label) for _, label in subset] == [
      ["cherry", "apple"].index(CLASSES[stored_labels[p]]) for p in subset.file_paths]
  with pytest.raises(ValueError, match=r"not classes of this dataset: \['kiwi', 'fig'\]"):
    load(out, class_names=["apple", "kiwi", "fig"])


# --- conversions -----------------------------------------------------------------


@pytest.mark.parametrize("color_mode,channels", [("grayscale", 1), ("rgb", 3), ("rgba", 4)])
def test_image_size_and_color_mode_convert_at_read_time(out, color_mode, channels):
  import tensorflow as tf
  ds = load(out, batch_size=None, shuffle=False, image_size=(10, 14), color_mode=color_mode)
  assert ds.element_spec[0] == tf.TensorSpec((10, 14, channels), tf.float32)
  encoded = stored(out)
  for path, (image, _) in zip(ds.file_paths, ds):
    decoded = tf.io.decode_image(encoded[path][0], channels=channels, expand_animations=False)
    np.testing.assert_array_equal(image.numpy(), tf.image.resize(decoded, (10, 14)).numpy())
    if color_mode == "rgba":
      assert (image.numpy()[..., 3] == 255).all()
  # channels_first, and an int image_size, as Keras takes them.
  first = load(out, batch_size=4, image_size=9, color_mode=color_mode,
               data_format="channels_first")
  assert first.element_spec[0] == tf.TensorSpec((None, channels, 9, 9), tf.float32)
  assert next(iter(first))[0].shape == (4, channels, 9, 9)


# --- parity with Keras -----------------------------------------------------------


def keras_tree(output_dir: str, root: str, png_only: bool = False) -> Dict[str, str]:
  """The picked files copied into a fresh <class>/<file> tree; {copy: source}."""
  copies = {}
  for row in manifest(output_dir):
    if png_only and not row["source_path"].endswith(".png"):
      continue
    copy = os.path.join(root, row["class_name"], os.path.basename(row["source_path"]))
    os.makedirs(os.path.dirname(copy), exist_ok=True)
    shutil.copyfile(row["source_path"], copy)
    copies[copy] = row["source_path"]
  return copies


PARITY = [  # image_size, interpolation, crop, pad, color_mode
    (SOURCE_SIZE, "bilinear", False, False, "rgb"),
    ((12, 20), "bilinear", False, False, "rgb"),
    ((12, 20), "nearest", False, False, "rgb"),    # Keras gives uint8 here
    ((16, 16), "area", True, False, "rgb"),        # smart_resize
    ((16, 16), "bicubic", False, True, "rgb"),     # resize_with_pad
    ((20, 12), "lanczos3", True, False, "rgb"),
    ((12, 20), "bilinear", False, False, "grayscale"),
    ((12, 20), "bilinear", False, False, "rgba"),
]


@pytest.mark.parametrize("image_size,interpolation,crop,pad,color_mode", PARITY)
def test_pixels_equal_keras_on_the_picked_files(out, tmp_path, image_size, interpolation,
                                                crop, pad, color_mode):
  """Equal pixels and dtypes, no tolerance (see the module docstring).

  grayscale and rgba compare the PNG sources: Keras decodes a JPEG source
  with libjpeg's own grey conversion (and fails on a JPEG in rgba: "JPEG does
  not support 4 channels"), while a stored image is a PNG, which libpng
  converts."""
  import keras
  copies = keras_tree(out, str(tmp_path / "keras"), png_only=color_mode != "rgb")
  args = dict(image_size=image_size, interpolation=interpolation, crop_to_aspect_ratio=crop,
              pad_to_aspect_ratio=pad, color_mode=color_mode, shuffle=False, batch_size=None)
  theirs = keras.utils.image_dataset_from_directory(str(tmp_path / "keras"), verbose=False,
                                                    **args)
  ours = load(out, **args)
  assert ours.class_names == theirs.class_names == CLASSES
  assert ours.element_spec == theirs.element_spec
  expected = {copies[p]: (image.numpy(), int(label))
              for p, (image, label) in zip(theirs.file_paths, theirs)}
  got = {p: (image.numpy(), int(label)) for p, (image, label) in zip(ours.file_paths, ours)}
  assert len(got) == N and set(expected) == (
      set(got) if color_mode == "rgb" else {p for p in got if p.endswith(".png")})
  assert len(expected) >= N // 3
  for path, (image, label) in expected.items():
    assert got[path][1] == label
    assert got[path][0].dtype == image.dtype
    np.testing.assert_array_equal(got[path][0], image, err_msg=path)


def test_messages_match_keras(out, tmp_path, capsys):
  import keras
  keras_tree(out, str(tmp_path / "keras"))
  keras.utils.image_dataset_from_directory(str(tmp_path / "keras"), image_size=SOURCE_SIZE,
                                           validation_split=0.25, subset="both", seed=1)
  theirs = capsys.readouterr().out
  load(out, validation_split=0.25, subset="both", seed=1, verbose=True)
  assert capsys.readouterr().out == theirs == (
      f"Found {N} files belonging to 3 classes.\n"
      "Using 27 files for training.\nUsing 9 files for validation.\n")


# --- validation split ------------------------------------------------------------


def test_validation_split_is_stratified_disjoint_and_stable(out):
  labels = label_of(out)
  train = load(out, validation_split=0.3, subset="training", seed=1)
  val = load(out, validation_split=0.3, subset="validation", seed=1)
  # Keras's total, int(0.3 * 36) = 10, shared out per class (3.6 each:
  # 3 + 3 + 3, and the largest remainder, ties to the lower label, gets 1).
  assert len(val.file_paths) == 10 and len(train.file_paths) == N - 10
  assert not set(train.file_paths) & set(val.file_paths)
  assert set(train.file_paths) | set(val.file_paths) == set(labels)
  per_class = [sum(labels[p] == c for p in val.file_paths) for c in range(3)]
  assert per_class == [4, 3, 3]
  assert len(train) == 1 and len(val) == 1  # batches of 32, cardinality known
  assert sum(int(images.shape[0]) for images, _ in val) == 10
  assert sorted(keys(val)) == sorted(
      stored_pixels.astype(np.float32).tobytes()
      for path, (_, stored_pixels) in stored(out).items() if path in set(val.file_paths))
  # Stable for a seed, whatever else is asked; another seed holds out others.
  again = load(out, validation_split=0.3, subset="validation", seed=1, shuffle=False,
               batch_size=None, label_mode="categorical",
               class_names=["cherry", "banana", "apple"])
  assert set(again.file_paths) == set(val.file_paths)
  other = load(out, validation_split=0.3, subset="validation", seed=2)
  assert set(other.file_paths) != set(val.file_paths)
  # No seed (only without shuffle, as Keras): the last picks of each class.
  ranks = {row["source_path"]: int(row["rank"]) for row in manifest(out)}
  tail = load(out, validation_split=0.3, subset="validation", shuffle=False)
  assert sorted(ranks[p] for p in tail.file_paths) == [8, 9, 9, 9, 10, 10, 10, 11, 11, 11]


def test_subset_both_is_a_tuple_with_an_unshuffled_validation_half(out):
  both = load(out, validation_split=0.5, subset="both", seed=7)
  assert isinstance(both, tuple) and len(both) == 2
  train, val = both
  assert set(train.file_paths) == set(
      load(out, validation_split=0.5, subset="training", seed=7).file_paths)
  assert set(val.file_paths) == set(
      load(out, validation_split=0.5, subset="validation", seed=7).file_paths)
  assert keys(val) == keys(val) == keys(  # Keras does not shuffle it
      load(out, validation_split=0.5, subset="validation", seed=7, shuffle=False))
  assert train.class_names == val.class_names == CLASSES


def stored_validation_copy(out: str, target: str) -> Dict[str, List[str]]:
  """What a writer with stored splits would leave: shard 1 of 2 becomes the
  one shard of a 'validation' split (listed with a "split" key)."""
  shutil.copytree(out, target)
  summary = json.load(open(os.path.join(target, "summary.json")))
  old = summary["shards"][1]["file"]
  new = "exemplar-validation.tfrecord-00000-of-00001"
  os.rename(os.path.join(target, old), os.path.join(target, new))
  summary["shards"][1].update(file=new, split="validation")
  json.dump(summary, open(os.path.join(target, "summary.json"), "w"))
  rows = manifest(target)
  for row in rows:
    row["shard"] = new if row["shard"] == old else row["shard"]
  with open(os.path.join(target, "manifest.csv"), "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  by_split: Dict[str, List[str]] = {"train": [], "validation": []}
  for row in rows:
    by_split["validation" if row["shard"] == new else "train"].append(row["source_path"])
  return by_split


def test_a_stored_validation_split_is_used_when_there_is_one(out, tmp_path, capsys):
  # The glob characters in the folder's name are literal, as everywhere.
  target = str(tmp_path / "split[1]?")
  by_split = stored_validation_copy(out, target)
  assert len(by_split["validation"]) == N // 2
  val = load(target, subset="validation", verbose=True)  # no validation_split needed
  assert capsys.readouterr().out == (f"Found {N} files belonging to 3 classes.\n"
                                     f"Using {N // 2} files for validation.\n")
  assert sorted(val.file_paths) == sorted(by_split["validation"])
  assert sum(int(images.shape[0]) for images, _ in val) == N // 2
  train, val2 = load(target, subset="both", seed=1, validation_split=0.2)  # not used
  assert sorted(train.file_paths) == sorted(by_split["train"])
  assert sorted(val2.file_paths) == sorted(by_split["validation"])
  assert sorted(load(target).file_paths) == sorted(by_split["train"])
  named = load(target, split="validation", batch_size=None, shuffle=False)
  assert named.file_paths == val.file_paths and len(named) == N // 2
  # A named split is split by validation_split, as a single-split dataset is.
  inner = load(target, split="train", subset="validation", validation_split=0.5, seed=1)
  assert set(inner.file_paths) < set(by_split["train"]) and len(inner.file_paths) == N // 4
  with pytest.raises(ValueError, match=r"no stored split 'test'; it has: \['train', 'validation'\]"):
    load(target, split="test")
  # Without a stored validation split, subset needs validation_split (as Keras).
  with pytest.raises(ValueError, match="has no stored 'validation' split"):
    load(out, subset="validation")


def test_a_gs_dataset_is_read_through_filesystems(out, tmp_path, capsys):
  """Metadata through Beam's FileSystems against the GCS emulator of
  tests/test_gcs.py; the records would be read by tf.data's own GCS client,
  which cannot be pointed at the emulator, so the dataset is built, not
  iterated."""
  from tests.test_gcs import GcsEmulator, upload_tree
  emulator = GcsEmulator(str(tmp_path))
  try:
    emulator.start()
    client = emulator.client()
    client.create_bucket("exemplar-reader")
    upload_tree(client, out, "exemplar-reader", "runs[1]/out/")
    remote = "gs://exemplar-reader/runs[1]/out"
    train, val = load(remote, validation_split=0.25, subset="both", seed=1, verbose=True)
    assert capsys.readouterr().out == (f"Found {N} files belonging to 3 classes.\n"
                                       "Using 27 files for training.\n"
                                       "Using 9 files for validation.\n")
    local_train, local_val = load(out, validation_split=0.25, subset="both", seed=1)
    assert train.file_paths == local_train.file_paths and len(train) == 1
    assert val.file_paths == local_val.file_paths and len(val) == 1
    assert train.class_names == CLASSES
    with pytest.raises(FileNotFoundError, match="no finished exemplar dataset"):
      load("gs://exemplar-reader/runs[1]")
  finally:
    emulator.stop()


# --- errors ----------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,message", [
    (dict(labels=[0, 1]), "per-file labels is not supported"),
    (dict(labels="folders"), "must be 'inferred'"),
    (dict(label_mode="sparse"), "`label_mode` argument must be one of"),
    (dict(label_mode="binary"), "there must be exactly 2 class_names"),
    (dict(labels=None, class_names=["apple"]), "`class_names` cannot be specified"),
    (dict(label_mode=None, class_names=["apple"]), "`class_names` cannot be specified"),
    (dict(class_names=["apple", "apple"]), r"more than once: \['apple'\]"),
    (dict(class_names="apple"), "must be a list of class names"),
    (dict(color_mode="hsv"), "`color_mode` must be one of"),
    (dict(image_size=(1, 2, 3)), "Invalid `image_size`"),
    (dict(image_size=(0, 4)), "Invalid `image_size`"),
    (dict(interpolation="cubic"), "`interpolation` should be one of"),
    (dict(crop_to_aspect_ratio=True, pad_to_aspect_ratio=True), "Only one of"),
    (dict(data_format="NHWC"), "`data_format` argument must be one of"),
    (dict(dtype="string"), "float or integer dtype"),
    (dict(dtype="pixels"), "numeric dtype"),
    (dict(batch_size=0), "`batch_size` must be a positive integer"),
    (dict(seed=-1), r"`seed` must be an integer in \[0, 2\*\*32\)"),
    (dict(validation_split=1.5, subset="training", seed=1), "between 0 and 1"),
    (dict(validation_split=0.2), "If `subset` is set, `validation_split` must be set"),
    (dict(subset="test"), '`subset` must be either "training"'),
    (dict(validation_split=0.2, subset="training"), "you must provide a `seed`"),
    (dict(split="test"), "no stored split 'test'"),
    (dict(split=3), "`split` must be the name of a stored split"),
])
def test_bad_arguments_are_value_errors(out, kwargs, message):
  with pytest.raises(ValueError, match=message):
    load(out, **kwargs)


def test_a_folder_without_a_finished_dataset_is_file_not_found(tmp_path):
  with pytest.raises(FileNotFoundError, match="no finished exemplar dataset"):
    load(str(tmp_path))


def test_a_manifest_that_disagrees_with_the_records_is_refused(out, tmp_path):
  import tensorflow as tf
  from exemplar.dataset_files import DatasetError
  target = str(tmp_path / "copy")
  shutil.copytree(out, target)
  rows = manifest(target)

  def write(rows):
    with open(os.path.join(target, "manifest.csv"), "w", newline="", encoding="utf-8") as f:
      writer = csv.DictWriter(f, fieldnames=list(rows[0]))
      writer.writeheader()
      writer.writerows(rows)

  write(rows[1:])
  with pytest.raises(DatasetError, match="holds 18 examples, manifest.csv lists 17"):
    load(target)
  # Same counts, two files swapped: file_paths would name the wrong files.
  swapped = [dict(r) for r in rows]
  first = next(i for i, r in enumerate(swapped) if r["label"] == "0")
  other = next(i for i, r in enumerate(swapped)
               if r["label"] == "1" and r["shard"] == swapped[first]["shard"])
  swapped[first]["label"], swapped[other]["label"] = "1", "0"
  write(swapped)
  with pytest.raises(tf.errors.InvalidArgumentError, match="does not list the records"):
    list(load(target, shuffle=False))
  write(rows)
  assert len(list(load(target, batch_size=None))) == N


# --- a Keras tutorial ------------------------------------------------------------


def test_keras_tutorial_model_fits_with_validation_data(out, capsys):
  """As the Keras image classification tutorial writes it, on Keras 3."""
  import keras
  from exemplar import load_dataset
  train_ds = load_dataset(out)
  val_ds = load_dataset(out, subset="validation", validation_split=0.5, seed=1)
  num_classes = len(train_ds.class_names)
  img_height, img_width = SOURCE_SIZE
  model = keras.Sequential([
      keras.Input(shape=(img_height, img_width, 3)),
      keras.layers.Rescaling(1. / 255),
      keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
      keras.layers.MaxPooling2D(),
      keras.layers.Flatten(),
      keras.layers.Dense(16, activation="relu"),
      keras.layers.Dense(num_classes),
  ])
  model.compile(optimizer="adam",
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    history = model.fit(train_ds, validation_data=val_ds, epochs=1, verbose=2)
  printed = capsys.readouterr()
  assert not [w for w in caught if "ran out of data" in str(w.message)]
  assert "ran out of data" not in printed.out + printed.err
  assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
  assert np.isfinite(history.history["val_loss"][0])
  assert model.predict(val_ds, verbose=0).shape == (N // 2, num_classes)


def test_reading_never_imports_tft_which_would_switch_tf_keras_to_keras_2(out):
  import subprocess
  import sys
  code = ("import sys, exemplar\n"
          f"ds = exemplar.load_dataset({out!r}, verbose=False)\n"
          "next(iter(ds))\n"
          "assert 'tensorflow_transform' not in sys.modules\n"
          "import tensorflow as tf\n"
          "assert tf.keras.__name__.startswith('keras'), tf.keras.__name__\n")
  # A test before this one may have imported TFT here, which set the variable.
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=300, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
