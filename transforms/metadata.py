"""Stage 6: the files beside the shards, and the commit of the dataset.

Written once, after every shard and the transform graph are in place:
  class_names.txt      line i = the name of label i
  manifest.csv         one row per stored image: class, label, source, sha256, shard
  errors.csv           one row per file that could not be used, with the reason
  summary.json         per class: files seen, sampled, failed; short classes;
                       the config, seed and package versions
  summary.txt          the same, for people
  dataset_info.json, features.json, label.labels.txt
                       TFDS metadata: `tfds.builder_from_directory(output_dir)`
They are written into the staging folder beside the shards; then
transforms/commit.py moves the whole dataset into place and writes _SUCCESS.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from exemplar.transforms import commit
from exemplar.transforms.decoding import DecodeFailure, ImageSettings
from exemplar.transforms.names import (  # noqa: F401 - readers import SUCCESS_MARKER here
    CLASS_NAMES_FILE, DATASET_NAME, ERRORS_FILE, MANIFEST_FILE, SPLIT, SUCCESS_MARKER,
    SUMMARY_JSON, SUMMARY_TEXT, shard_file_name)
from exemplar.transforms.fileio import write_file_atomically
from exemplar.transforms.writing import ManifestRow, ShardInfo

MANIFEST_COLUMNS = list(ManifestRow._fields)
ERROR_COLUMNS = ["class_name", "relative_path", "source_path", "reason"]


class EmptyDatasetError(ValueError):
  """A dataset of no class at all: nothing is committed (an earlier dataset
  in the folder stays)."""


class ClassStats(NamedTuple):
  """Per class, from the sampling stage: files listed, images planned and
  the sample size asked for (None: every file)."""
  seen: int
  planned: int
  samples_per_class: Optional[int] = None


def samples_per_class_of(stats: Mapping[str, ClassStats], config: Dict):
  """The run's k ('all' for every file), from the classes' samples."""
  for entry in stats.values():
    return "all" if entry.samples_per_class is None else entry.samples_per_class
  return config.get("samples_per_class", "all")


def class_names_text(class_names: Sequence[str]) -> str:
  return "".join(name + "\n" for name in class_names)


def to_csv(columns: Sequence[str], rows: Iterable[Sequence]) -> str:
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(columns)
  writer.writerows(rows)
  return buffer.getvalue()


def build_summary(class_names: Sequence[str], stats: Mapping[str, ClassStats],
                  rows: Sequence[ManifestRow], failures: Sequence[DecodeFailure],
                  shards: Sequence[ShardInfo], samples_per_class, config: Dict,
                  versions: Dict[str, str]) -> Dict:
  """The machine-readable run summary (a pure function of the run's results)."""
  sampled: Dict[str, int] = {}
  for row in rows:
    sampled[row.class_name] = sampled.get(row.class_name, 0) + 1
  failed: Dict[str, int] = {}
  for failure in failures:
    failed[failure.class_name] = failed.get(failure.class_name, 0) + 1
  per_class = []
  short = []
  for label, name in enumerate(class_names):
    seen = stats[name].seen if name in stats else 0
    got = sampled.get(name, 0)
    per_class.append({"class_name": name, "label": label, "files_seen": seen,
                      "sampled": got, "failed": failed.get(name, 0)})
    wanted = seen if samples_per_class == "all" else samples_per_class
    if got < wanted or got == 0:
      short.append(name)
  return {
      "dataset": DATASET_NAME,
      "num_classes": len(class_names),
      "num_examples": len(rows),
      "num_failed": len(failures),
      "files_seen": sum(s.seen for s in stats.values()),
      "samples_per_class": samples_per_class,
      "classes_short": short,
      "shards": [{"file": s.file_name, "examples": s.num_examples,
                  "bytes": s.num_bytes} for s in shards],
      "per_class": per_class,
      "config": config,
      "versions": versions,
  }


def summary_text(summary: Dict, limit: int = 50) -> str:
  """A short per-class table for people (the first `limit` classes)."""
  lines = [
      f"exemplar: {summary['num_examples']} images from "
      f"{summary['num_classes']} classes ({summary['files_seen']} files seen, "
      f"{summary['num_failed']} failed), samples_per_class="
      f"{summary['samples_per_class']}, seed={summary['config'].get('seed')}",
      "",
      f"{'label':>5}  {'class':<30} {'seen':>8} {'sampled':>8} {'failed':>7}",
  ]
  for entry in summary["per_class"][:limit]:
    lines.append(
        f"{entry['label']:>5}  {entry['class_name'][:30]:<30} "
        f"{entry['files_seen']:>8} {entry['sampled']:>8} {entry['failed']:>7}")
  hidden = len(summary["per_class"]) - limit
  if hidden > 0:
    lines.append(f"  ... and {hidden} more classes (see summary.json)")
  if summary["classes_short"]:
    shown = ", ".join(summary["classes_short"][:20])
    more = len(summary["classes_short"]) - 20
    lines.append("")
    lines.append(f"classes short of samples_per_class: {shown}"
                 + (f" and {more} more" if more > 0 else ""))
  return "\n".join(lines) + "\n"


def tfds_features(class_names: Sequence[str], settings: ImageSettings):
  """The TFDS FeaturesDict describing the records writing.py serializes."""
  import numpy as np
  import tensorflow_datasets as tfds
  text = tfds.features.Text
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=settings.shape,
                                   encoding_format=settings.image_format),
      "label": tfds.features.ClassLabel(names=list(class_names)),
      "image/filename": text(),
      "image/relative_path": text(),
      "image/class_name": text(),
      "image/source_height": tfds.features.Scalar(dtype=np.int64),
      "image/source_width": tfds.features.Scalar(dtype=np.int64),
      "image/sha256": text(),
  })


