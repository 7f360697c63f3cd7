"""Stage 6: the files beside the shards, and the commit of the dataset.

Written once, after every shard and the transform graph are in place:
  class_names.txt      line i = the name of label i
  manifest.csv         one row per stored image, in record order: class, label,
                       rank, source, sha256, shard, split
  errors.csv           one row per file that could not be used, with the reason
  summary.json         per class: files seen, sampled, failed; short classes;
                       the config, seed and package versions
  summary.txt          the same, for people
  report.html          one page for a label audit: every class with its picks'
                       thumbnails, the errors, changes and config (report.py)
  dataset_info.json, features.json, label.labels.txt
                       TFDS metadata: `tfds.builder_from_directory(output_dir)`
They are written into the staging folder beside the shards; then
transforms/commit.py moves the whole dataset into place and writes _SUCCESS.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from exemplar.transforms import changes, commit, fileio, report
from exemplar.transforms.decoding import DecodeFailure, ImageSettings
from exemplar.transforms.names import (  # noqa: F401 - readers import SUCCESS_MARKER here
    CHANGES_FILE, CLASS_NAMES_FILE, DATASET_NAME, ERRORS_FILE, MANIFEST_FILE, REPORT_FILE,
    SPLIT, SUCCESS_MARKER,
    SHARD_SUFFIX, SUMMARY_JSON, SUMMARY_TEXT, shard_file_name)
from exemplar.transforms.fileio import write_file_atomically
from exemplar.transforms.writing import ManifestRow, ShardInfo

MANIFEST_COLUMNS = list(ManifestRow._fields)
ERROR_COLUMNS = ["class_name", "relative_path", "source_path", "reason"]


class EmptyDatasetError(ValueError):
  """A dataset of no class at all: nothing is committed (an earlier dataset
  in the folder stays)."""


class ClassStats(NamedTuple):
  """Per class, from the sampling stage: files listed, images planned, the
  sample size asked for (None: every file), and per split (in split order)
  the images planned and asked for."""
  seen: int
  planned: int
  samples_per_class: Optional[int] = None
  splits: Tuple[Tuple[str, int], ...] = ()
  targets: Tuple[Tuple[str, int], ...] = ()


def split_order(stats: Mapping[str, ClassStats]) -> List[str]:
  """The dataset's splits, in order ('train' alone when no class says)."""
  order: List[str] = []
  for name in sorted(stats):
    for split, _ in stats[name].splits:
      if split not in order:
        order.append(split)
  return order or [SPLIT]


def samples_per_class_of(stats: Mapping[str, ClassStats], config: Dict):
  """The run's k ('all' for every file, or the fraction asked for), from the
  classes' samples."""
  if str(config.get("samples_per_class", "")).endswith("%"):
    return config["samples_per_class"]
  for entry in stats.values():
    return "all" if entry.samples_per_class is None else entry.samples_per_class
  return config.get("samples_per_class", "all")


def class_names_text(class_names: Sequence[str]) -> str:
  return "".join(name + "\n" for name in class_names)


