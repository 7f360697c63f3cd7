"""The exemplar pipeline: the stages of transforms/ joined into one data flow.

    class folders
      -> list each folder where it lies and sample it there   transforms/listing.py
         (a large gs:// folder: the rest in key ranges, spread)
      -> merge partial samples per class (seeded bottom-k)    transforms/sampling.py
      -> plan each shard's decodes: only paths are shuffled   transforms/writing.py
      -> decode and resize only the chosen images             transforms/decoding.py
         straight into sharded TFRecords                      transforms/writing.py
      -> the TFT transform graph                              transforms/tft_graph.py
      -> a contact sheet of the picks                         transforms/contact_sheet.py
      -> metadata, summary                                    transforms/metadata.py
      -> commit: move into place, _SUCCESS last               transforms/commit.py
"""

from __future__ import annotations

import dataclasses
import sys
import time
import uuid
from typing import Iterator, List, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from exemplar.options import ExemplarConfig
from exemplar.transforms import (commit, contact_sheet, decoding, listing, metadata, progress,
                        sampling, tft_graph, writing)

UNBOUNDED = sys.maxsize


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """What the driver resolves before building the pipeline."""
  input_dir: str
  output_dir: str
  class_names: Tuple[str, ...]
  # Written into the dataset's files record by its commit: tells this run's
  # dataset from an earlier one in the same folder.
  run_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)

  @property
  def staging_dir(self) -> str:
    """Where everything is written before the commit (transforms/commit.py)."""
    return commit.staging_dir(self.output_dir)


RANGES_TAG = "ranges"


class ListAndSampleClass(beam.DoFn):
  """(class, label) -> (class, PartialSample): lists one class folder and
  samples it right there, so per-file elements never cross a Beam boundary.

  A sub-folder that cannot be listed goes to the 'failures' output as a
  DecodeFailure (a row of errors.csv). A gs:// class longer than the listing's
  page budget is sampled as far as listed, and the rest goes to the 'ranges'
  output as KeyRanges, to be listed in parallel (ListAndSampleRange).
  """

  def __init__(self, input_dir: str, seed: int, capacity: int,
               remote: listing.RemoteListing = listing.RemoteListing()):
    self._input_dir = input_dir
    self._seed = seed
    self._capacity = capacity
    self._remote = remote
    self._files = Metrics.counter("exemplar", "files_listed")
    self._classes = Metrics.counter("exemplar", "classes_listed")
    self._ranges = Metrics.counter("exemplar", "key_ranges_split_off")
    self._msec = Metrics.counter("exemplar", "listing_msec")

  def process(self, element: Tuple[str, int]) -> Iterator[Tuple[str, sampling.PartialSample]]:
    class_name, _ = element
    started = time.monotonic()
    problems: List[Tuple[str, str]] = []
    listed = listing.ClassListing(self._input_dir, class_name, problems, self._remote)
    sample = sampling.sample_paths(listed, self._seed, self._capacity)
    self._files.inc(sample.seen)
    self._classes.inc()
    self._ranges.inc(len(listed.rest))
    self._msec.inc(int((time.monotonic() - started) * 1000))
    progress.tick("files listed", sample.seen)
    progress.tick("classes listed")
    yield class_name, sample
    for key_range in listed.rest:
      yield beam.pvalue.TaggedOutput(RANGES_TAG, key_range)
    for relative_folder, reason in problems:
      yield beam.pvalue.TaggedOutput(decoding.FAILURES_TAG, decoding.DecodeFailure(
          class_name, relative_folder, listing.join(self._input_dir, relative_folder),
          reason))


class ListAndSampleRange(beam.DoFn):
  """KeyRange -> (class, PartialSample): one key range of a large gs:// class
  folder, listed and sampled where it is listed."""

  def __init__(self, input_dir: str, seed: int, capacity: int):
    self._input_dir = input_dir
    self._seed = seed
    self._capacity = capacity
    self._files = Metrics.counter("exemplar", "files_listed")
    self._msec = Metrics.counter("exemplar", "listing_msec")

  def process(self, key_range: listing.KeyRange
              ) -> Iterator[Tuple[str, sampling.PartialSample]]:
    started = time.monotonic()
    sample = sampling.sample_paths(
        listing.walk_key_range(self._input_dir, listing.KeyRange(*key_range)),
        self._seed, self._capacity)
    self._files.inc(sample.seen)
    self._msec.inc(int((time.monotonic() - started) * 1000))
    progress.tick("files listed", sample.seen)
    yield key_range[0], sample


def class_stats(element: Tuple[str, sampling.PartialSample],
                need) -> Tuple[str, Tuple[int, int]]:
  """(class, sample) -> (class, (files seen, images planned))."""
  class_name, sample = element
  planned = sample.seen if need is None else min(need, sample.seen)
  return class_name, (sample.seen, planned)


