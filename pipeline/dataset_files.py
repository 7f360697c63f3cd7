"""A finished exemplar output folder, read back without TensorFlow.

`open_dataset(output_dir)` reads what the folder says about itself: its
summary.json, class_names.txt, errors.csv, the shards its summary lists (with
their sizes), shard-named files it does not list, and its files record
(exemplar_files.json). All file access goes through Beam's FileSystems, so
gs:// works. `exemplar-inspect` (pipeline/inspect_cli.py) shows it and
pipeline/verify.py checks the records against it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from typing import Dict, List, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from exemplar.transforms import commit, fileio
from exemplar.transforms.names import (CLASS_NAMES_FILE, ERRORS_FILE, SHARD_NAME,
                                       SUCCESS_MARKER, SUMMARY_JSON)


class NotADatasetError(ValueError):
  """The folder holds no finished exemplar dataset (no _SUCCESS), or cannot
  be looked at."""


class DatasetError(Exception):
  """A finished dataset whose files cannot be read."""


def path(output_dir: str, name: str) -> str:
  return FileSystems.join(output_dir, name)


def read_text(file_path: str) -> str:
  """A UTF-8 file's text; DatasetError if it cannot be read."""
  try:
    with FileSystems.open(file_path) as f:
      return f.read().decode("utf-8")
  except Exception as e:  # noqa: BLE001 - any file system's error
    raise DatasetError(f"cannot read {file_path}: {first_line(e)}") from e


def first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0][:300] if text else type(error).__name__


def read_csv(file_path: str) -> List[Dict[str, str]]:
  return list(csv.DictReader(io.StringIO(read_text(file_path))))


@dataclasses.dataclass
class Dataset:
  """What a finished output folder says about itself."""
  output_dir: str
  summary: Dict
  class_names: List[str]
  errors: List[Dict[str, str]]
  shards: List[Tuple[str, int]]  # (path, size in bytes), in shard order
  # Files beside it named like its shards that its summary does not list.
  unlisted_shards: List[str] = dataclasses.field(default_factory=list)
  # exemplar_files.json: {relative path: size in bytes}, None before records.
  own_files: Optional[Dict[str, int]] = None

  @property
  def config(self) -> Dict:
    return self.summary.get("config", {})


def open_dataset(output_dir: str) -> Dataset:
  """Reads the metadata; NotADatasetError if unfinished, DatasetError if
  unreadable."""
  try:
    finished = FileSystems.exists(path(output_dir, SUCCESS_MARKER))
  except Exception as e:  # noqa: BLE001 - e.g. an unknown scheme
    raise NotADatasetError(f"{output_dir} cannot be read: {first_line(e)}") from e
  if not finished:
    raise NotADatasetError(f"{output_dir} is not a finished exemplar dataset "
                           f"(no {SUCCESS_MARKER})")
  text = read_text(path(output_dir, SUMMARY_JSON))
  try:
    summary = json.loads(text)
  except ValueError as e:
    raise DatasetError(f"{SUMMARY_JSON} is not valid JSON: {first_line(e)}") from e
  class_names = read_text(path(output_dir, CLASS_NAMES_FILE)).splitlines()
  errors = read_csv(path(output_dir, ERRORS_FILE))
  shards = []
  for shard in summary.get("shards", []):
    shard_path = path(output_dir, shard["file"])
    try:
      shards.append((shard_path, fileio.size(shard_path)))
    except FileNotFoundError:
      pass  # named by the summary, missing: --verify reports it
  listed = {shard["file"] for shard in summary.get("shards", [])}
  unlisted = sorted(
      name for name in (FileSystems.split(p)[1] for p in fileio.files_under(output_dir)
                        if "/" not in p[len(output_dir.rstrip("/")) + 1:])
      if SHARD_NAME.fullmatch(name) and name not in listed)
  try:
    record = commit.read_record(output_dir)
  except commit.OutputError as e:
    raise DatasetError(first_line(e)) from e
  return Dataset(output_dir, summary, class_names, errors, shards, unlisted,
                 None if record is None else record["files"])