def write_tfds_metadata(target_dir: str, output_dir: str,
                        class_names: Sequence[str], settings: ImageSettings,
                        shard_lengths: Sequence[int], num_bytes: int) -> List[str]:
  """Writes TFDS's dataset_info.json and features.json into `target_dir`,
  describing a dataset that will live in `output_dir`; returns the names.

  TFDS writes to a local temporary folder; the files are then copied with
  Beam's FileSystems, so any output file system works.
  """
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core import dataset_info, file_adapters, naming

  template = naming.ShardedFileTemplate(
      data_dir=output_dir, dataset_name=DATASET_NAME, split=SPLIT,
      filetype_suffix="tfrecord")
  identity = dataset_info.DatasetIdentity(
      name=DATASET_NAME, version=tfds.core.Version("1.0.0"),
      data_dir=output_dir, module_name="")
  info = dataset_info.DatasetInfo(
      builder=identity, features=tfds_features(class_names, settings),
      description="A seeded per-class sample of an image folder, by exemplar.",
      supervised_keys=("image", "label"))
  info.set_file_format(file_adapters.FileFormat.TFRECORD)
  info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(
      name=SPLIT, shard_lengths=list(shard_lengths), num_bytes=num_bytes,
      filename_template=template)]))
  local_dir = tempfile.mkdtemp(prefix="exemplar-tfds-")
  try:
    info.write_to_directory(local_dir)
    names = sorted(os.listdir(local_dir))
    for name in names:
      with open(os.path.join(local_dir, name), "rb") as f:
        write_file_atomically(FileSystems.join(target_dir, name), [f.read()])
  finally:
    shutil.rmtree(local_dir, ignore_errors=True)
  return names


def package_versions() -> Dict[str, str]:
  from importlib import metadata
  versions = {}
  for package in ("exemplar", "apache-beam", "tensorflow",
                  "tensorflow-transform", "tensorflow-datasets"):
    try:
      versions[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      versions[package] = "not installed"
  return versions


class FinalizeDataset(beam.DoFn):
  """Writes everything beside the shards, then commits the dataset.

  Runs once (on a one-element PCollection), with the shard infos, class stats,
  failures and the completions of the other writers as side inputs. Every file
  is written atomically and the same run results give the same bytes, and the
  commit is idempotent, so a retry ends the same way.
  """

  def __init__(self, staging_dir: str, output_dir: str, settings: ImageSettings,
               config: Dict, run_id: str, overwrite: bool = True):
    self._overwrite = overwrite
    self._staging_dir = staging_dir
    self._run_id = run_id
    self._final_dir = output_dir
    self._settings = settings
    self._config = config

  def process(self, unused_element, shards, stats, failures, writers_done,
              class_names):
    del unused_element, writers_done  # they only have to be finished first
    self._class_names = list(class_names)
    if not self._class_names:
      raise EmptyDatasetError(
          f"no class to write to {self._final_dir}: the input held no image "
          "(nothing was changed)")
    shards = sorted(shards, key=lambda s: s.index)
    num_shards = _num_shards_written(shards)
    shards = self._fill_empty_shards(shards, num_shards)
    rows = sorted((row for s in shards for row in s.rows),
                  key=lambda r: (r.label, r.rank))
    failures = sorted(failures, key=lambda f: (f.class_name, f.relative_path))
    stats = {name: ClassStats(*value) for name, value in stats.items()
             if name in self._class_names}
    summary = build_summary(
        self._class_names, stats, rows, failures, shards,
        samples_per_class_of(stats, self._config), self._config, package_versions())
    self._write(CLASS_NAMES_FILE, class_names_text(self._class_names))
    self._write(MANIFEST_FILE, to_csv(MANIFEST_COLUMNS, rows))
    self._write(ERRORS_FILE, to_csv(ERROR_COLUMNS, [
        (f.class_name, f.relative_path, f.source_path, f.reason)
        for f in failures]))
    write_tfds_metadata(
        self._staging_dir, self._final_dir, self._class_names, self._settings,
        [s.num_examples for s in shards], sum(s.num_bytes for s in shards))
    self._write(SUMMARY_TEXT, summary_text(summary))
    self._write(SUMMARY_JSON, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    with commit.commit_lock(self._final_dir, self._run_id):
      commit.commit(self._final_dir, self._run_id, self._overwrite)
    yield summary

  def _write(self, name: str, text: str) -> None:
    write_file_atomically(FileSystems.join(self._staging_dir, name),
                          [text.encode("utf-8")])

  def _fill_empty_shards(self, shards: List[ShardInfo],
                         num_shards: int) -> List[ShardInfo]:
    """Writes an empty file for each shard that got no image (TFDS lists all)."""
    present = {s.index for s in shards}
    for index in range(num_shards):
      if index not in present:
        name = shard_file_name(index, num_shards)
        write_file_atomically(FileSystems.join(self._staging_dir, name), [])
        shards.append(ShardInfo(index, name, 0, 0, []))
    return sorted(shards, key=lambda s: s.index)


def _num_shards_written(shards: Sequence[ShardInfo]) -> int:
  if not shards:
    return 1
  # "exemplar-train.tfrecord-00003-of-00008" -> 8
  return int(shards[0].file_name.rsplit("-of-", 1)[1])
