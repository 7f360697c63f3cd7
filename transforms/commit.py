"""The output folder's life cycle: claim it, stage into it, commit atomically.

A run first claims the folder (`claim_output`): it takes the folder's lock
(transforms/lock.py), refuses a finished dataset unless told to overwrite it,
refuses files of the user's that the run would replace, and removes what an
unfinished earlier run of exemplar left in the staging folder.

Every file a run writes goes first to `<output_dir>/.exemplar-staging/`. Only
when everything is written does the commit move the dataset into place:
  1. remove `_SUCCESS` (from here on the folder reads as unfinished),
  2. record the union of the old dataset's files and the new ones in
     `exemplar_files.json`, so every exemplar file in the folder is on record
     at every moment, whatever step a crash stops at,
  3. remove the old dataset's files that the new one does not replace,
  4. move the new files in, `dataset_info.json` (what TFDS looks for) last,
  5. record exactly the new files (with their sizes and the run's id),
  6. write `_SUCCESS`, then remove the staging folder.
Only files on record are ever removed, each by its exact name: never by
pattern, never outside the output folder, so files of the user's in the folder
(also inside `transform/`) survive. A run that dies at any point before step 6
leaves no `_SUCCESS`, so nothing reads as a finished dataset, and the next
run's commit removes what it left. Each step is idempotent, so a retried
commit finishes the same way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

from apache_beam.io.filesystems import FileSystems

from exemplar.transforms import fileio
from exemplar.transforms.lock import OutputLock, OutputLocked
from exemplar.transforms.names import (FILES_RECORD, FIXED_FILES, LOCK_FILE, STAGING_DIR,
                              SUCCESS_MARKER, SUMMARY_JSON, TFDS_INFO, TRANSFORM_DIR,
                              TRANSFORM_SUBDIRS)

RECORD_FORMAT = 1

_LOGGER = logging.getLogger(__name__)

__all__ = ["DatasetExists", "OutputError", "OutputLocked", "claim_output", "commit", "is_finished",
           "own_files", "staging_dir"]


class OutputError(ValueError):
  """The output folder cannot be used (holds a finished dataset or files of
  the user's that a run would replace, cannot be written)."""


class DatasetExists(OutputError):
  """The output folder holds a finished dataset and overwriting was not asked for."""


def staging_dir(output_dir: str, run_id: str) -> str:
  """Where run `run_id` writes everything before its commit: a folder of its
  own, so runs never mix their files even before the commit's lock."""
  return FileSystems.join(output_dir, STAGING_DIR, run_id)


def _path(output_dir: str, relative: str) -> str:
  return FileSystems.join(output_dir, *relative.split("/"))


def is_finished(output_dir: str) -> bool:
  """Whether `output_dir` holds a finished exemplar dataset."""
  return (fileio.exists(_path(output_dir, SUCCESS_MARKER))
          and (fileio.exists(_path(output_dir, FILES_RECORD))
               or fileio.exists(_path(output_dir, SUMMARY_JSON))))


def read_record(output_dir: str) -> Optional[Dict]:
  """The dataset's `exemplar_files.json`, or None when there is none."""
  path = _path(output_dir, FILES_RECORD)
  if not fileio.exists(path):
    return None
  try:
    with FileSystems.open(path) as f:
      record = json.loads(f.read().decode("utf-8"))
    if not isinstance(record.get("files"), dict):
      raise ValueError("no 'files' mapping")
    return record
  except (ValueError, AttributeError) as e:
    raise OutputError(f"{path} is damaged ({e}); move the folder's files "
                      "elsewhere or choose another output folder") from e


def _is_own_relative(relative: str) -> bool:
  """A recorded path that can only name a file inside the output folder."""
  parts = relative.split("/")
  return (bool(relative) and not relative.startswith("/") and ":" not in parts[0]
          and all(part not in ("", ".", "..") for part in parts)
          and parts[0] not in (STAGING_DIR, FILES_RECORD, LOCK_FILE))


def own_files(output_dir: str) -> List[str]:
  """The relative paths of the files exemplar wrote in `output_dir` (sorted).

  From `exemplar_files.json`; a dataset written before that record existed
  is recognised by its `summary.json`, and its files are the ones every run
  writes, the shards that summary lists and the TFT graph's folders.
  """
  record = read_record(output_dir)
  if record is not None:
    names = set(record["files"])
  elif is_finished(output_dir):
    names = set(_legacy_files(output_dir))
  else:
    names = set()
  if fileio.exists(_path(output_dir, SUCCESS_MARKER)) and (record or names):
    names.add(SUCCESS_MARKER)
  return sorted(n for n in names if _is_own_relative(n))


def _legacy_files(output_dir: str) -> List[str]:
  with FileSystems.open(_path(output_dir, SUMMARY_JSON)) as f:
    summary = json.loads(f.read().decode("utf-8"))
  names = list(FIXED_FILES) + [shard["file"] for shard in summary.get("shards", [])]
  return ([n for n in names if fileio.exists(_path(output_dir, n))]
          + _transform_graph_files(output_dir))


def _transform_graph_files(output_dir: str) -> List[str]:
  """The relative paths of the files in the TFT graph's folders (TFT names
  them, so a run cannot know them before it writes them)."""
  return [_relative(output_dir, path) for sub in TRANSFORM_SUBDIRS
          for path in fileio.files_under(_path(output_dir, f"{TRANSFORM_DIR}/{sub}"))]


def _relative(output_dir: str, path: str) -> str:
  relative = path[len(output_dir.rstrip("/")) + 1:]
  return relative.replace("\\", "/")


def foreign_files(output_dir: str, relatives: Iterable[str],
                  own: Sequence[str]) -> List[str]:
  """Those of `relatives` that exist in `output_dir` and exemplar did not write."""
  own_set = set(own)
  return sorted(r for r in set(relatives)
                if r not in own_set and fileio.exists(_path(output_dir, r)))


def _files_a_run_writes(output_dir: str) -> List[str]:
  """The names a run is sure to write (shard names depend on the run)."""
  # The record itself is checked by read_record.
  return list(FIXED_FILES) + [SUCCESS_MARKER] + _transform_graph_files(output_dir)


def _make_folder(output_dir: str) -> None:
  try:
    if fileio.is_local(output_dir) and not fileio.exists(output_dir):
      FileSystems.mkdirs(output_dir)
  except Exception as e:  # noqa: BLE001 - any file system's refusal
    raise OutputError(f"{output_dir} cannot be written: {_first_line(e)}") from e


def check_output(output_dir: str, overwrite: bool) -> None:
  """The checks of `claim_output`, without the lock and the clean-up (for a
  WriteDataset in a user's pipeline, whose commit takes the lock). Creates
  nothing: a local folder that does not exist yet has nothing to check (the
  run makes it), and the pipeline may never run."""
  if fileio.is_local(output_dir) and not os.path.isdir(output_dir):
    if os.path.lexists(output_dir):
      raise OutputError(f"{output_dir} cannot be written: it is not a folder")
    return
  _check_output(output_dir, overwrite)


# In a run's staging folder: the key of its input and configuration, and
# per shard written, what it holds (transforms/writing.py). Hidden: never
# committed.
RESUME_KEY_FILE = ".resume-key"
SHARD_DONE_PREFIX = ".done-"


def claim_output(output_dir: str, overwrite: bool,
                 resume_key: Optional[str] = None) -> OutputLock:
  """Before a run: lock the folder, check it, clean up after a killed run.

  Returns the held lock (release it when the run has ended); `overwrite`
  also lets it take over a gs:// lock of another host (transforms/lock.py).
  Raises OutputLocked when another run holds the folder, and OutputError (one-line
  reason) when it holds a finished dataset and not `overwrite`, holds files
  of the user's under names the run writes, or cannot be written. Nothing of
  a finished dataset is touched here (only at commit time).

  With `resume_key`, the shards a killed run of the same key left complete
  in its staging folder move into this run's (staging_dir(output_dir,
  lock token)), where the shard writers reuse them once their size and
  checksum check out; the rest of the dead runs' staging is removed.
  """
  _make_folder(output_dir)
  try:
    lock = OutputLock(output_dir, overwrite=overwrite)
    lock.acquire()
  except OutputLocked:
    raise
  except Exception as e:  # noqa: BLE001 - the lock file cannot be created
    raise OutputError(f"{output_dir} cannot be written: {_first_line(e)}") from e
  try:
    _check_output(output_dir, overwrite)
    # Under the lock no other run is writing: staging left here is a dead run's.
    staging = FileSystems.join(output_dir, STAGING_DIR)
    if resume_key:
      _take_over_shards(output_dir, resume_key, lock.holder.token)
    left = [path for path in fileio.files_under(staging)
            if not path.startswith(staging_dir(output_dir, lock.holder.token) + "/")]
    if left:
      _LOGGER.info("Removing %s left by an unfinished earlier run", staging)
      fileio.remove(left)
    if fileio.is_local(staging) and os.path.isdir(staging):
      for name in os.listdir(staging):
        if name != lock.holder.token:
          fileio.remove_tree(os.path.join(staging, name))
    if resume_key:
      fileio.write_file_atomically(FileSystems.join(
          staging_dir(output_dir, lock.holder.token), RESUME_KEY_FILE),
          [resume_key.encode("ascii")])
  except BaseException:
    lock.release()
    raise
  return lock


def _take_over_shards(output_dir: str, resume_key: str, run_id: str) -> None:
  """Moves the shards (and their records) a killed run of the same key left
  into this run's staging folder."""
  staging = FileSystems.join(output_dir, STAGING_DIR)
  by_run: Dict[str, List[str]] = {}
  for path in fileio.files_under(staging):
    relative = path[len(staging.rstrip("/")) + 1:]
    if "/" in relative:
      run, name = relative.split("/", 1)
      by_run.setdefault(run, []).append(name)
  for run in sorted(by_run):
    names = by_run[run]
    if RESUME_KEY_FILE not in names:
      continue
    old = FileSystems.join(staging, run)
    try:
      with FileSystems.open(FileSystems.join(old, RESUME_KEY_FILE)) as f:
        key = f.read().decode("ascii", "replace")
    except Exception:  # noqa: BLE001 - unreadable: not resumable
      continue
    if key != resume_key:
      continue
    done = [name for name in names if name.startswith(SHARD_DONE_PREFIX)]
    shards = [name[len(SHARD_DONE_PREFIX):-len(".json")] for name in done]
    moves = [(name, name) for name in done] + [(shard, shard) for shard in shards
                                             if shard in names]
    new = staging_dir(output_dir, run_id)
    for source, target in moves:
      _move(FileSystems.join(old, source), FileSystems.join(new, target))
    if moves:
      _LOGGER.info("Resuming: %d shard(s) written by the killed run %s can be reused",
                   len(shards), run)
    return


def _check_output(output_dir: str, overwrite: bool) -> None:
  if is_finished(output_dir) and not overwrite:
    raise DatasetExists(f"{output_dir} already holds a finished dataset")
  own = own_files(output_dir)
  foreign = foreign_files(output_dir, _files_a_run_writes(output_dir), own)
  if foreign:
    raise OutputError(
        f"{output_dir} holds files exemplar did not write under names a run "
        f"writes: {', '.join(foreign[:5])}" + (" ..." if len(foreign) > 5 else "")
        + "; move them or choose another output folder")
  try:
    probe = FileSystems.join(output_dir, f".exemplar-write-test-{uuid.uuid4().hex}")
    with FileSystems.create(probe) as f:
      f.write(b"ok")
    fileio.remove([probe])
  except Exception as e:  # noqa: BLE001 - any file system's refusal
    raise OutputError(f"{output_dir} cannot be written: {_first_line(e)}") from e


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0][:300] if text else type(error).__name__


