"""A run killed at any moment leaves nothing that reads as a finished dataset,
and the next run (no --overwrite needed) gives exactly an undisturbed run's bytes.

The kills are real: `exemplar` runs as a subprocess, the test watches its
output folder and sends SIGKILL by PID at an observed moment.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List

import pytest

from tests.conftest import make_tree, run_cli

pytestmark = pytest.mark.slow  # SIGKILLed CLI runs: seconds each

EXEMPLAR = os.path.join(os.path.dirname(sys.executable), "exemplar")
STAGING = ".exemplar-staging"
LOCK = ".exemplar-lock"
SHARD_PREFIX = "exemplar-train.tfrecord-"
# Many shards (most of them empty) make the commit move ~400 files, a window
# of some 50-200 ms that the watcher below reliably sees.
NUM_SHARDS = 400
ARGS = ["--samples_per_class", "all", "--num_shards", str(NUM_SHARDS),
        "--image_size", "32", "32", "--seed", "3"]
# What must equal an undisturbed run byte for byte (the rest names the folder).
COMPARED = ("manifest.csv", "class_names.txt", "errors.csv", "label.labels.txt",
            "features.json", "dataset_info.json")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> str:
  """150 small images: a run takes a few seconds, most of it before writing."""
  root = str(tmp_path_factory.mktemp("faults") / "images")
  make_tree(root, {f"class_{i}": 30 for i in range(5)}, size=(32, 32))
  return root


@pytest.fixture(scope="module")
def reference(tree, tmp_path_factory) -> str:
  """An undisturbed run."""
  out = str(tmp_path_factory.mktemp("reference") / "out")
  assert run_cli(["--input_dir", tree, "--output_dir", out] + ARGS) == 0
  return out


def run_and_kill(argv: List[str], moment: Callable[[], bool], what: str,
                 timeout: float = 240) -> None:
  """Starts `exemplar argv`, polls `moment()` and SIGKILLs the process by its
  PID as soon as it is true. Fails if the run ended first."""
  # At the lowest priority, so the watcher is never starved of the CPU.
  proc = subprocess.Popen([EXEMPLAR] + argv, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, preexec_fn=lambda: os.nice(19))
  deadline = time.monotonic() + timeout
  try:
    while not moment():
      if proc.poll() is not None:
        pytest.fail(f"the run ended (exit {proc.returncode}) before {what}")
      if time.monotonic() > deadline:
        pytest.fail(f"no {what} within {timeout} s")
      time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL, proc.returncode


def listdir(folder: str) -> List[str]:
  try:
    return os.listdir(folder)
  except FileNotFoundError:
    return []


def staged(staging: str) -> List[str]:
  """The file names in the staging folder (each run stages in a folder of
  its own below it)."""
  return [name for _, _, names in os.walk(staging) for name in names]


def shard_names(folder: str) -> List[str]:
  return sorted(n for n in listdir(folder) if n.startswith(SHARD_PREFIX))


def assert_not_finished(out: str) -> None:
  """Neither exemplar's reader nor TFDS takes the folder for a dataset."""
  assert not os.path.exists(os.path.join(out, "_SUCCESS"))
  from exemplar import load_dataset
  with pytest.raises(FileNotFoundError, match="no finished exemplar dataset"):
    load_dataset(out)
  import tensorflow_datasets as tfds
  if os.path.exists(os.path.join(out, "dataset_info.json")):
    # The commit moves dataset_info.json last, right before _SUCCESS; by then
    # every shard of the new dataset is in place.
    names = shard_names(out)
    count = int(names[0].rsplit("-of-", 1)[1])
    assert len(names) == count
  else:
    with pytest.raises(Exception):
      tfds.builder_from_directory(out)


def file_bytes(folder: str) -> Dict[str, bytes]:
  found = {}
  for parent, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(parent, name)
      found[os.path.relpath(path, folder)] = open(path, "rb").read()
  return found


def assert_equals_reference(out: str, reference: str) -> None:
  assert os.path.exists(os.path.join(out, "_SUCCESS"))
  assert sorted(os.listdir(out)) == sorted(os.listdir(reference))
  assert shard_names(out) == shard_names(reference)
  assert len(shard_names(out)) == NUM_SHARDS
  for name in shard_names(reference) + list(COMPARED):
    assert open(os.path.join(out, name), "rb").read() == open(
        os.path.join(reference, name), "rb").read(), name
  rows = list(csv.DictReader(open(os.path.join(out, "manifest.csv"), newline="")))
  assert len(rows) == 150
  summaries = [json.load(open(os.path.join(f, "summary.json"))) for f in (out, reference)]
  for summary in summaries:
    summary["config"].pop("output_dir")
    summary.pop("run")  # start and finish times
    summary.pop("changes", None)  # a rerun over an unfinished folder compares nothing
  assert summaries[0] == summaries[1]
  # The TFT graph: the same files; saved_model.pb is not compared, as TF names
  # its traced functions with a process-wide counter.
  assert sorted(file_bytes(os.path.join(out, "transform"))) == sorted(
      file_bytes(os.path.join(reference, "transform")))
  leftovers = [n for d, dirs, names in os.walk(out) for n in dirs + names
               if n.startswith((".exemplar-", ".tmp-"))]
  assert leftovers == []


