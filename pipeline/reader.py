"""Read an exemplar output folder back as a `tf.data.Dataset`, as Keras reads
a folder of images.

    from exemplar import load_dataset
    train_ds = load_dataset("exemplar_output")            # Keras's defaults
    train_ds, val_ds = load_dataset("exemplar_output", validation_split=0.2,
                                    subset="both", seed=1)

`load_dataset` takes the arguments of Keras 3's
`keras.utils.image_dataset_from_directory` (keras/src/utils/image_dataset_utils.py)
with their meaning and defaults, and gives what it gives: float32 images (uint8
with `interpolation="nearest"`, as `tf.image.resize` keeps the dtype then),
int32 / one-hot float32 / float32 [1] labels, batches of 32, shuffled, the
`class_names` and `file_paths` attributes, a known cardinality. The images are
the stored ones (already decoded and resized by exemplar); `image_size`,
`color_mode`, `crop_to_aspect_ratio` and `pad_to_aspect_ratio` convert them at
read time with Keras's own ops. Where a stored dataset differs from a folder
(which files, their order, the validation split, stored splits) the docstring
of `load_dataset` and README's "Reading the output" say how.

Metadata is read through Beam's FileSystems (so gs:// works with Beam's
credentials); the shards through tf.data, by the exact names summary.json
lists (never a glob: the folder's name may hold '[' or '?').
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from typing import Dict, List, Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems

from exemplar.dataset_files import DatasetError
from exemplar.transforms import names
from exemplar.transforms.decoding import COLOR_MODES, INTERPOLATIONS

# Keras's values (image_dataset_utils.py, dataset_utils.py).
LABEL_MODES = ("int", "categorical", "binary", None)
SUBSETS = ("training", "validation", "both")
DATA_FORMATS = ("channels_last", "channels_first")
# The stored split a subset names, when the dataset has it (TFDS's names).
STORED_SPLIT_OF_SUBSET = {"training": names.SPLIT, "validation": "validation"}
# Shuffling: Keras's buffer is batch_size * 8 (1024 unbatched) over a file list
# it has already shuffled globally. Records are stored grouped by class, so a
# buffer that small would give batches of a few neighbouring classes: the
# buffer holds the whole split when its encoded records fit in this many bytes
# (any sample of ordinary size), else as many records as fit, never fewer than
# Keras's.
SHUFFLE_BUFFER_BYTES = 256 * 1024 * 1024
MAX_PARALLEL_SHARD_READS = 16


def _read_text(path: str) -> str:
  with FileSystems.open(path) as f:
    return f.read().decode("utf-8")


def shard_split(shard: Dict) -> str:
  """The stored split a summary.json shard entry belongs to (entries written
  before stored splits have no "split" key: they are all 'train')."""
  return shard.get("split", names.SPLIT)


def shard_paths(output_dir: str, summary: Dict, split: Optional[str] = None) -> List[str]:
  """The dataset's shard files (of one stored split, or all), in shard order,
  by the exact names its summary lists (never a glob: the folder's name may
  hold '[' or '?')."""
  return [FileSystems.join(output_dir, shard["file"]) for shard in summary["shards"]
          if split is None or shard_split(shard) == split]


@dataclasses.dataclass(frozen=True)
class _Record:
  """One stored record, from manifest.csv."""
  position: int     # index in its split's record order (shards in order, then
                    # as the shard holds them: by label, then rank)
  label: int        # stored label
  rank: int         # rank in its class's seeded sample
  source_path: str


@dataclasses.dataclass
class _Split:
  """One stored split: its shards and records, in record order."""
  name: str
  paths: List[str]
  starts: List[int]  # position of each shard's first record
  num_bytes: int
  records: List[_Record]


@dataclasses.dataclass
class _Stored:
  """What a finished output folder says about itself."""
  output_dir: str
  class_names: List[str]
  height: int
  width: int
  color_mode: str
  splits: Dict[str, _Split]  # in the order summary.json lists them


def _open(output_dir: str) -> _Stored:
  if not FileSystems.exists(FileSystems.join(output_dir, names.SUCCESS_MARKER)):
    raise FileNotFoundError(
        f"{output_dir} holds no finished exemplar dataset (no {names.SUCCESS_MARKER})")
  class_names = _read_text(FileSystems.join(output_dir, names.CLASS_NAMES_FILE)).splitlines()
  summary = json.loads(_read_text(FileSystems.join(output_dir, names.SUMMARY_JSON)))
  height, width = summary["config"]["image_size"]
  rows = list(csv.DictReader(io.StringIO(
      _read_text(FileSystems.join(output_dir, names.MANIFEST_FILE)))))
  rows_of_shard: Dict[str, List[Dict[str, str]]] = {}
  for row in rows:
    rows_of_shard.setdefault(row["shard"], []).append(row)
  splits: Dict[str, _Split] = {}
  for shard, path in zip(summary["shards"], shard_paths(output_dir, summary)):
    split = splits.setdefault(shard_split(shard), _Split(shard_split(shard), [], [], 0, []))
    # The manifest lists a shard's rows in record order (every version has).
    shard_rows = rows_of_shard.get(shard["file"], [])
    if len(shard_rows) != int(shard["examples"]):
      raise DatasetError(
          f"{output_dir}: {names.SUMMARY_JSON} says {shard['file']} holds "
          f"{shard['examples']} examples, {names.MANIFEST_FILE} lists {len(shard_rows)}")
    start = len(split.records)
    split.paths.append(path)
    split.starts.append(start)
    split.num_bytes += int(shard.get("bytes", 0))
    split.records.extend(
        _Record(start + i, int(r["label"]), int(r["rank"]), r["source_path"])
        for i, r in enumerate(shard_rows))
  return _Stored(output_dir, class_names, int(height), int(width),
                 summary["config"]["color_mode"], splits)


@dataclasses.dataclass
class _Part:
  """One dataset to build: which records of which stored split."""
  subset: Optional[str]      # "training", "validation" or None
  split: _Split
  records: List[_Record]     # the kept ones, in record order


def load_dataset(output_dir: str, *, split: Optional[str] = None,
                 labels="inferred", label_mode: Optional[str] = "int",
                 class_names: Optional[Sequence[str]] = None,
                 color_mode: Optional[str] = None, batch_size: Optional[int] = 32,
                 image_size=None, shuffle: bool = True, seed: Optional[int] = None,
                 validation_split: Optional[float] = None, subset: Optional[str] = None,
                 interpolation: str = "bilinear", crop_to_aspect_ratio: bool = False,
                 pad_to_aspect_ratio: bool = False, data_format: Optional[str] = None,
                 verbose: bool = True, dtype=None):
  """A finished exemplar dataset as Keras's `image_dataset_from_directory`
  gives a folder of images (Keras 3's arguments, meaning and defaults).

  Args (as Keras's unless said):
    output_dir: the output folder (local or any Beam file system, gs://).
    split: the stored split to read; None: 'train', and with `subset` the
      stored 'validation' split when the dataset has one (see below).
    labels: "inferred" (the stored class labels) or None (images only).
      Explicit per-file label lists are not supported (ValueError): the
      labels are the classes the dataset was written with.
    label_mode: "int" (int32), "categorical" (one-hot float32), "binary"
      (float32 [1], exactly 2 classes) or None (images only).
    class_names: the stored classes to read (all, or a subset as Keras 3
      allows), in the order that sets the labels; the stored labels are
      remapped. Unknown names: ValueError naming them.
    color_mode: None: as stored; "grayscale", "rgb", "rgba": the stored
      image decoded at those channels, as Keras decodes a file.
    batch_size: 32; None yields single elements.
    image_size: None: the stored size, not resampled; (height, width) or an
      int: resized with Keras's ops (`tf.image.resize` with `interpolation`,
      `smart_resize` with `crop_to_aspect_ratio`, `tf.image.resize_with_pad`
      with `pad_to_aspect_ratio`).
    shuffle: shuffles the records with a seeded buffer (the whole split when
      its records fit in 256 MB, never fewer than Keras's batch_size * 8)
      and, with several shards, reads them in a seeded order, interleaved.
      False: record order, as `file_paths` lists it.
    seed: for the shuffle and the validation split; None with shuffle draws
      one, as Keras does.
    validation_split, subset: a fraction to hold out, and "training",
      "validation" or "both" (a tuple of two datasets). Split per class
      (stratified), unlike Keras, which splits its shuffled file list as a
      whole: Keras's total count, int(validation_split * N), shared out
      between classes by largest remainder; in each class, the last of its
      records in a seeded order (rank order without a seed) are held out.
      The split depends on the seed only, not on `shuffle`. On a dataset with
      a stored 'validation' split and `split=None`, `subset` picks the stored
      splits and `validation_split` is not needed (nor used).
    interpolation, crop_to_aspect_ratio, pad_to_aspect_ratio: as Keras's,
      applied when `image_size` is given.
    data_format: None: `keras.config.image_data_format()`; "channels_last"
      or "channels_first".
    verbose: prints "Found N files belonging to C classes." (and "Using M
      files for training." with a subset), as Keras does.
    dtype: not Keras's. None: Keras's dtype (float32; uint8 when resized
      with "nearest", as tf.image.resize keeps it). A float dtype casts; an
      integer dtype rounds half to even and clips to [0, 255] first, so
      `dtype="uint8"` without `image_size` gives the stored pixels exactly.

  Returns a tf.data.Dataset (a tuple of two with subset="both") with known
  cardinality (`len(ds)` works), `class_names` (None without labels) and
  `file_paths` (source paths in record order: the order shuffle=False
  yields; Keras's list is likewise the order before its buffer shuffle).

  Raises FileNotFoundError for a folder that holds no finished dataset,
  ValueError for bad arguments (as Keras does) and for a subset with no
  records, exemplar.dataset_files.DatasetError when summary.json and
  manifest.csv disagree.

  Example:
    # /tmp/flowers_pick: a dataset exemplar finished (exemplar.SampleImageFolder's
    # example writes it: 2 images of each of daisy, roses, tulips, 128 x 128).
    import exemplar

    ds = exemplar.load_dataset("/tmp/flowers_pick", batch_size=4, seed=1)
    # Found 6 files belonging to 3 classes.
    print(ds.class_names)  # ['daisy', 'roses', 'tulips']
    for images, labels in ds.take(1):
      print(images.shape, images.dtype, labels.numpy())
      # (4, 128, 128, 3) <dtype: 'float32'> [1 2 1 2]
  """
  import tensorflow as tf

  # Arguments first, as Keras checks them before it lists the folder.
  labels, label_mode = _check_labels(labels, label_mode, class_names)
  if color_mode is not None and color_mode not in COLOR_MODES:
    raise ValueError('`color_mode` must be one of {"rgb", "rgba", "grayscale"} or None '
                     f"(as stored). Received: color_mode={color_mode}")
  image_size = _check_image_size(image_size)
  if not isinstance(interpolation, str) or interpolation.lower() not in INTERPOLATIONS:
    raise ValueError(f"Argument `interpolation` should be one of {INTERPOLATIONS}. "
                     f"Received: interpolation={interpolation}")
  interpolation = interpolation.lower()
  if crop_to_aspect_ratio and pad_to_aspect_ratio:
    raise ValueError("Only one of `pad_to_aspect_ratio`, `crop_to_aspect_ratio` "
                     "can be set to `True`.")
  data_format = _check_data_format(data_format)
  out_dtype = _check_dtype(dtype)
  if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                 or batch_size < 1):
    raise ValueError(f"`batch_size` must be a positive integer or None. "
                     f"Received: batch_size={batch_size}")
  if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                           or not 0 <= seed < 2**32):
    raise ValueError(f"`seed` must be an integer in [0, 2**32) or None. Received: seed={seed}")
  if split is not None and not isinstance(split, str):
    raise ValueError(f"`split` must be the name of a stored split or None. Received: split={split}")
  if validation_split and not (
      isinstance(validation_split, (int, float)) and 0 < validation_split < 1):
    raise ValueError(f"`validation_split` must be between 0 and 1, received: {validation_split}")
  if subset not in SUBSETS + (None,):
    raise ValueError(f'`subset` must be either "training", "validation" or "both", '
                     f"received: {subset}")
  if validation_split and not subset:
    raise ValueError("If `subset` is set, `validation_split` must be set, and inversely.")
  if validation_split and shuffle and seed is None:
    raise ValueError(
        "If using `validation_split` and shuffling the data, you must provide a `seed` "
        "argument, to make sure that there is no overlap between the training and "
        "validation subset.")

  stored = _open(output_dir)
  selected = _select_classes(stored.class_names, class_names)
  if label_mode == "binary" and len(selected) != 2:
    raise ValueError('When passing `label_mode="binary"`, there must be exactly 2 '
                     f"class_names. Received: class_names={selected}")
  parts, found = _parts(stored, split, subset, validation_split, seed, selected)
  if shuffle and seed is None:
    import numpy as np
    seed = int(np.random.randint(1e6))  # as Keras draws it

  if verbose:
    print(f"Found {found} files." if labels is None else
          f"Found {found} files belonging to {len(selected)} classes.", flush=True)
    for part in parts:
      if part.subset is not None:
        print(f"Using {len(part.records)} files for {part.subset}.", flush=True)

  datasets = []
  for part in parts:
    if not part.records:
      where = (f"stored split '{part.split.name}'" if part.subset is None else
               f"the {part.subset} subset of stored split '{part.split.name}'")
      raise ValueError(f"No images in {where} of {output_dir} for class_names={selected}")
    dataset = _build(
        tf, stored, part, selected, label_mode=label_mode, color_mode=color_mode,
        batch_size=batch_size, image_size=image_size,
        # Keras never shuffles the validation half of subset="both".
        shuffle=shuffle and not (subset == "both" and part.subset == "validation"),
        seed=seed, interpolation=interpolation, crop_to_aspect_ratio=crop_to_aspect_ratio,
        pad_to_aspect_ratio=pad_to_aspect_ratio, data_format=data_format, dtype=out_dtype)
    dataset.class_names = None if labels is None else list(selected)
    dataset.file_paths = [r.source_path for r in part.records]
    datasets.append(dataset)
  return tuple(datasets) if subset == "both" else datasets[0]


def _check_labels(labels, label_mode, class_names):
  if isinstance(labels, (list, tuple)):
    raise ValueError(
        "`labels` as a list of per-file labels is not supported by load_dataset: the "
        "labels are the classes the dataset was written with. Pass labels='inferred' "
        "(the default) for them, or labels=None for images only. "
        f"Received: labels of length {len(labels)}")
  if not (labels is None or (isinstance(labels, str) and labels == "inferred")):
    raise ValueError("`labels` must be 'inferred' (the stored class labels) or None "
                     f"(images only). Received: labels={labels}")
  if not (label_mode is None or (isinstance(label_mode, str) and label_mode in LABEL_MODES)):
    raise ValueError('`label_mode` argument must be one of "int", "categorical", "binary", '
                     f"or None. Received: label_mode={label_mode}")
  if labels is None or label_mode is None:
    if class_names is not None:
      raise ValueError("When `labels=None` or `label_mode=None` (no labels), argument "
                       "`class_names` cannot be specified.")
    return None, None
  return labels, label_mode


def _check_image_size(image_size) -> Optional[Tuple[int, int]]:
  if image_size is None:
    return None
  if isinstance(image_size, int) and not isinstance(image_size, bool):
    image_size = (image_size, image_size)
  if (not isinstance(image_size, (list, tuple)) or len(image_size) != 2
      or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                 for v in image_size)):
    raise ValueError("Invalid `image_size` value. Expected a tuple of 2 positive integers "
                     f"or None (the stored size). Received: image_size={image_size}")
  return tuple(image_size)


def _check_data_format(data_format) -> str:
  if data_format is None:
    import keras  # Keras 3 (never tf.keras, which is tf_keras once TFT is imported)
    return keras.config.image_data_format()
  value = str(data_format).lower()
  if value not in DATA_FORMATS:
    raise ValueError("The `data_format` argument must be one of {'channels_first', "
                     f"'channels_last'}}. Received: data_format={data_format}")
  return value


def _check_dtype(dtype):
  if dtype is None:
    return None
  import tensorflow as tf
  try:
    value = tf.as_dtype(dtype)
  except TypeError as e:
    raise ValueError(f"`dtype` must be a numeric dtype such as 'float32' or 'uint8'. "
                     f"Received: dtype={dtype}") from e
  if not (value.is_floating or value.is_integer):
    raise ValueError(f"`dtype` must be a float or integer dtype. Received: dtype={dtype}")
  return value


def _select_classes(stored: List[str], requested) -> List[str]:
  """The classes to read, in label order."""
  if requested is None:
    return list(stored)
  if isinstance(requested, str) or not all(isinstance(n, str) for n in requested):
    raise ValueError("`class_names` must be a list of class names. "
                     f"Received: class_names={requested!r}")
  requested = list(requested)
  unknown = [n for n in requested if n not in stored]
  if unknown:
    raise ValueError(f"`class_names` holds names that are not classes of this dataset: "
                     f"{unknown}. Expected: {stored} (or a subset of it, in any order)")
  duplicates = sorted({n for n in requested if requested.count(n) > 1})
  if duplicates:
    raise ValueError(f"`class_names` names a class more than once: {duplicates}")
  return requested


def _parts(stored: _Stored, split, subset, validation_split, seed,
           selected: List[str]) -> Tuple[List[_Part], int]:
  """Which records each returned dataset reads, and how many files were
  "found" (as Keras counts them before it splits)."""
  available = list(stored.splits)
  stored_labels = {stored.class_names.index(n) for n in selected}

  def records_of(name: str) -> _Split:
    if name not in stored.splits:
      raise ValueError(f"{stored.output_dir} has no stored split '{name}'; "
                       f"it has: {available}")
    return stored.splits[name]

  def kept(s: _Split) -> List[_Record]:
    return [r for r in s.records if r.label in stored_labels]

  wanted = ["training", "validation"] if subset == "both" else [subset]
  if (subset is not None and split is None
      and STORED_SPLIT_OF_SUBSET["validation"] in stored.splits):
    found = sum(len(kept(records_of(STORED_SPLIT_OF_SUBSET[s]))) for s in SUBSETS[:2])
    return [_Part(s, records_of(STORED_SPLIT_OF_SUBSET[s]),
                  kept(records_of(STORED_SPLIT_OF_SUBSET[s]))) for s in wanted], found
  base = records_of(names.SPLIT if split is None else split)
  if subset is None:
    return [_Part(None, base, kept(base))], len(kept(base))
  if not validation_split:
    raise ValueError(
        "If `subset` is set, `validation_split` must be set, and inversely "
        f"(stored split '{base.name}' is split by it; {stored.output_dir} has no stored "
        f"'validation' split: it has {available}).")
  held_out = _validation_positions(kept(base), validation_split, seed)
  return [_Part(s, base, [r for r in kept(base) if (r.position in held_out)
                          == (s == "validation")]) for s in wanted], len(kept(base))


def _validation_positions(records: List[_Record], fraction: float, seed) -> set:
  """The positions held out: Keras's total count, int(fraction * N), shared
  out between classes by largest remainder (ties: lower label first); in each
  class, the last records of a seeded order of its ranks (rank order, itself
  seeded at sampling, without a seed)."""
  import numpy as np
  by_class: Dict[int, List[_Record]] = {}
  for r in sorted(records, key=lambda r: (r.label, r.rank)):
    by_class.setdefault(r.label, []).append(r)
  total = int(fraction * len(records))
  quota = {c: fraction * len(rs) for c, rs in by_class.items()}
  counts = {c: int(q) for c, q in quota.items()}
  by_remainder = sorted(by_class, key=lambda c: (-(quota[c] - counts[c]), c))
  for c in by_remainder[:max(0, total - sum(counts.values()))]:
    counts[c] += 1
  for c in reversed(by_remainder):  # float rounding can leave one too many
    if sum(counts.values()) > total and counts[c]:
      counts[c] -= 1
  held_out = set()
  for c, rs in by_class.items():
    if seed is not None:
      order = np.random.default_rng([seed, c]).permutation(len(rs))
      rs = [rs[i] for i in order]
    held_out.update(r.position for r in rs[len(rs) - counts[c]:] if counts[c])
  return held_out


def _build(tf, stored: _Stored, part: _Part, selected: List[str], *, label_mode,
           color_mode, batch_size, image_size, shuffle, seed, interpolation,
           crop_to_aspect_ratio, pad_to_aspect_ratio, data_format, dtype):
  """One part's tf.data pipeline: records -> kept -> shuffled -> decoded ->
  converted -> batched."""
  split = part.split
  channels = COLOR_MODES[color_mode or stored.color_mode]
  num_records = len(split.records)
  keep = [False] * num_records
  for r in part.records:
    keep[r.position] = True
  keep = tf.constant(keep, tf.bool)
  # Each position's source path (as a fingerprint) and label in the manifest.
  manifest_paths = _fingerprint(tf, [r.source_path for r in split.records] or [""])
  manifest_labels = tf.constant([r.label for r in split.records] or [0], tf.int64)
  remap = [-1] * len(stored.class_names)
  for new_label, name in enumerate(selected):
    remap[stored.class_names.index(name)] = new_label
  remap = tf.constant(remap, tf.int32)
  spec = {"image": tf.io.FixedLenFeature([], tf.string),
          "label": tf.io.FixedLenFeature([], tf.int64),
          "image/filename": tf.io.FixedLenFeature([], tf.string)}

  def read_shard(path, start):
    return tf.data.TFRecordDataset(path).enumerate(start)

  def is_kept(position, unused_serialized):
    return tf.gather(keep, position)

  def parse(position, serialized):
    features = tf.io.parse_single_example(serialized, spec)
    # The manifest's record order is what file_paths and the split rely on.
    same = tf.logical_and(
        tf.equal(_fingerprint(tf, features["image/filename"]),
                 tf.gather(manifest_paths, position)),
        tf.equal(features["label"], tf.gather(manifest_labels, position)))
    check = tf.debugging.Assert(same, [
        f"{names.MANIFEST_FILE} does not list the records of {stored.output_dir} in "
        "their order; record", position, features["image/filename"]])
    with tf.control_dependencies([check]):
      return tf.identity(features["image"]), tf.gather(remap, features["label"])

  files = tf.data.Dataset.from_tensor_slices(
      (tf.constant(split.paths, tf.string), tf.constant(split.starts, tf.int64)))
  if shuffle and len(split.paths) > 1:
    # Shards in a seeded order, several read at once (deterministic for a seed).
    files = files.shuffle(len(split.paths), seed=seed)
    dataset = files.interleave(
        read_shard, cycle_length=min(len(split.paths), MAX_PARALLEL_SHARD_READS),
        block_length=1, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:  # record order: shard by shard, as file_paths lists them
    dataset = files.flat_map(read_shard)
  if len(part.records) < num_records:
    dataset = dataset.filter(is_kept)
  dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(part.records)))
  if shuffle:
    keras_buffer = batch_size * 8 if batch_size is not None else 1024
    record_bytes = max(1, split.num_bytes // max(1, num_records))
    buffer = max(keras_buffer, min(len(part.records), SHUFFLE_BUFFER_BYTES // record_bytes))
    dataset = dataset.shuffle(buffer, seed=seed)

  def convert(encoded):
    image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
    image.set_shape((stored.height, stored.width, channels))
    image = _keras_resize(tf, image, image_size, interpolation, crop_to_aspect_ratio,
                          pad_to_aspect_ratio, data_format, channels)
    if dtype is not None and dtype != image.dtype:
      if dtype.is_integer and image.dtype.is_floating:
        image = tf.clip_by_value(tf.round(image), 0.0, 255.0)
      image = tf.cast(image, dtype)
    return image

  def to_element(encoded, label):
    image = convert(encoded)
    if label_mode is None:
      return image
    if label_mode == "categorical":
      return image, tf.one_hot(label, len(selected))
    if label_mode == "binary":
      return image, tf.expand_dims(tf.cast(label, tf.float32), -1)
    return image, label

  dataset = dataset.map(to_element, num_parallel_calls=tf.data.AUTOTUNE)
  if batch_size is not None:
    dataset = dataset.batch(batch_size)
  return dataset.prefetch(tf.data.AUTOTUNE)


def _fingerprint(tf, paths):
  return tf.strings.to_hash_bucket_fast(paths, 2**62)


def _keras_resize(tf, image, image_size, interpolation, crop_to_aspect_ratio,
                  pad_to_aspect_ratio, data_format, channels):
  """uint8 [H, W, C] -> Keras's `_load_image_tf` after its decode (the same
  ops, in the same order); without `image_size` the stored pixels as float32,
  transposed for channels_first."""
  if image_size is None:
    image = tf.cast(image, tf.float32)
    return tf.transpose(image, (2, 0, 1)) if data_format == "channels_first" else image
  if crop_to_aspect_ratio:
    import keras
    from keras.src.backend import tensorflow as tf_backend  # what Keras passes
    if data_format == "channels_first":
      image = tf.transpose(image, (2, 0, 1))
    image = keras.preprocessing.image.smart_resize(
        image, image_size, interpolation=interpolation, data_format=data_format,
        backend_module=tf_backend)
  elif pad_to_aspect_ratio:
    image = tf.image.resize_with_pad(image, image_size[0], image_size[1],
                                     method=interpolation)
    if data_format == "channels_first":
      image = tf.transpose(image, (2, 0, 1))
  else:
    image = tf.image.resize(image, image_size, method=interpolation)
    if data_format == "channels_first":
      image = tf.transpose(image, (2, 0, 1))
  if data_format == "channels_last":
    image.set_shape((image_size[0], image_size[1], channels))
  else:
    image.set_shape((channels, image_size[0], image_size[1]))
  return image