def _write_record(output_dir: str, files: Dict[str, int], run_id: str) -> None:
  from exemplar.transforms.fileio import write_file_atomically
  record = {"format": RECORD_FORMAT, "run_id": run_id,
            "files": dict(sorted(files.items()))}
  write_file_atomically(_path(output_dir, FILES_RECORD),
                        [json.dumps(record, indent=1, sort_keys=True).encode("utf-8")])


def _move(source: str, destination: str) -> None:
  parent = FileSystems.split(destination)[0]
  if fileio.is_local(parent):
    os.makedirs(parent, exist_ok=True)
  FileSystems.rename([source], [destination])


def commit(output_dir: str, run_id: str, overwrite: bool = True) -> None:
  """Moves the staged dataset into `output_dir` (see the module docstring).

  Raises, touching nothing: DatasetExists when the folder holds a finished
  dataset of another run and not `overwrite` (one may have been committed
  there since the run was built); OutputError when a staged file would
  replace a file in the folder that exemplar did not write.
  """
  staging = staging_dir(output_dir, run_id)
  # Hidden entries are scratch (TFT's temp dir, half-written .tmp- files).
  staged = {_relative(staging, path): size
            for path, size in fileio.sizes_under(staging).items()}
  staged = {rel: size for rel, size in staged.items()
            if not any(part.startswith(".") for part in rel.split("/"))
            and rel != SUCCESS_MARKER}
  record = read_record(output_dir)
  if (staged and not overwrite and is_finished(output_dir)
      and (record or {}).get("run_id") != run_id):
    raise DatasetExists(f"{output_dir} holds a finished dataset (committed while "
                        "this run was running); nothing was changed")
  if staged:
    old = own_files(output_dir)
    foreign = foreign_files(output_dir, staged, old)
    if foreign:
      raise OutputError(
          f"{output_dir} holds files exemplar did not write under names this "
          f"run writes: {', '.join(foreign[:5])}; nothing was changed")
    fileio.remove([_path(output_dir, SUCCESS_MARKER)])
    pending = {rel: -1 for rel in old if rel != SUCCESS_MARKER}
    pending.update(staged)
    _write_record(output_dir, pending, run_id)
    # The old dataset_info.json goes first, as TFDS would read it as finished.
    stale = sorted((set(old) - set(staged) | {TFDS_INFO} & set(old)) - {SUCCESS_MARKER})
    if stale:
      _LOGGER.info("Removing the %d files of the earlier dataset that the new "
                   "one does not replace", len(stale))
      fileio.remove(_path(output_dir, rel) for rel in stale)
    for rel in sorted(staged, key=lambda r: (r == TFDS_INFO, r)):
      _move(_path(staging, rel), _path(output_dir, rel))
    _write_record(output_dir, staged, run_id)
  elif record is None or record.get("run_id") != run_id:
    raise OutputError(f"{staging} holds nothing to commit")
  # else: a retry after the moves; the record already lists the new files.
  with FileSystems.create(_path(output_dir, SUCCESS_MARKER)) as f:
    f.write(b"")
  try:
    fileio.remove_tree(staging)
    if fileio.is_local(output_dir):  # the staging folder, when no run is left in it
      try:
        os.rmdir(FileSystems.join(output_dir, STAGING_DIR))
      except OSError:
        pass
  except Exception as e:  # noqa: BLE001 - the dataset is complete all the same
    _LOGGER.warning("The dataset is complete, but %s could not be removed: %s",
                    staging, _first_line(e))


@contextlib.contextmanager
def commit_lock(output_dir: str, run_id: str) -> Iterator[None]:
  """Holds the output folder's lock around a commit, unless the run that
  claimed the folder (the CLI's driver, whose lock token is `run_id`)
  already holds it. A library pipeline's WriteDataset claims nothing up
  front, so its commit takes the lock here: two pipelines committing into one
  folder never interleave (the second fails with OutputLocked)."""
  if OutputLock.held_by(output_dir, run_id):
    yield
    return
  with OutputLock(output_dir):
    yield


def committed_run(output_dir: str) -> Optional[str]:
  """The run id of the finished dataset in `output_dir`, if any."""
  if not is_finished(output_dir):
    return None
  try:
    record = read_record(output_dir)
  except OutputError:
    return None
  return None if record is None else record.get("run_id")

