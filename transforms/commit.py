"""The output folder's life cycle: check it, stage into it, commit atomically.

Every file a run writes goes first to `<output_dir>/.exemplar-staging/`. Only
when everything is written does the commit step move the dataset into
`<output_dir>`:
  1. remove `_SUCCESS` (from here on the folder reads as unfinished),
  2. remove the old dataset's files (every old shard, whatever its count,
     the metadata, the TFT graph, contact sheets),
  3. move the new files in, `dataset_info.json` (what TFDS looks for) last,
  4. write `_SUCCESS`, then remove the staging folder.
A run that dies at any point leaves no `_SUCCESS`, so nothing reads as a
finished dataset (`load_dataset` refuses it; TFDS finds no dataset_info.json
until step 3 is nearly done). The next run removes the stale staging folder.
Each step is idempotent, so a retried commit finishes the same way.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import uuid
from typing import List, Sequence

from apache_beam.io.filesystems import FileSystems

from transforms import listing

STAGING_DIR = ".exemplar-staging"
SUCCESS_MARKER = "_SUCCESS"
TFDS_INFO = "dataset_info.json"
# What an exemplar dataset consists of; only these are ever removed.
DATASET_PATTERNS = (
    "exemplar-train.tfrecord-*-of-*", "class_names.txt", "manifest.csv",
    "errors.csv", "summary.json", "summary.txt", "dataset_info.json",
    "features.json", "*.labels.txt", "contact_sheet*.png", SUCCESS_MARKER,
)
TREE_NAMES = ("transform",)  # folders of the dataset, moved as a whole

_LOGGER = logging.getLogger(__name__)


class OutputError(ValueError):
  """The output folder cannot be used (holds a finished dataset, unwritable)."""


def staging_dir(output_dir: str) -> str:
  return FileSystems.join(output_dir, STAGING_DIR)


def is_finished(output_dir: str) -> bool:
  return FileSystems.exists(FileSystems.join(output_dir, SUCCESS_MARKER))


def prepare_output(output_dir: str, overwrite: bool) -> None:
  """Before a run: refuse a finished dataset, check writability, clean up.

  Raises OutputError with a one-line reason. Touches nothing of a finished
  dataset unless `overwrite` (and even then only at commit time).
  """
  if is_finished(output_dir) and not overwrite:
    raise OutputError(
        f"--output_dir {output_dir} already holds a finished dataset; "
        "pass --overwrite to replace it")
  try:
    if not FileSystems.exists(output_dir):
      FileSystems.mkdirs(output_dir)
    probe = FileSystems.join(output_dir, f".exemplar-write-test-{uuid.uuid4().hex}")
    with FileSystems.create(probe) as f:
      f.write(b"ok")
    FileSystems.delete([probe])
  except Exception as e:  # noqa: BLE001 - any file system's refusal
    raise OutputError(
        f"--output_dir {output_dir} cannot be written: {_first_line(e)}") from e
  staging = staging_dir(output_dir)
  if files_under(staging):
    _LOGGER.info("Removing %s left by an unfinished earlier run", staging)
    remove_tree(staging)


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0][:300] if text else type(error).__name__


def remove_tree(folder: str) -> None:
  """Deletes a folder and everything below it, on any file system.

  Object stores have no folders, only names with a common prefix, so there
  each object below it is deleted.
  """
  if listing.is_local(folder):
    if os.path.exists(folder):
      FileSystems.delete([folder])
    return
  paths = files_under(folder)
  if paths:
    FileSystems.delete(paths)


def files_under(folder: str) -> List[str]:
  """Every file below `folder`, on any file system ([] if there is none)."""
  if listing.is_local(folder):
    found = []
    for root, _, files in os.walk(folder):
      found.extend(os.path.join(root, name) for name in files)
    return sorted(found)
  result = FileSystems.match([folder.rstrip("/") + "/**"])[0]
  return sorted(m.path for m in result.metadata_list)


def dataset_files(output_dir: str) -> List[str]:
  """The files of an exemplar dataset in `output_dir` (not staging, not others)."""
  paths = []
  for path in files_under(output_dir):
    relative = path[len(output_dir.rstrip("/")) + 1:]
    top = relative.split("/", 1)[0]
    if top == STAGING_DIR:
      continue
    if "/" in relative:
      if top in TREE_NAMES:
        paths.append(path)
    elif any(fnmatch.fnmatchcase(relative, p) for p in DATASET_PATTERNS):
      paths.append(path)
  return paths


def _move(sources: Sequence[str], destinations: Sequence[str]) -> None:
  if not sources:
    return
  parents = {FileSystems.split(d)[0] for d in destinations}
  for parent in sorted(parents):
    if listing.is_local(parent):
      os.makedirs(parent, exist_ok=True)
  FileSystems.rename(list(sources), list(destinations))


def commit(output_dir: str) -> None:
  """Moves the staged dataset into `output_dir` (see the module docstring)."""
  staging = staging_dir(output_dir)
  staged = files_under(staging)
  # Hidden entries are scratch (TFT's temp dir, half-written .tmp- files).
  staged = [p for p in staged
            if not any(part.startswith(".")
                       for part in p[len(staging.rstrip("/")) + 1:].split("/"))]
  marker = FileSystems.join(output_dir, SUCCESS_MARKER)
  if FileSystems.exists(marker):
    FileSystems.delete([marker])
  if staged:  # on a retry after the move, the old files are already gone
    old = set(dataset_files(output_dir))
    if old:
      _LOGGER.info("Replacing the %d files of the earlier dataset", len(old))
      FileSystems.delete(sorted(old))
  relative = [p[len(staging.rstrip("/")) + 1:] for p in staged]
  moves = sorted(zip(relative, staged),
                 key=lambda rs: (rs[0] in (TFDS_INFO, SUCCESS_MARKER), rs[0]))
  for rel, source in moves:
    if rel == SUCCESS_MARKER:
      continue
    _move([source], [FileSystems.join(output_dir, *rel.split("/"))])
  with FileSystems.create(marker) as f:
    f.write(b"")
  remove_tree(staging)