class SampleImageFolder(beam.PTransform):
  """PBegin -> {'samples': (class, PartialSample) for every class, the seeded
  sample; 'failures': DecodeFailure for each folder that could not be listed}."""

  def __init__(self, input_dir: str, class_names: Sequence[str], seed: int,
               capacity: int,
               remote: listing.RemoteListing = listing.RemoteListing()):
    super().__init__()
    self._input_dir = input_dir
    self._class_names = list(class_names)
    self._seed = seed
    self._capacity = capacity
    self._remote = remote

  def expand(self, pbegin):
    listed = (
        pbegin
        | "ClassFolders" >> beam.Create(
            [(name, label) for label, name in enumerate(self._class_names)])
        # (class, label)
        | "SpreadClassFolders" >> beam.Reshuffle()
        | "ListAndSample" >> beam.ParDo(
            ListAndSampleClass(self._input_dir, self._seed, self._capacity,
                               self._remote)
        ).with_outputs(decoding.FAILURES_TAG, RANGES_TAG, main="samples"))
    # (class, PartialSample): one per listing; DecodeFailure: unlistable
    # folders; KeyRange: the rest of a large gs:// class
    ranges = (
        listed[RANGES_TAG]
        | "SpreadKeyRanges" >> beam.Reshuffle()
        | "ListAndSampleRange" >> beam.ParDo(
            ListAndSampleRange(self._input_dir, self._seed, self._capacity)))
    # (class, PartialSample): one per key range
    samples = (
        (listed.samples, ranges)
        | "AllPartialSamples" >> beam.Flatten()
        | "MergeSamples" >> beam.CombinePerKey(
            sampling.SeededSampleFn(self._capacity)))
    # (class, PartialSample): the class's candidates, best first
    return {"samples": samples, "failures": listed[decoding.FAILURES_TAG]}


def build(p: beam.Pipeline, config: ExemplarConfig, plan: RunPlan) -> None:
  """Adds the whole exemplar job to pipeline `p`."""
  settings = config.image
  need = None if config.sample_all else config.samples_per_class
  capacity = UNBOUNDED if need is None else sampling.capacity_for(need, config.spares)

  sampled = p | "Sample" >> SampleImageFolder(
      plan.input_dir, plan.class_names, config.seed, capacity)
  samples = sampled["samples"]
  # (class, PartialSample)

  stats = (
      samples
      | "ClassStats" >> beam.Map(class_stats, need=need)
      | "CollectClassStats" >> beam.combiners.ToDict())
  # {class: (seen, planned)}
  planned = stats | "PlannedPerClass" >> beam.Map(
      lambda d: {name: value[1] for name, value in d.items()})
  # {class: planned}

  # The decoders make the sheet's thumbnails from the pixels they hold.
  sheet_per_class = contact_sheet.DEFAULT_MAX_PER_CLASS if config.contact_sheet else 0
  sheet_cell_size = contact_sheet.DEFAULT_CELL_SIZE
  written = samples | "DecodeAndWriteShards" >> writing.DecodeAndWriteShards(
      plan.input_dir, plan.staging_dir, config.num_shards, plan.class_names,
      settings, beam.pvalue.AsSingleton(planned), need=need,
      max_pixels=config.max_pixels, exif_transpose=config.exif_transpose,
      seed=config.seed, sheet_per_class=sheet_per_class,
      thumbnail_size=sheet_cell_size)
  shards = written.shards
  failures = ((sampled["failures"], written[decoding.FAILURES_TAG])
              | "AllFailures" >> beam.Flatten())
  images = written[writing.SHEET_TAG]
  # ShardInfo; DecodeFailure; DecodedImage (the first of each class, thumbnail only)

  # The preprocessing_fn has no analyzers, so the graph does not depend on the
  # data: TFT gets no examples. Feeding it the first image of every class cost
  # ~20 s and ~300 MB on 1,000 classes (Beam pickles and bz2-compresses the
  # examples into the nested pipeline's Create) and made it wait for decoding.
  transform_done = (
      p
      | "NoRawExamples" >> beam.Create([])
      # {image_bytes, class_name}: none
      | "TransformGraph" >> tft_graph.WriteTransformGraph(
          FileSystems.join(plan.staging_dir, tft_graph.TRANSFORM_DIR),
          FileSystems.join(plan.staging_dir, ".tft-tmp"),
          plan.class_names, settings))

  writers_done = [transform_done]
  if config.contact_sheet:
    sheet_total = (
        shards
        | "ExamplesPerShard" >> beam.Map(lambda shard: shard.num_examples)
        | "CountExamples" >> beam.CombineGlobally(sum))
    # the number of images stored
    writers_done.append(
        images
        | "ContactSheet" >> contact_sheet.WriteContactSheet(
            plan.staging_dir, max_per_class=sheet_per_class,
            cell_size=sheet_cell_size,
            title=contact_sheet.sheet_title(
                plan.output_dir, config.seed, config.samples_per_class),
            total=sheet_total))
        # contact sheet page paths
  all_writers_done = writers_done | "WritersDone" >> beam.Flatten()

  _ = (
      p
      | "FinalizeTrigger" >> beam.Create([None])
      | "Finalize" >> beam.ParDo(
          metadata.FinalizeDataset(
              plan.staging_dir, plan.output_dir, plan.class_names, settings,
              config.samples_per_class, config.describe(), plan.run_id),
          shards=beam.pvalue.AsList(shards),
          stats=beam.pvalue.AsSingleton(stats),
          failures=beam.pvalue.AsList(failures),
          writers_done=beam.pvalue.AsList(all_writers_done)))