def test_kill_while_writing_shards_then_rerun(tree, reference, tmp_path):
  out = str(tmp_path / "out")
  staging = os.path.join(out, STAGING)

  def writing_shards() -> bool:
    return any(SHARD_PREFIX in name for name in staged(staging))

  run_and_kill(["--input_dir", tree, "--output_dir", out] + ARGS, writing_shards,
               "a shard appeared in the staging folder")
  # Killed mid-write: staged pieces exist, nothing is in the output folder.
  assert os.path.isdir(staging)
  assert any(SHARD_PREFIX in name for name in staged(staging))
  # The kill left the lock (taken over by the next run) and the staging folder.
  assert shard_names(out) == [] and sorted(listdir(out)) == [LOCK, STAGING]
  assert_not_finished(out)

  # The folder is unfinished, so no --overwrite is needed.
  assert run_cli(["--input_dir", tree, "--output_dir", out] + ARGS) == 0
  assert_equals_reference(out, reference)


def test_kill_during_commit_over_an_old_dataset_then_rerun(tree, reference, tmp_path):
  """The commit of a run replacing a finished dataset, killed while it moves
  the new files in (the old ones are gone by then)."""
  out = str(tmp_path / "out")
  old_args = ["--samples_per_class", "1", "--num_shards", "3", "--image_size", "8", "8"]
  assert run_cli(["--input_dir", tree, "--output_dir", out] + old_args) == 0
  old_shards = shard_names(out)
  assert len(old_shards) == 3
  new_suffix = f"-of-{NUM_SHARDS:05d}"

  def moving_new_files_in() -> bool:
    return any(name.endswith(new_suffix) for name in listdir(out))

  run_and_kill(["--input_dir", tree, "--output_dir", out, "--overwrite"] + ARGS,
               moving_new_files_in, "a new shard was moved into the output folder")
  new_in = [n for n in shard_names(out) if n.endswith(new_suffix)]
  print(f"killed in the commit with {len(new_in)} of {NUM_SHARDS} new shards moved in")
  assert 0 < len(new_in) < NUM_SHARDS, "the kill missed the commit's moves"
  assert not set(old_shards) & set(os.listdir(out))  # old files go first
  assert not os.path.exists(os.path.join(out, "dataset_info.json"))  # moved last
  assert staged(os.path.join(out, STAGING))  # the rest is still staged
  assert_not_finished(out)

  assert run_cli(["--input_dir", tree, "--output_dir", out] + ARGS) == 0
  assert_equals_reference(out, reference)


def test_a_killed_run_resumes_reusing_the_shards_it_finished(tree, reference, tmp_path,
                                                             caplog):
  """Killed once half of its shards are recorded complete; the rerun (same
  input and options) reuses them (a damaged one is written again) and gives
  an undisturbed run's bytes."""
  out = str(tmp_path / "out")
  staging = os.path.join(out, STAGING)

  def recorded() -> List[str]:
    return [n for n in staged(staging) if n.startswith(".done-")]

  run_and_kill(["--input_dir", tree, "--output_dir", out] + ARGS,
               lambda: len(recorded()) >= 50, "50 shards recorded complete")
  finished = recorded()
  assert len(finished) >= 50
  # Damage one finished shard (same size): its checksum no longer matches.
  damaged = next(os.path.join(parent, name[len(".done-"):-len(".json")])
                 for parent, _, names in os.walk(staging) for name in names
                 if name.startswith(".done-"))
  data = bytearray(open(damaged, "rb").read())
  data[20] ^= 0xFF
  open(damaged, "wb").write(bytes(data))
  # A reused shard is moved into place (same inode); a shard written again is
  # a new file.
  inodes = {name[len(".done-"):-len(".json")]: os.stat(os.path.join(
      parent, name[len(".done-"):-len(".json")])).st_ino
      for parent, _, names in os.walk(staging) for name in names
      if name.startswith(".done-")}
  with caplog.at_level(logging.INFO):
    assert run_cli(["--input_dir", tree, "--output_dir", out] + ARGS) == 0
  resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Resuming")]
  assert resumed and int(resumed[0].split()[1]) >= len(finished)
  assert [r.getMessage() for r in caplog.records if "Not reusing" in r.getMessage()] == [
      f"Not reusing {os.path.basename(damaged)}: its size or checksum is not the recorded "
      "one; writing it again"]
  kept = {name for name, inode in inodes.items()
          if os.stat(os.path.join(out, name)).st_ino == inode}
  assert kept == set(inodes) - {os.path.basename(damaged)}
  assert_equals_reference(out, reference)


def test_a_killed_run_is_not_resumed_with_other_options(tree, tmp_path, caplog):
  out = str(tmp_path / "out")
  staging = os.path.join(out, STAGING)
  run_and_kill(["--input_dir", tree, "--output_dir", out] + ARGS,
               lambda: any(n.startswith(".done-") for n in staged(staging)),
               "a shard recorded complete")
  with caplog.at_level(logging.INFO):
    assert run_cli(["--input_dir", tree, "--output_dir", out, "--seed", "4"]
                   + ARGS[:-2]) == 0
  assert not [r for r in caplog.records if r.getMessage().startswith("Resuming")]
  assert not os.path.exists(staging)
