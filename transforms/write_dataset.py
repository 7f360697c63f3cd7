"""Stages 4-8 as one public PTransform: ClassSample -> a finished dataset.

    samples (ClassSample per class)
      -> plan each shard's decodes: only paths are shuffled   writing.py
      -> decode and resize only the picks (Keras's ops),      decoding.py
         straight into sharded TFRecords                      writing.py
      -> the TFT transform graph                              tft_graph.py
      -> a contact sheet of the picks                         contact_sheet.py
      -> report.html: the picks, errors, changes, config      report.py
      -> metadata, summary; commit, _SUCCESS last             metadata.py, commit.py
      -> one DatasetWritten element
"""

from __future__ import annotations

import uuid
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from exemplar.transforms import (commit, contact_sheet, decoding, fileio, listing,
                                 metadata, png_encoder, progress, report, tft_graph,
                                 writing)
from exemplar.transforms.decoding import (COLOR_MODES, IMAGE_FORMATS, INTERPOLATIONS,
                                          DecodeFailure, ImageSettings)
from exemplar.transforms.sampling import ClassSample, sample_splits, sample_targets

# 2**27 pixels (e.g. 16384 x 8192): far above real photos, far below what a
# crafted header can claim.
DEFAULT_MAX_PIXELS = 1 << 27
MAX_IMAGE_SIDE = 16384


class DatasetWritten(NamedTuple):
  """What `WriteDataset` emits once the dataset is committed (one element)."""
  output_dir: str
  num_examples: int
  examples_per_class: Dict[str, int]   # class name -> images stored
  shards: Tuple[Tuple[str, int], ...]  # (file name, examples), in shard order
  num_failed: int                      # rows of errors.csv
  classes_short: Tuple[str, ...]       # classes with fewer images than asked


def dataset_written(output_dir: str, summary: Dict) -> DatasetWritten:
  """summary.json's content -> DatasetWritten (a pure function)."""
  return DatasetWritten(
      output_dir, summary["num_examples"],
      {entry["class_name"]: entry["sampled"] for entry in summary["per_class"]},
      tuple((shard["file"], shard["examples"]) for shard in summary["shards"]),
      summary["num_failed"], tuple(summary["classes_short"]))


def class_stats(sample: ClassSample) -> Tuple[str, Tuple]:
  """ClassSample -> (class, (files seen, images planned, samples_per_class,
  ((split, planned), ...), ((split, asked for), ...)))."""
  return sample.class_name, (sample.files_seen, sample.wanted, sample.samples_per_class,
                             tuple(sample_splits(sample)), tuple(sample_targets(sample)))


def planned_per_split(stats: Dict[str, Tuple]) -> List[Tuple[str, Dict[str, int]]]:
  """{class: class_stats} -> [(split, {class: images planned})], in split
  order (every class lists the same splits)."""
  order: List[str] = []
  per_split: Dict[str, Dict[str, int]] = {}
  for name in sorted(stats):
    for split, planned in stats[name][3]:
      if split not in per_split:
        order.append(split)
        per_split[split] = {}
      per_split[split][name] = planned
  return [(split, per_split[split]) for split in order]


def folder_problems(sample: ClassSample) -> List[DecodeFailure]:
  """A class's unlistable sub-folders as rows of errors.csv."""
  return [DecodeFailure(sample.class_name, folder, listing.join(sample.root, folder), reason)
          for folder, reason in sample.problems]


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def check_image_settings(image_size: Sequence[int], interpolation: str,
                         crop_to_aspect_ratio: bool, color_mode: str,
                         image_format: str,
                         jpeg_quality: int = ImageSettings.jpeg_quality,
                         png_compression: int = ImageSettings.png_compression) -> ImageSettings:
  """Validates Keras-style image arguments; raises ValueError naming the bad one."""
  if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
      or not all(_is_int(side) for side in image_size)):
    raise ValueError(f"image_size must be (height, width), two ints, got {image_size!r}")
  height, width = image_size
  if not (1 <= height <= MAX_IMAGE_SIDE and 1 <= width <= MAX_IMAGE_SIDE):
    raise ValueError(f"image_size sides must be 1 to {MAX_IMAGE_SIDE}, got {image_size!r}")
  if interpolation not in INTERPOLATIONS:
    raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                     f"got {interpolation!r}")
  if color_mode not in COLOR_MODES:
    raise ValueError(f"color_mode must be one of {', '.join(COLOR_MODES)}, "
                     f"got {color_mode!r}")
  if image_format not in IMAGE_FORMATS:
    raise ValueError(f"image_format must be png or jpeg, got {image_format!r}")
  if image_format == "jpeg" and color_mode == "rgba":
    raise ValueError("image_format jpeg cannot store color_mode rgba; use png")
  if not (_is_int(jpeg_quality) and 0 <= jpeg_quality <= 100):
    raise ValueError(f"jpeg_quality must be an int from 0 to 100, got {jpeg_quality!r}")
  if not (_is_int(png_compression) and 0 <= png_compression <= png_encoder.MAX_LEVEL):
    raise ValueError(f"png_compression must be an int from 0 to {png_encoder.MAX_LEVEL}, "
                     f"got {png_compression!r}")
  return ImageSettings(height=height, width=width, interpolation=interpolation,
                       crop_to_aspect_ratio=bool(crop_to_aspect_ratio),
                       color_mode=color_mode, image_format=image_format,
                       ).encoding(int(jpeg_quality), int(png_compression))


