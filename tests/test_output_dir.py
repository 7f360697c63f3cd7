"""Bad invocations and the output folder's life cycle.

A bad flag, input or output folder is one line on stderr and exit code 2,
before anything is written. A finished dataset is never touched without
--overwrite; with it, every old dataset file goes (whatever the old shard
count) and nothing else does.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from typing import Dict, List, Tuple

import pytest

from tests.conftest import make_tree

pytestmark = pytest.mark.slow  # whole CLI runs: seconds each

EXEMPLAR = os.path.join(os.path.dirname(sys.executable), "exemplar")
SMALL = ["--image_size", "12", "16"]


def run_main(argv: List[str], capsys) -> Tuple[int, str, str]:
  from exemplar.main import main
  code = main(list(argv))
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def error_lines(stderr: str) -> List[str]:
  """stderr without the INFO log lines the entry point may print first."""
  return [line for line in stderr.splitlines()
          if line.strip() and " INFO " not in line]


def assert_one_line_error(code: int, stderr: str, *needles: str) -> str:
  assert code == 2, stderr
  lines = error_lines(stderr)
  assert len(lines) == 1, stderr
  assert lines[0].startswith("exemplar: error: "), stderr
  assert "Traceback" not in stderr
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])
  return lines[0]


def snapshot(folder: str) -> Dict[str, Tuple[bytes, int]]:
  """Every file below `folder`: relative path -> (bytes, mtime in ns)."""
  found = {}
  for parent, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(parent, name)
      found[os.path.relpath(path, folder)] = (open(path, "rb").read(),
                                              os.stat(path).st_mtime_ns)
  return found


def scratch_left(out: str) -> List[str]:
  return [os.path.join(d, n) for d, dirs, names in os.walk(out)
          for n in dirs + names if n.startswith((".exemplar-", ".tmp-"))]


def shard_names(out: str) -> List[str]:
  return sorted(n for n in os.listdir(out) if n.startswith("exemplar-train.tfrecord-"))


@pytest.fixture
def tree(tmp_path) -> str:
  root = str(tmp_path / "images")
  make_tree(root, {"ant": 3, "bee": 2, "cat": 2}, size=(16, 24))
  return root


@pytest.fixture
def regular_file(tmp_path) -> str:
  path = tmp_path / "a_file"
  path.write_bytes(b"user data\n")
  return str(path)


# --- bad invocations ----------------------------------------------------------

def bad_invocations(tmp_path, tree: str, regular_file: str):
  """(argv, words the one line must hold) for each bad invocation."""
  empty = tmp_path / "empty_input"
  empty.mkdir(exist_ok=True)
  out = str(tmp_path / "out")
  return [
      (["--input_dir", str(tmp_path / "missing"), "--output_dir", out],
       ["--input_dir", "missing", "does not exist"]),
      (["--output_dir", out, "--input_dir"], ["--input_dir", "expected one argument"]),
      (["--input_dir", str(empty), "--output_dir", out],
       ["--input_dir", "no class folders"]),
      (["--input_dir", regular_file, "--output_dir", out], ["--input_dir", "not a folder"]),
      # Below a regular file nothing can be created, even by root.
      (["--input_dir", tree, "--output_dir", os.path.join(regular_file, "out")],
       ["--output_dir", "cannot be written"]),
      (["--input_dir", tree, "--output_dir", regular_file],
       ["--output_dir", "cannot be written"]),
      (["--input_dir", tree, "--output_dir", out, "--image_size", "0", "10"],
       ["--image_size", "at least 1"]),
      (["--input_dir", tree, "--output_dir", out, "--image_size", "-4", "10"],
       ["--image_size"]),
      (["--input_dir", tree, "--output_dir", out, "--image_size", "10", "99999"],
       ["--image_size", "at most"]),
      (["--input_dir", tree, "--output_dir", out, "--image_size", "ten", "10"],
       ["--image_size", "integer"]),
      (["--input_dir", tree, "--output_dir", out, "--image_size", "10"],
       ["--image_size"]),
      (["--input_dir", tree, "--output_dir", out, "--color_mode", "cmyk"],
       ["--color_mode", "cmyk"]),
      (["--input_dir", tree, "--output_dir", out, "--output_dir", ""],
       ["--output_dir", "empty"]),
  ]


def test_bad_invocations_are_one_line_and_exit_2(tmp_path, tree, regular_file, capsys):
  for argv, needles in bad_invocations(tmp_path, tree, regular_file):
    code, out, err = run_main(argv, capsys)
    assert_one_line_error(code, err, *needles)
    assert out == "", argv
    assert not (tmp_path / "out").exists(), argv
    assert open(regular_file, "rb").read() == b"user data\n"
    assert os.path.isfile(regular_file)


def test_console_script_reports_unwritable_output_in_one_line(tmp_path, tree, regular_file):
  """The installed command, as people run it (processes run concurrently)."""
  cases = [
      (["--input_dir", tree, "--output_dir", os.path.join(regular_file, "out")],
       ["--output_dir", "cannot be written"]),
      (["--input_dir", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "o")],
       ["--input_dir"]),
  ]
  procs = [subprocess.Popen([EXEMPLAR] + argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
           for argv, _ in cases]
  for proc, (argv, needles) in zip(procs, cases):
    out, err = proc.communicate(timeout=300)
    assert_one_line_error(proc.returncode, err, *needles)
    assert out == "", argv
  assert open(regular_file, "rb").read() == b"user data\n"
  assert not (tmp_path / "o").exists()


# --- a finished dataset: refused, then replaced with --overwrite -------------

def test_finished_dataset_is_refused_then_replaced_with_overwrite(tmp_path, tree, capsys):
  out = str(tmp_path / "out")
  code, _, err = run_main(["--input_dir", tree, "--output_dir", out, "--num_shards", "3",
                           "--samples_per_class", "2"] + SMALL, capsys)
  assert code == 0, err
  assert shard_names(out) == [f"exemplar-train.tfrecord-0000{i}-of-00003" for i in range(3)]
  # Files the user put beside the dataset are never the dataset's.
  foreign = {"notes.txt": b"mine\n", "mine/keep.bin": b"\x00\x01",
             ".my_hidden": b"h", "exemplar-train.backup": b"not a shard"}
  for relative, data in foreign.items():
    os.makedirs(os.path.dirname(os.path.join(out, relative)), exist_ok=True)
    with open(os.path.join(out, relative), "wb") as f:
      f.write(data)
  before = snapshot(out)

  code, stdout, err = run_main(["--input_dir", tree, "--output_dir", out,
                                "--num_shards", "1"] + SMALL, capsys)
  assert_one_line_error(code, err, out, "finished dataset", "--overwrite")
  assert stdout == ""
  assert snapshot(out) == before  # same bytes, same mtimes, nothing added

  code, _, err = run_main(["--input_dir", tree, "--output_dir", out, "--num_shards", "1",
                           "--samples_per_class", "1", "--overwrite"] + SMALL, capsys)
  assert code == 0, err
  assert shard_names(out) == ["exemplar-train.tfrecord-00000-of-00001"]
  after = snapshot(out)
  for relative in foreign:
    assert after[relative] == before[relative], relative
  assert os.path.exists(os.path.join(out, "_SUCCESS"))
  assert scratch_left(out) == []
  rows = list(csv.DictReader(open(os.path.join(out, "manifest.csv"), newline="")))
  assert len(rows) == 3
  assert {row["shard"] for row in rows} == {"exemplar-train.tfrecord-00000-of-00001"}

  from exemplar import load_dataset
  assert sum(1 for _ in load_dataset(out, batch_size=None, shuffle=False, dtype="uint8", verbose=False)) == 3
  import tensorflow_datasets as tfds
  builder = tfds.builder_from_directory(out)
  assert builder.info.splits["train"].shard_lengths == [3]
  assert len(list(builder.as_dataset(split="train"))) == 3

  # And back up to more shards than before: every shard is of the new dataset.
  code, _, err = run_main(["--input_dir", tree, "--output_dir", out, "--num_shards", "2",
                           "--overwrite"] + SMALL, capsys)
  assert code == 0, err
  assert shard_names(out) == [f"exemplar-train.tfrecord-0000{i}-of-00002" for i in range(2)]
  assert {r: snapshot(out)[r] for r in foreign} == {r: before[r] for r in foreign}


def test_unfinished_folder_is_accepted_without_overwrite(tmp_path, tree, capsys):
  """A folder without _SUCCESS (a run that died in its commit) holds no
  finished dataset: a new run needs no --overwrite, and replaces the
  leftovers, which the dying commit had put on the files record."""
  out = str(tmp_path / "out")
  os.makedirs(os.path.join(out, ".exemplar-staging", "transform"))
  leftovers = ["exemplar-train.tfrecord-00004-of-00009", "manifest.csv",
               ".exemplar-staging/exemplar-train.tfrecord-00000-of-00002",
               ".exemplar-staging/transform/x"]
  for relative in leftovers:
    with open(os.path.join(out, relative), "wb") as f:
      f.write(b"half written")
  with open(os.path.join(out, "exemplar_files.json"), "w") as f:
    json.dump({"format": 1, "run_id": "killed", "files": {
        "exemplar-train.tfrecord-00004-of-00009": -1, "manifest.csv": -1}}, f)
  code, _, err = run_main(["--input_dir", tree, "--output_dir", out,
                           "--num_shards", "2"] + SMALL, capsys)
  assert code == 0, err
  assert shard_names(out) == [f"exemplar-train.tfrecord-0000{i}-of-00002" for i in range(2)]
  assert not os.path.exists(os.path.join(out, ".exemplar-staging"))
  assert b"half written" not in open(os.path.join(out, "manifest.csv"), "rb").read()
  assert scratch_left(out) == []


def test_successful_run_leaves_no_scratch(tmp_path, tree, capsys):
  out = str(tmp_path / "out")
  code, _, err = run_main(["--input_dir", tree, "--output_dir", out, "--samples_per_class",
                           "all", "--num_shards", "2"] + SMALL, capsys)
  assert code == 0, err
  assert scratch_left(out) == []
  assert not any(name.startswith(".") for name in os.listdir(out))
  names = sorted(os.listdir(out))
  assert [n for n in names if not n.startswith("contact_sheet")] == sorted(
      ["_SUCCESS", "class_names.txt", "dataset_info.json", "errors.csv", "features.json",
       "label.labels.txt", "manifest.csv", "report.html", "summary.json", "summary.txt",
       "transform", "exemplar_files.json",
       "exemplar-train.tfrecord-00000-of-00002", "exemplar-train.tfrecord-00001-of-00002"])
  # Every file a run writes is on its files record, with its size, so
  # --overwrite removes exactly these.
  record = json.load(open(os.path.join(out, "exemplar_files.json")))["files"]
  written = {os.path.relpath(os.path.join(d, n), out): os.path.getsize(os.path.join(d, n))
             for d, _, files in os.walk(out) for n in files}
  assert written.pop("_SUCCESS") == 0
  written.pop("exemplar_files.json")
  assert record == written
  # _SUCCESS is the newest file: written after everything else was in place.
  newest = max((os.stat(os.path.join(d, n)).st_mtime_ns, n)
               for d, _, names in os.walk(out) for n in names)
  assert os.stat(os.path.join(out, "_SUCCESS")).st_mtime_ns == newest[0]