def build_summary(class_names: Sequence[str], stats: Mapping[str, ClassStats],
                  rows: Sequence[ManifestRow], failures: Sequence[DecodeFailure],
                  shards: Sequence[ShardInfo], samples_per_class, config: Dict,
                  versions: Dict[str, str]) -> Dict:
  """The machine-readable run summary (a pure function of the run's results)."""
  splits = split_order(stats)
  sampled: Dict[str, int] = {}
  stored: Dict[Tuple[str, str], int] = {}  # (class, split) -> images
  for row in rows:
    sampled[row.class_name] = sampled.get(row.class_name, 0) + 1
    stored[row.class_name, row.split] = stored.get((row.class_name, row.split), 0) + 1
  failed: Dict[str, int] = {}
  for failure in failures:
    failed[failure.class_name] = failed.get(failure.class_name, 0) + 1
  per_class = []
  short = []
  short_by_split: Dict[str, List[str]] = {split: [] for split in splits}
  for label, name in enumerate(class_names):
    entry = stats.get(name, ClassStats(0, 0))
    got = sampled.get(name, 0)
    per_class.append({"class_name": name, "label": label, "files_seen": entry.seen,
                      "sampled": got, "failed": failed.get(name, 0),
                      "per_split": {split: stored.get((name, split), 0) for split in splits}})
    wanted = entry.seen if samples_per_class == "all" else samples_per_class
    targets = dict(entry.targets) or {SPLIT: wanted if isinstance(wanted, int) else 0}
    class_short = got == 0
    for split in splits:
      if stored.get((name, split), 0) < targets.get(split, 0):
        short_by_split[split].append(name)
        class_short = True
    if class_short:
      short.append(name)
  return {
      "dataset": DATASET_NAME,
      "num_classes": len(class_names),
      "num_examples": len(rows),
      "num_failed": len(failures),
      "files_seen": sum(s.seen for s in stats.values()),
      "samples_per_class": samples_per_class,
      "classes_short": short,
      "splits": [{"name": split,
                  "num_examples": sum(s.num_examples for s in shards if s.split == split),
                  "num_shards": sum(1 for s in shards if s.split == split),
                  "classes_short": short_by_split[split]} for split in splits],
      "shards": [{"file": s.file_name, "split": s.split, "examples": s.num_examples,
                  "bytes": s.num_bytes} for s in shards],
      "per_class": per_class,
      "config": config,
      "versions": versions,
  }


def summary_text(summary: Dict, limit: int = 50) -> str:
  """A short per-class table for people (the first `limit` classes)."""
  splits = [s["name"] for s in summary.get("splits", [])]
  many = len(splits) > 1
  asked = summary["config"].get("splits") or summary["samples_per_class"]
  lines = [
      f"exemplar: {summary['num_examples']} images from "
      f"{summary['num_classes']} classes ({summary['files_seen']} files seen, "
      f"{summary['num_failed']} failed), "
      + (f"splits={asked}" if summary["config"].get("splits") else f"samples_per_class={asked}")
      + f", seed={summary['config'].get('seed')}",
  ]
  if many:
    lines.append("splits: " + ", ".join(
        f"{s['name']} {s['num_examples']} images in {s['num_shards']} shards"
        for s in summary["splits"]))
  split_columns = "".join(f" {name[:10]:>10}" for name in splits) if many else ""
  lines += ["", f"{'label':>5}  {'class':<30} {'seen':>8} {'sampled':>8} {'failed':>7}"
            + split_columns]
  for entry in summary["per_class"][:limit]:
    per_split = "".join(f" {entry.get('per_split', {}).get(name, 0):>10}"
                        for name in splits) if many else ""
    lines.append(
        f"{entry['label']:>5}  {entry['class_name'][:30]:<30} "
        f"{entry['files_seen']:>8} {entry['sampled']:>8} {entry['failed']:>7}"
        + per_split)
  hidden = len(summary["per_class"]) - limit
  if hidden > 0:
    lines.append(f"  ... and {hidden} more classes (see summary.json)")
  if summary["classes_short"]:
    shown = ", ".join(summary["classes_short"][:20])
    more = len(summary["classes_short"]) - 20
    lines.append("")
    lines.append(f"classes short (fewer images than asked for): {shown}"
                 + (f" and {more} more" if more > 0 else ""))
    if many:
      for s in summary["splits"]:
        if s["classes_short"]:
          lines.append(f"  short in {s['name']}: " + ", ".join(s["classes_short"][:20])
                       + (f" and {len(s['classes_short']) - 20} more"
                          if len(s["classes_short"]) > 20 else ""))
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
                        splits: Sequence[Tuple[str, Sequence[int], int]]) -> List[str]:
  """Writes TFDS's dataset_info.json and features.json into `target_dir`,
  describing a dataset that will live in `output_dir`, with `splits` as
  [(split, shard lengths, bytes)]; returns the names.

  TFDS writes to a local temporary folder; the files are then copied with
  Beam's FileSystems, so any output file system works.
  """
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core import dataset_info, file_adapters, naming

  identity = dataset_info.DatasetIdentity(
      name=DATASET_NAME, version=tfds.core.Version("1.0.0"),
      data_dir=output_dir, module_name="")
  info = dataset_info.DatasetInfo(
      builder=identity, features=tfds_features(class_names, settings),
      description="A seeded per-class sample of an image folder, by exemplar.",
      supervised_keys=("image", "label"))
  info.set_file_format(file_adapters.FileFormat.TFRECORD)
  info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(
      name=split, shard_lengths=list(lengths), num_bytes=num_bytes,
      filename_template=naming.ShardedFileTemplate(
          data_dir=output_dir, dataset_name=DATASET_NAME, split=split,
          filetype_suffix=SHARD_SUFFIX))
      for split, lengths, num_bytes in splits]))
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