@beam.typehints.with_input_types(ClassSample)
@beam.typehints.with_output_types(DatasetWritten)
class WriteDataset(beam.PTransform):
  """PCollection[ClassSample] -> PCollection[DatasetWritten]: one element,
  emitted once the dataset in `output_dir` is finished (`_SUCCESS` written).

  Decodes and resizes only the picks, with the TF ops Keras's
  `image_dataset_from_directory` uses (pixels equal Keras's), replacing a
  pick that fails to decode by the class's next spare; writes sharded
  TFRecords of tf.train.Example (`image` PNG/JPEG bytes of shape
  `image_size + (channels,)` uint8, `label` int64, `image/filename`, ...: see
  README), TFDS metadata (`tfds.builder_from_directory(output_dir)`), a TFT
  transform graph (`transform/`), `manifest.csv`, `errors.csv`,
  `summary.json`, a contact sheet, and commits them atomically (README,
  "Output"). The same samples and arguments give the same bytes on any runner.

  Args:
    output_dir: local path or URI; literal. Only files exemplar wrote there
      are ever replaced or removed.
    image_size: (height, width) in pixels, as Keras.
    interpolation, crop_to_aspect_ratio, color_mode: as Keras's
      `image_dataset_from_directory` ('bilinear', False, 'rgb').
    image_format: stored encoding, 'png' (lossless) or 'jpeg'.
    jpeg_quality: with 'jpeg', `tf.io.encode_jpeg`'s quality (0-100); each
      of these two is checked, and kept at its default for the other format.
    png_compression: with 'png', libdeflate's level: 0 (stored, ~0.05 ms
      and ~2.2x the bytes of 1 on a 256x256 photo), 1 (default, ~1 ms) to
      12 (~13% smaller than 1, ~40x its time); README's Performance section.
    class_names: label order (label i = class_names[i]) and which classes to
      keep; default: the classes of the input, sorted as plain strings.
    num_shards: TFRecord shards of each split (default: about 128 MB each).
    max_pixels: refuse images whose header claims more pixels (0: no limit).
    exif_transpose: turn images upright by EXIF orientation (Keras does not).
    contact_sheet: write contact_sheet.png.
    overwrite: replace a finished dataset in `output_dir`.
    failures: a PCollection of DecodeFailure rows to add to errors.csv
      (e.g. the bad rows of a list file).
    description: plain data for summary.json's `config` (seed, input, ...).
    seed: the sampling seed, for re-listing a class folder whose spares all
      failed (SampleImageFolder's seed) and the sheet's title.
    compare_to: a finished dataset to compare the new one with: changes.csv
      (per image: added, removed, moved to another split or shard, source
      rewritten) and summary.json's "changes". Default: the finished dataset
      this run replaces, if any.

  Raises (at construction):
    ValueError: a bad argument.
    exemplar.OutputError: `output_dir` holds a finished dataset (and not
      `overwrite`), or files exemplar did not write under names it writes,
      or cannot be written.
  At run time the commit raises exemplar.OutputLocked when another run is
  committing into the same folder.

  Example:
    # /data/flowers/labels.csv names images and their labels, one per line:
    # path,label / daisy/1.jpg,daisy / roses/1.jpg,roses / ...
    import apache_beam as beam
    import exemplar

    with beam.Pipeline() as p:
      listed = p | exemplar.ReadImageList("/data/flowers/labels.csv")
      written = (listed.images
                 | exemplar.SampleImages(samples_per_class=1, root="/data/flowers")
                 | exemplar.WriteDataset("/tmp/flowers_from_list", image_size=(128, 128),
                                         failures=listed.failures))  # into errors.csv
      _ = written | beam.Map(lambda d: print(d.num_examples, "images in", d.output_dir))
  """

  def __init__(self, output_dir: str, image_size: Sequence[int] = (256, 256),
               interpolation: str = "bilinear", crop_to_aspect_ratio: bool = False,
               color_mode: str = "rgb", image_format: str = "png",
               class_names: Optional[Sequence[str]] = None,
               num_shards: Optional[int] = None,
               max_pixels: int = DEFAULT_MAX_PIXELS, exif_transpose: bool = False,
               contact_sheet: bool = True, overwrite: bool = False,
               failures=None, description: Optional[Dict] = None, seed: int = 0,
               run_id: Optional[str] = None, compare_to: Optional[str] = None,
               jpeg_quality: int = ImageSettings.jpeg_quality,
               png_compression: int = ImageSettings.png_compression):
    super().__init__()
    if not isinstance(output_dir, str) or not output_dir.strip():
      raise ValueError(f"output_dir must be a non-empty path, got {output_dir!r}")
    self._settings = check_image_settings(
        image_size, interpolation, crop_to_aspect_ratio, color_mode, image_format,
        jpeg_quality, png_compression)
    if num_shards is not None and not (_is_int(num_shards) and 1 <= num_shards <= 100000):
      raise ValueError(f"num_shards must be an int from 1 to 100000, got {num_shards!r}")
    if not (_is_int(max_pixels) and max_pixels >= 0):
      raise ValueError(f"max_pixels must be an int >= 0 (0: no limit), got {max_pixels!r}")
    if class_names is not None:
      class_names = listing.names_list("class_names", class_names)
      listing.check_class_names(class_names)
      if len(set(class_names)) != len(class_names):
        raise ValueError("class_names lists a class twice")
    self._overwrite = bool(overwrite)
    self._output_dir = fileio.absolute(output_dir)
    self._class_names = class_names
    self._num_shards = num_shards
    self._max_pixels = int(max_pixels)
    self._exif_transpose = bool(exif_transpose)
    self._contact_sheet = bool(contact_sheet)
    self._failures = failures
    s = self._settings
    # What readers need (load_dataset reads image_size and color_mode here)
    # whoever built the pipeline.
    self._description = {
        "output_dir": self._output_dir,  # the caller's spelling, when it gives one
        **dict(description or {}),
        "image_size": [s.height, s.width],
        "interpolation": s.interpolation,
        "crop_to_aspect_ratio": s.crop_to_aspect_ratio, "color_mode": s.color_mode,
        "image_format": s.image_format, "jpeg_quality": s.jpeg_quality,
        "png_compression": s.png_compression, "num_shards": num_shards,
        "max_pixels": self._max_pixels, "exif_transpose": self._exif_transpose}
    self._seed = seed
    self._compare_to = fileio.absolute(compare_to) if compare_to else None
    # The CLI passes the token of the lock it holds; a library run is checked
    # here and takes the lock at commit time (commit.commit_lock).
    self._run_id = run_id or uuid.uuid4().hex
    if run_id is None:
      commit.check_output(self._output_dir, overwrite)

  def default_label(self) -> str:
    return f"WriteDataset({self._output_dir})"

  def display_data(self):
    s = self._settings
    return {"output_dir": self._output_dir, "image_size": f"{s.height}x{s.width}",
            "interpolation": s.interpolation, "color_mode": s.color_mode,
            "image_format": s.image_format,
            **({"jpeg_quality": s.jpeg_quality} if s.image_format == "jpeg"
               else {"png_compression": s.png_compression}),
            "num_shards": "auto" if self._num_shards is None else self._num_shards}

  def expand(self, samples):
    p = samples.pipeline
    settings = self._settings
    staging = commit.staging_dir(self._output_dir, self._run_id)
    if self._class_names is not None:
      names = p | "ClassNames" >> beam.Create([tuple(self._class_names)])
    else:
      names = (samples
               | "ClassName" >> beam.Map(lambda sample: sample.class_name)
               | "AllClassNames" >> beam.combiners.ToList()
               | "Sorted" >> beam.Map(lambda found: tuple(sorted(set(found)))))
    # (name of label 0, name of label 1, ...)
    class_names = beam.pvalue.AsSingleton(names)

    stats = (samples
             | "ClassStats" >> beam.Map(class_stats)
             | "CollectClassStats" >> beam.combiners.ToDict())
    # {class: (seen, planned, samples_per_class, splits, targets)}
    planned = stats | "PlannedPerSplit" >> beam.Map(planned_per_split)
    # [(split, {class: planned})]

    # The decoders make the sheet's thumbnails from the pixels they hold.
    sheet_per_class = (contact_sheet.DEFAULT_MAX_PER_CLASS if self._contact_sheet
                       else 0)
    cell_size = contact_sheet.DEFAULT_CELL_SIZE
    written = samples | "DecodeAndWriteShards" >> writing.DecodeAndWriteShards(
        staging, self._num_shards, settings, beam.pvalue.AsSingleton(planned),
        class_names, max_pixels=self._max_pixels,
        exif_transpose=self._exif_transpose, seed=self._seed,
        sheet_per_class=sheet_per_class, thumbnail_size=cell_size,
        # Counted per application: a second run in this process starts from zero.
        run_progress=progress.Progress())
    shards = written.shards
    # ShardInfo; DecodeFailure; DecodedImage (the first of each class, thumbnail only)
    failure_inputs = [written[decoding.FAILURES_TAG],
                      samples | "FolderProblems" >> beam.FlatMap(folder_problems)]
    if self._failures is not None:
      failure_inputs.append(self._failures)
    failures = tuple(failure_inputs) | "AllFailures" >> beam.Flatten()
    # DecodeFailure: rows of errors.csv

    # The preprocessing_fn has no analyzers, so the graph does not depend on
    # the data: it is built from the class names alone (feeding TFT the first
    # image of every class cost ~20 s and ~300 MB on 1,000 classes).
    writers_done = [
        p
        | "TransformGraph" >> tft_graph.WriteTransformGraph(
            FileSystems.join(staging, tft_graph.TRANSFORM_DIR), class_names, settings)]
    if self._contact_sheet:
      total = (shards
               | "ExamplesPerShard" >> beam.Map(lambda shard: shard.num_examples)
               | "CountExamples" >> beam.CombineGlobally(sum))
      # the number of images stored
      stored = (shards
                | "StoredClasses" >> beam.FlatMap(lambda shard: [r.class_name for r in shard.rows])
                | "CountPerClass" >> beam.combiners.Count.PerElement()
                | "StoredPerClass" >> beam.combiners.ToDict())
      # {class: images stored}
      sheet_classes = (
          p
          | "SheetClassesTrigger" >> beam.Create([None])
          | "MarkClasses" >> beam.Map(
              lambda _, names, stats, stored: contact_sheet.class_marks(names, stats, stored),
              names=class_names, stats=beam.pvalue.AsSingleton(stats),
              stored=beam.pvalue.AsSingleton(stored)))
      # [(class, label, '' | 'short' | 'empty')]: every class
      writers_done.append(
          written[writing.SHEET_TAG]
          | "ContactSheet" >> contact_sheet.WriteContactSheet(
              staging, max_per_class=sheet_per_class, cell_size=cell_size,
              title=contact_sheet.sheet_title(
                  self._description.get("output_dir", self._output_dir),
                  self._description.get("seed", self._seed),
                  self._description.get("splits")
                  or self._description.get("samples_per_class", "?")),
              total=total, classes=sheet_classes))
          # contact sheet page paths
    all_writers_done = writers_done | "WritersDone" >> beam.Flatten()
    # report.html's thumbnails: the sheet's (none without a contact sheet),
    # every class's first pick before any class's second, bounded.
    report_thumbnails = (
        written[writing.SHEET_TAG]
        | "ReportPick" >> beam.Map(report.pick_of)
        | "ReportThumbnails" >> beam.combiners.Top.Smallest(
            report.DEFAULT_MAX_THUMBNAILS, key=report.thumbnail_order))
    # [ReportPick]: one list

    output_dir = self._output_dir
    return (
        p
        | "FinalizeTrigger" >> beam.Create([None])
        | "Finalize" >> beam.ParDo(
            metadata.FinalizeDataset(staging, output_dir, settings,
                                     self._description, self._run_id, self._overwrite,
                                     self._compare_to),
            shards=beam.pvalue.AsList(shards),
            stats=beam.pvalue.AsSingleton(stats),
            failures=beam.pvalue.AsList(failures),
            writers_done=beam.pvalue.AsList(all_writers_done),
            class_names=class_names,
            report_thumbnails=beam.pvalue.AsSingleton(report_thumbnails))
        # summary.json's content
        | "DatasetWritten" >> beam.Map(lambda summary: dataset_written(output_dir, summary))
    )
