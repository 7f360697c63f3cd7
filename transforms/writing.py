"""Stage 5: write the decoded images as sharded TFRecords of tf.train.Example.

Sharding is deterministic: an image's shard is fixed before it is decoded by
its split, its rank in its class and its class's label (a split's records
are in (rank, label) order, cut into consecutive shards), and examples
serialize deterministically, so the same input and seed give byte-identical
shards on any runner.

Each shard is decoded and written whole by one task, to a temporary name beside its final
name, then renamed into place (on object stores an object only appears when its
upload completes). A task that runs twice writes the same bytes again, so
retries are harmless. Beam's file sinks are not used: their finalize step fails
on runners that run set-up more than once (DaskRunner).
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from exemplar.transforms import (beam_internals, contact_sheet, decode_tasks, decoding,
                                 png_encoder, progress, shard_records)
from exemplar.transforms.decode_tasks import DecodeTask
from exemplar.transforms.decoding import FAILURES_TAG, DecodedImage, ImageSettings
from exemplar.transforms.fileio import write_file_atomically  # noqa: F401 - also imported from here
from exemplar.transforms.sampling import ClassSample, sample_splits
from exemplar.transforms.names import SPLIT, shard_file_name

# Keep a shard near this size; TFDS recommends 100-200 MB.
TARGET_SHARD_BYTES = 128 << 20
# A rough stored size per pixel byte, for sizing shards before decoding.
_COMPRESSION_ESTIMATE = {"png": 0.6, "jpeg": 0.15}


def auto_num_shards(num_images: int, settings: ImageSettings) -> int:
  """Enough shards to keep each near TARGET_SHARD_BYTES, at least one."""
  height, width, channels = settings.shape
  estimate = num_images * height * width * channels * _COMPRESSION_ESTIMATE[
      settings.image_format]
  return max(1, min(num_images, math.ceil(estimate / TARGET_SHARD_BYTES)))


class ManifestRow(NamedTuple):
  class_name: str
  label: int
  rank: int
  relative_path: str
  source_path: str
  sha256: str
  source_height: int
  source_width: int
  shard: str
  split: str  # the TFDS split; `rank` is the image's place in its class there


def manifest_row(image: DecodedImage, shard_name: str) -> ManifestRow:
  return ManifestRow(image.class_name, image.label, image.rank,
                     image.relative_path, image.source_path, image.sha256,
                     image.source_height, image.source_width, shard_name, image.split)


class ShardInfo(NamedTuple):
  index: int
  file_name: str
  num_examples: int
  num_bytes: int
  rows: List[ManifestRow]
  split: str = SPLIT


def serialize_example(image: DecodedImage, settings: ImageSettings) -> bytes:
  """The tf.train.Example for one image (TFDS ImageFolder keys, plus more).

  Filled in place: building each Feature and then the Features map from
  constructed messages copies the stored image once per level (four copies
  of ~100 kB); appending to the message's own fields copies it once. Same
  bytes either way (`deterministic=True` sorts the map's keys).
  """
  from tensorflow.core.example import example_pb2

  example = example_pb2.Example()
  feature = example.features.feature
  feature["image"].bytes_list.value.append(image.encoded)
  feature["label"].int64_list.value.append(image.label)
  feature["image/filename"].bytes_list.value.append(image.source_path.encode("utf-8"))
  feature["image/relative_path"].bytes_list.value.append(
      image.relative_path.encode("utf-8"))
  feature["image/class_name"].bytes_list.value.append(image.class_name.encode("utf-8"))
  feature["image/source_height"].int64_list.value.append(image.source_height)
  feature["image/source_width"].int64_list.value.append(image.source_width)
  feature["image/sha256"].bytes_list.value.append(image.sha256.encode("ascii"))
  return example.SerializeToString(deterministic=True)


class _TFRecordFrames:
  """Frames serialized records as TFRecord (length, crc, data, crc)."""

  def __init__(self):
    self.chunks: List[bytes] = []

  def write(self, data: bytes):
    self.chunks.append(data)


def tfrecord_bytes(records: Iterable[bytes]) -> Iterator[bytes]:
  for record in records:
    frames = _TFRecordFrames()
    beam_internals.write_tfrecord_record(frames, record)
    yield b"".join(frames.chunks)


def resolve_num_shards(fixed: Optional[int], num_images: int,
                       settings: ImageSettings) -> int:
  """`num_shards` if given (per split), else sized from the split's planned
  image count."""
  if fixed:
    return fixed
  return auto_num_shards(num_images, settings)


# --- decode and write each shard in one step --------------------------------
#
# The shard of every image is fixed before it is decoded, so only paths cross
# the shuffle: each shard's decode tasks are grouped, decoded on a thread pool
# and streamed into the shard file in record order. Memory stays at the images
# in flight (a few per thread), never the dataset's or a whole shard's encoded
# images, and no image bytes are shuffled between workers.
#
# Records of a split are in (rank, label) order: every class's first pick,
# then every class's second, ... so any prefix read in order (TFDS's
# `train[:N]`, the first N records of the unshuffled split) is as balanced
# as N allows. Shards are consecutive runs of that order, equal to within
# one record (record p of N on shard p * S // N, as TFDS reads them in shard
# order).
#
# A class's decode tasks are its runs of consecutive ranks that share a split
# and a shard. Each task's candidates are the seeded positions of its ranks,
# then its share of the class's spares (dealt round-robin over the class's
# tasks); when they run out it draws more of its own sequence from a new
# listing. With one task per class (the usual case: its picks in one shard)
# a failed pick is replaced by the class's next candidate, as a sequential
# sampler would; with several, by the task's next. With every file kept each
# file is its own task (rank = its place in the class's seeded order; a file
# that fails leaves a gap).

SHEET_TAG = "sheet"


class SplitLayout(NamedTuple):
  """Where a split's records go: (rank, label) order cut into shards."""
  name: str
  num_shards: int
  num_records: int
  planned: "object"  # numpy int64 array: images planned per label
  before: "object"   # numpy int64 array: records of rank < r, for r = 0..max


def split_layout(name: str, planned: Dict[str, int], class_names: Sequence[str],
                 fixed_num_shards: Optional[int], settings: ImageSettings) -> SplitLayout:
  import numpy as np
  counts = np.array([planned.get(c, 0) for c in class_names], dtype=np.int64)
  total = int(counts.sum())
  num_shards = resolve_num_shards(fixed_num_shards, total, settings)
  longest = int(counts.max()) if len(counts) else 0
  # classes_above[j] = classes with more than j images = records of rank j
  classes_above = np.bincount(counts, minlength=longest + 1)[::-1].cumsum()[::-1]
  records_of_rank = classes_above[1:]
  before = np.concatenate([[0], np.cumsum(records_of_rank)]).astype(np.int64)
  return SplitLayout(name, num_shards, total, counts, before)


def rank_shards(layout: SplitLayout, label: int, ranks: int) -> List[int]:
  """The shard of each of ranks 0..ranks-1 of class `label` in a split
  (a pure function; numpy, O(classes + ranks))."""
  import numpy as np
  if ranks <= 0:
    return []
  earlier = np.minimum(layout.planned[:label], ranks)
  # at_least[j] = earlier classes with at least j images (of the first `ranks`)
  at_least = np.bincount(earlier, minlength=ranks + 1)[::-1].cumsum()[::-1]
  r = np.arange(ranks)
  positions = layout.before[r] + at_least[r + 1]
  return (positions * layout.num_shards // max(1, layout.num_records)).tolist()


class ShardLayout:
  """({class: label}, {split: SplitLayout}) for the side-input values
  [(split, {class: planned})] and [class names].

  Computed once per side-input value, not per element (with every image kept
  that is millions of images times thousands of classes).
  """

  def __init__(self, num_shards: Optional[int], settings: ImageSettings):
    self._fixed_num_shards = num_shards
    self._settings = settings
    self._cached = None  # (planned, class_names, result)

  def __call__(self, planned: Sequence[Tuple[str, Dict[str, int]]],
               class_names: Sequence[str]
               ) -> Tuple[Dict[str, int], Dict[str, SplitLayout]]:
    if (self._cached is None or self._cached[0] is not planned
        or self._cached[1] is not class_names):
      labels = {name: label for label, name in enumerate(class_names)}
      layouts = {split: split_layout(split, per_class, class_names,
                                     self._fixed_num_shards, self._settings)
                 for split, per_class in planned}
      self._cached = (planned, class_names, (labels, layouts))
    return self._cached[2]


class Run(NamedTuple):
  """Consecutive ranks of a class on one shard of one split."""
  first_rank: int  # in the class's candidate order
  need: int
  split: str
  rank_offset: int  # first_rank - rank_offset = the rank within the split
  shard: int


def shard_runs(split: str, start: int, shards: Sequence[int]) -> List[Run]:
  """The shards of ranks start, start + 1, ... -> runs of equal shards."""
  runs: List[Run] = []
  for i, shard in enumerate(shards):
    if runs and runs[-1].shard == shard:
      runs[-1] = runs[-1]._replace(need=runs[-1].need + 1)
    else:
      runs.append(Run(start + i, 1, split, start, shard))
  return runs


def class_tasks(class_name: str, label: int, candidates: Sequence[str],
                runs: Sequence[Run], seen: int, root: str = ""
                ) -> List[Tuple[int, DecodeTask]]:
  """A class's seeded candidates and rank runs -> its decode tasks, with
  their shards, in rank order (above). `seen` 0: the class cannot be listed
  again for more candidates."""
  runs = sorted(r for r in runs if r.need > 0)
  if not runs:
    return []
  planned = sum(r.need for r in runs)
  # Every file already a candidate: a new listing would find nothing more.
  seen_for_tasks = 0 if len(candidates) >= seen else seen
  tasks = []
  for index, run in enumerate(runs):
    # One task: its spares right after its ranks; several: dealt round-robin.
    spare_start, spare_stride = (-1, 1) if len(runs) == 1 else (planned + index, len(runs))
    task = DecodeTask(class_name, label, [], run.need, run.first_rank, seen_for_tasks, 1,
                      spare_start, spare_stride, root=root, split=run.split,
                      rank_offset=run.rank_offset)
    tasks.append((run.shard,
                  task._replace(candidates=decode_tasks.task_candidates(candidates, task))))
  return tasks


def file_tasks(sample: ClassSample, label: int, split: str, paths: Sequence[str],
               shards: Sequence[int]) -> List[Tuple[int, DecodeTask]]:
  """Every file kept: one task per file, no spares (a failure leaves a gap)."""
  return [(shard, DecodeTask(sample.class_name, label, [path], 1, rank, 1,
                             root=sample.root, split=split))
          for rank, (path, shard) in enumerate(zip(paths, shards))]


def sample_tasks(sample: ClassSample, label: int,
                 layouts: Dict[str, SplitLayout]) -> List[Tuple[int, DecodeTask]]:
  """ClassSample -> [(shard, DecodeTask)] (a pure function)."""
  splits = sample_splits(sample)
  if sample.split_by_hash:
    # Each split: its own picks, in seeded order; the rest of them spares.
    tasks = []
    for split, planned in splits:
      picks = [p.relative_path for p in sample.picks if p.split == split]
      shards = rank_shards(layouts[split], label, planned)
      if sample.samples_per_class is None and len(picks) == planned:
        tasks += file_tasks(sample, label, split, picks, shards)
      else:
        tasks += class_tasks(sample.class_name, label, picks,
                             shard_runs(split, 0, shards), 0, sample.root)
    return tasks
  paths = [pick.relative_path for pick in sample.picks]
  if sample.samples_per_class is None:  # every file
    split = splits[0][0]
    return file_tasks(sample, label, split, paths,
                      rank_shards(layouts[split], label, len(paths)))
  runs, start = [], 0
  for split, planned in splits:
    runs += shard_runs(split, start, rank_shards(layouts[split], label, planned))
    start += planned
  return class_tasks(sample.class_name, label, paths, runs,
                     sample.files_seen if sample.relistable else 0, sample.root)


class AssignShardsFn(beam.DoFn):
  """ClassSample -> ((split, shard_index, num_shards), DecodeTask) per task; a
  class not in the class names is left out."""

  def __init__(self, num_shards: Optional[int], settings: ImageSettings,
               run_progress: Optional[progress.Progress] = None):
    self._layout = ShardLayout(num_shards, settings)
    self._progress = run_progress or progress.Progress()

  def process(self, sample: ClassSample, planned, class_names: Sequence[str]):
    labels, layouts = self._layout(planned, class_names)
    self._progress.set_total("images decoded",
                             sum(l.num_records for l in layouts.values()))
    self._progress.set_total("shards written", sum(min(l.num_shards, l.num_records)
                                                   for l in layouts.values()))
    if sample.class_name not in labels:
      return
    for shard, task in sample_tasks(sample, labels[sample.class_name], layouts):
      yield (task.split, shard, layouts[task.split].num_shards), task


class DecodeAndWriteShard(beam.DoFn):
  """((split, index, num_shards), [DecodeTask]) -> ShardInfo (main), DecodeFailure
  ('failures'), and the first `sheet_per_class` images of a class, with their
  thumbnails and without the stored image ('sheet')."""

  def __init__(self, input_root: str, output_dir: str, settings: ImageSettings,
               max_pixels: int = 0, exif_transpose: bool = False, seed: int = 0,
               sheet_per_class: int = 0,
               thumbnail_size: int = contact_sheet.DEFAULT_CELL_SIZE,
               run_progress: Optional[progress.Progress] = None):
    self._progress = run_progress or progress.Progress()
    self._root = input_root
    self._output_dir = output_dir
    self._settings = settings
    self._max_pixels = max_pixels
    self._exif_transpose = exif_transpose
    self._seed = seed
    self._sheet_per_class = sheet_per_class
    self._thumbnail_size = thumbnail_size
    self._decoded = Metrics.counter("exemplar", "images_decoded")
    self._failed = Metrics.counter("exemplar", "images_failed")
    self._refills = Metrics.counter("exemplar", "candidate_refills")
    self._decode_msec = Metrics.counter("exemplar", "decode_msec")
    self._shards = Metrics.counter("exemplar", "shards_written")
    self._examples = Metrics.counter("exemplar", "examples_written")
    self._msec = Metrics.counter("exemplar", "write_msec")
    self._resumed = Metrics.counter("exemplar", "shards_resumed")

  def setup(self):
    decoder = decoding.ImageDecoder(
        self._settings, self._max_pixels, self._exif_transpose)
    self._decode_task = decode_tasks.TaskDecoder(
        self._root, decoder, self._seed, self._sheet_per_class, self._thumbnail_size)
    self._pool = decode_tasks.decode_pool()

  def teardown(self):
    pool = getattr(self, "_pool", None)
    if pool is not None:
      pool.shutdown(wait=True)

  def process(self, element) -> Iterator:
    (split, index, num_shards), tasks = element
    started = time.monotonic()
    tasks = sorted((DecodeTask(*t) for t in tasks),
                   key=lambda t: (t.label, t.first_rank))
    name = shard_file_name(index, num_shards, split)
    key = self._shard_key(name, tasks)
    done = shard_records.reuse(self._output_dir, name, key)
    if done is not None:  # written whole by a killed run of the same input
      self._resumed.inc()
      self._progress.tick("shards written")
      rows, failures, sheet, num_bytes = done
      rows = [ManifestRow(*row) for row in rows]
      yield from self._outputs(index, name, split, num_bytes, rows, failures, sheet)
      return
    rows: List[ManifestRow] = []
    failures: List[decoding.DecodeFailure] = []
    sheet: List[DecodedImage] = []

    def records() -> Iterator[bytes]:
      # Metrics are counted here, in the bundle's thread (they are thread-local).
      for events in decode_tasks.in_record_order(
          self._pool, self._decode_task, tasks, 2 * decode_tasks.DECODE_THREADS,
          batch=decode_tasks.batch_size(self._settings.shape)):
        for kind, msec, value in events:
          if kind == "refill":
            self._refills.inc()
            continue
          self._decode_msec.inc(msec)
          if kind == "failed":
            self._failed.inc()
            self._progress.tick("images failed")
            failures.append(value)
            continue
          self._decoded.inc()
          self._progress.tick("images decoded")
          rows.append(manifest_row(value, name))
          if value.rank < self._sheet_per_class:
            # The sheet draws the thumbnail: do not hold the stored image.
            sheet.append(value._replace(encoded=b""))
          yield serialize_example(value, self._settings)

    checksum = shard_records.Crc32()
    num_bytes = write_file_atomically(
        FileSystems.join(self._output_dir, name),
        shard_records.hashed(tfrecord_bytes(records()), checksum))
    # What a resumed run needs to reuse the shard without decoding it again.
    shard_records.record(self._output_dir, name, key, num_bytes, checksum.hexdigest(),
                         rows, failures, sheet)
    self._shards.inc()
    self._examples.inc(len(rows))
    self._msec.inc(int((time.monotonic() - started) * 1000))
    self._progress.tick("shards written")
    yield from self._outputs(index, name, split, num_bytes, rows, failures, sheet)

  def _outputs(self, index, name, split, num_bytes, rows, failures, sheet) -> Iterator:
    yield ShardInfo(index, name, len(rows), num_bytes, rows, split)
    for failure in failures:
      yield beam.pvalue.TaggedOutput(FAILURES_TAG, failure)
    for image in sheet:
      yield beam.pvalue.TaggedOutput(SHEET_TAG, image)

  def _shard_key(self, name: str, tasks: Sequence[DecodeTask]) -> str:
    """Everything that fixes a shard's bytes, hashed."""
    encoder = (png_encoder.encoder_id(self._settings.png_compression)
               if self._settings.image_format == "png" else "tf")
    text = repr((name, [tuple(t) for t in tasks], repr(self._settings), encoder,
                 self._max_pixels,
                 self._exif_transpose, self._seed, self._sheet_per_class,
                 self._thumbnail_size))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class DecodeAndWriteShards(beam.PTransform):
  """ClassSample -> tagged outputs 'shards' (ShardInfo), 'failures'
  (DecodeFailure) and 'sheet' (DecodedImage: thumbnails for the contact sheet).

  `planned_per_class` is a singleton side input [(split, {class: images
  planned})], in split order, which places each class's tasks and, when
  `num_shards` is None, sizes each split's shards; `class_names` a singleton
  side input [name of label i].
  """

  def __init__(self, output_dir: str, num_shards: Optional[int],
               settings: ImageSettings, planned_per_class, class_names,
               max_pixels: int = 0, exif_transpose: bool = False, seed: int = 0,
               sheet_per_class: int = 0,
               thumbnail_size: int = contact_sheet.DEFAULT_CELL_SIZE,
               run_progress: Optional[progress.Progress] = None):
    super().__init__()
    # One run's progress totals for both DoFns (a new run's own when not given).
    run_progress = run_progress or progress.Progress()
    self._assign = AssignShardsFn(num_shards, settings, run_progress)
    self._write = DecodeAndWriteShard(
        "", output_dir, settings, max_pixels, exif_transpose, seed,
        sheet_per_class, thumbnail_size, run_progress)
    self._planned = planned_per_class
    self._class_names = class_names

  def expand(self, samples):
    return (
        samples
        | "AssignShards" >> beam.ParDo(self._assign, planned=self._planned,
                                       class_names=self._class_names)
        # ((split, shard_index, num_shards), DecodeTask)
        | "GroupByShard" >> beam.GroupByKey()
        # ((split, shard_index, num_shards), [DecodeTask]): paths only
        | "DecodeAndWriteShard" >> beam.ParDo(self._write).with_outputs(
            FAILURES_TAG, SHEET_TAG, main="shards"))
        # ShardInfo; DecodeFailure; DecodedImage with a thumbnail