def dataset_fingerprint(manifest_text: str, class_names: str, shards: Sequence[Dict]) -> str:
  """What the dataset holds (its records' sources and checksums, labels and
  shard sizes) -> hex: equal datasets, equal fingerprints."""
  digest = hashlib.sha256()
  for part in (manifest_text, class_names, json.dumps(list(shards), sort_keys=True)):
    digest.update(part.encode("utf-8", "surrogatepass"))
    digest.update(b"\0")
  return digest.hexdigest()[:32]


def run_record(run_info: Dict, dataset_print: str) -> Dict:
  """summary.json's "run": the driver's fingerprints and start time, the
  dataset's fingerprint, the finish time and duration."""
  finished = time.time()
  record = {key: run_info[key] for key in
            ("input_fingerprint", "config_fingerprint", "input_files") if key in run_info}
  record["dataset_fingerprint"] = dataset_print
  record["finished"] = utc_stamp(finished)
  if "started" in run_info:
    record["started"] = utc_stamp(run_info["started"])
    record["duration_sec"] = round(finished - run_info["started"], 3)
  return record


def utc_stamp(seconds: float) -> str:
  """time.time() seconds -> '2026-11-30T11:04:53Z' (summary.json, --result_file)."""
  return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(
      timespec="seconds").replace("+00:00", "Z")


VERSIONED_PACKAGES = ("exemplar", "apache-beam", "tensorflow", "tensorflow-transform",
                      "tensorflow-datasets")


def package_versions(packages: Sequence[str] = VERSIONED_PACKAGES) -> Dict[str, str]:
  """{package: installed version, or 'not installed'}."""
  from importlib import metadata
  versions = {}
  for package in packages:
    try:
      versions[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      versions[package] = "not installed"
  return versions


class FinalizeDataset(beam.DoFn):
  """Writes everything beside the shards, then commits the dataset.

  Runs once (on a one-element PCollection), with the shard infos, class stats,
  failures, the report's thumbnails ([report.ReportPick], at most
  report.DEFAULT_MAX_THUMBNAILS) and the completions of the other writers as
  side inputs. Every file is written atomically and the same run results give
  the same bytes, and the commit is idempotent, so a retry ends the same way.
  """

  def __init__(self, staging_dir: str, output_dir: str, settings: ImageSettings,
               config: Dict, run_id: str, overwrite: bool = True,
               compare_to: Optional[str] = None):
    self._overwrite = overwrite
    self._compare_to = compare_to
    self._staging_dir = staging_dir
    self._run_id = run_id
    self._final_dir = output_dir
    self._settings = settings
    self._config = config

  def process(self, unused_element, shards, stats, failures, writers_done,
              class_names, report_thumbnails=()):
    del unused_element, writers_done  # they only have to be finished first
    self._class_names = list(class_names)
    if not self._class_names:
      raise EmptyDatasetError(
          f"no class to write to {self._final_dir}: the input held no image "
          "(nothing was changed)")
    stats = {name: ClassStats(*value) for name, value in stats.items()
             if name in self._class_names}
    splits = split_order(stats)
    stored = [split for split in splits
              if any(s.num_examples for s in shards if s.split == split)] or splits[:1]
    # A split of no image is left out of the dataset (TFDS cannot read one:
    # "Instruction [] corresponds to no data"); summary.json still lists it.
    fileio.remove(FileSystems.join(self._staging_dir, s.file_name)
                  for s in shards if s.split not in stored)
    shards = [shard for split in stored for shard in self._fill_empty_shards(
        [s for s in shards if s.split == split], split)]
    # ShardInfo, in split then shard order
    rows = [row for s in shards for row in s.rows]  # in record order
    failures = sorted(failures, key=lambda f: (f.class_name, f.relative_path))
    config = {key: value for key, value in self._config.items() if key != "run"}
    summary = build_summary(
        self._class_names, stats, rows, failures, shards,
        samples_per_class_of(stats, config), config, package_versions())
    manifest_text = fileio.csv_text(MANIFEST_COLUMNS, rows)
    summary["run"] = run_record(self._config.get("run") or {}, dataset_fingerprint(
        manifest_text, class_names_text(self._class_names), summary["shards"]))
    self._write(CLASS_NAMES_FILE, class_names_text(self._class_names))
    self._write(MANIFEST_FILE, manifest_text)
    compared = self._compare(manifest_text)
    if compared is not None:
      rows_changed, summary["changes"] = compared
      self._write(CHANGES_FILE, changes.changes_csv(rows_changed))
    self._write(ERRORS_FILE, fileio.csv_text(ERROR_COLUMNS, [
        (f.class_name, f.relative_path, f.source_path, f.reason)
        for f in failures]))
    write_tfds_metadata(
        self._staging_dir, self._final_dir, self._class_names, self._settings,
        [(split, [s.num_examples for s in shards if s.split == split],
          sum(s.num_bytes for s in shards if s.split == split)) for split in stored])
    self._write(SUMMARY_TEXT, summary_text(summary))
    self._write(SUMMARY_JSON, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    # After "changes" is set, so the page shows them.
    picks = report.with_thumbnails(
        report.first_picks(report.pick_of_row(row) for row in rows), report_thumbnails)
    self._write(REPORT_FILE, report.render_report(
        summary, picks, [(f.class_name, f.relative_path, f.source_path, f.reason)
                         for f in failures], report.report_title(summary)))
    with commit.commit_lock(self._final_dir, self._run_id):
      commit.commit(self._final_dir, self._run_id, self._overwrite)
    yield summary

  def _compare(self, manifest_text: str):
    """(changes.csv rows, summary) against `compare_to`, or the finished
    dataset this run replaces; None when there is none."""
    other = self._compare_to or self._final_dir
    if not FileSystems.exists(FileSystems.join(other, SUCCESS_MARKER)):
      return None
    with FileSystems.open(FileSystems.join(other, MANIFEST_FILE)) as f:
      old_rows = changes.read_manifest_rows(f.read().decode("utf-8"))
    rows, summary = changes.compare_manifests(
        old_rows, changes.read_manifest_rows(manifest_text))
    summary["compared_to"] = other
    return rows, summary

  def _write(self, name: str, text: str) -> None:
    write_file_atomically(FileSystems.join(self._staging_dir, name),
                          [text.encode("utf-8")])

  def _fill_empty_shards(self, shards: List[ShardInfo], split: str) -> List[ShardInfo]:
    """A split's shards, with an empty file written for each shard that got
    no image (TFDS lists them all; a split of no image gets one)."""
    num_shards = _num_shards_written(shards)
    present = {s.index for s in shards}
    for index in range(num_shards):
      if index not in present:
        name = shard_file_name(index, num_shards, split)
        write_file_atomically(FileSystems.join(self._staging_dir, name), [])
        shards.append(ShardInfo(index, name, 0, 0, [], split))
    return sorted(shards, key=lambda s: s.index)


def _num_shards_written(shards: Sequence[ShardInfo]) -> int:
  if not shards:
    return 1
  # "exemplar-train.tfrecord-00003-of-00008" -> 8
  return int(shards[0].file_name.rsplit("-of-", 1)[1])
