"""Output is sacred: literal paths, only exemplar's own files removed, one
writer at a time, output never inside input, absolute source paths.

Each test holds the right value as its expected result and fails without the
fix it covers (glob expansion in Beam's match/delete, removal by pattern, no
lock, no input/output check, relative `image/filename`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict, List

import pytest

from tests.conftest import make_tree

SMALL = ["--image_size", "12", "16", "--num_shards", "2"]


def run_main(argv: List[str]) -> int:
  from exemplar.main import main
  return main(list(argv))


def files_of(folder: str) -> Dict[str, bytes]:
  """Every file below `folder` (relative path -> bytes), hidden ones too."""
  found = {}
  for parent, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(parent, name)
      with open(path, "rb") as f:
        found[os.path.relpath(path, folder)] = f.read()
  return found


def records(output_dir: str) -> List[str]:
  """The relative paths of the stored images, read back by load_dataset."""
  from exemplar import load_dataset
  dataset = load_dataset(output_dir, batch_size=None, shuffle=False, dtype="uint8", verbose=False)
  labels = [int(label) for _, label in dataset]
  assert len(labels) == len(dataset.file_paths)
  return sorted(dataset.file_paths)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp("safety") / "images")
  make_tree(root, {"ant": 3, "bee": 2, "cat": 2}, size=(16, 24))
  return root


@pytest.fixture(scope="module")
def other_tree(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp("safety_other") / "images")
  make_tree(root, {"dog": 2, "eel": 2}, seed=5, size=(16, 24))
  return root


# --- 1. paths are literal ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["?out", "*out", "[a]out"])
def test_glob_characters_in_output_dir_name_only_that_folder(tmp_path, tree, other_tree, name):
  """`x/?out` beside a finished `x/aout`: the run, its reader and --overwrite
  see only `x/?out`; the sibling stays byte-identical."""
  sibling = str(tmp_path / "aout")
  assert run_main(["--input_dir", other_tree, "--output_dir", sibling] + SMALL) == 0
  before = files_of(sibling)
  out = str(tmp_path / name)
  assert run_main(["--input_dir", tree, "--output_dir", out] + SMALL) == 0
  assert [os.path.basename(os.path.dirname(p)) for p in records(out)] == (
      ["ant"] + ["bee"] + ["cat"])
  assert run_main(["--input_dir", tree, "--output_dir", out, "--overwrite",
                   "--samples_per_class", "2"] + SMALL) == 0
  assert len(records(out)) == 6
  assert files_of(sibling) == before
  assert len(records(sibling)) == 2


@pytest.mark.slow
def test_bracket_output_dir_is_written_and_leaves_no_probe(tmp_path, tree):
  out = str(tmp_path / "out[1]")
  assert run_main(["--input_dir", tree, "--output_dir", out] + SMALL) == 0
  assert not [n for n in os.listdir(out) if n.startswith(".")]
  assert len(records(out)) == 3


@pytest.mark.slow
def test_dataset_moved_to_a_bracket_folder_reads_back_whole(tmp_path, tree, capsys):
  out = str(tmp_path / "out")
  assert run_main(["--input_dir", tree, "--output_dir", out,
                   "--samples_per_class", "all"] + SMALL) == 0
  moved = str(tmp_path / "ds[1]")
  shutil.move(out, moved)
  assert len(records(moved)) == 7
  import tensorflow_datasets as tfds
  split = tfds.builder_from_directory(moved).as_dataset(split="train")
  assert sum(1 for _ in split) == 7
  from exemplar import inspect_cli
  capsys.readouterr()
  assert inspect_cli.main([moved, "--verify"]) == 0, capsys.readouterr().out


# --- 2. only exemplar's own files are removed --------------------------------


USER_FILES = {
    "imagenet.labels.txt": b"tench\ngoldfish\n",
    "contact_sheet_v1_final.png": b"not ours",
    "transform/notes.txt": b"my notes",
    "exemplar-train.tfrecord-notes.txt": b"a name like ours",
    "notes/manifest.csv": b"deeper, same name as ours",
}


def write_files(folder: str, files: Dict[str, bytes]) -> None:
  for relative, data in files.items():
    path = os.path.join(folder, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(data)


@pytest.mark.slow
def test_user_files_survive_first_run_and_overwrite(tmp_path, tree):
  out = str(tmp_path / "out")
  write_files(out, USER_FILES)
  assert run_main(["--input_dir", tree, "--output_dir", out, "--samples_per_class",
                   "2", "--num_shards", "3", "--image_size", "12", "16"]) == 0
  after_first = files_of(out)
  assert all(after_first[name] == data for name, data in USER_FILES.items())
  assert run_main(["--input_dir", tree, "--output_dir", out, "--overwrite"] + SMALL) == 0
  after = files_of(out)
  assert all(after[name] == data for name, data in USER_FILES.items())
  # The old dataset's three shards are gone; exactly the new two remain.
  shards = sorted(n for n in after if n.startswith("exemplar-train.tfrecord-0"))
  assert shards == [f"exemplar-train.tfrecord-0000{i}-of-00002" for i in range(2)]
  record = json.loads(after["exemplar_files.json"])["files"]
  assert set(after) - set(record) == set(USER_FILES) | {"_SUCCESS", "exemplar_files.json"}


@pytest.mark.slow
def test_a_user_file_under_a_name_a_run_writes_is_refused_untouched(tmp_path, tree, capsys):
  out = str(tmp_path / "out")
  write_files(out, {"manifest.csv": b"mine", "transform/transform_fn/saved_model.pb": b"mine"})
  before = files_of(out)
  assert run_main(["--input_dir", tree, "--output_dir", out] + SMALL) == 2
  err = capsys.readouterr().err
  assert "manifest.csv" in err and "did not write" in err
  assert files_of(out) == before


def test_failure_after_success_marker_is_not_a_failed_commit(tmp_path, monkeypatch):
  """The dataset is complete once _SUCCESS is written: a staging folder that
  cannot be removed afterwards is a warning, not an error."""
  from exemplar.transforms import commit, fileio
  out = str(tmp_path / "out")
  staged = os.path.join(out, ".exemplar-staging", "run-1")
  write_files(staged, {"manifest.csv": b"rows", "summary.json": b'{"shards": []}'})

  def refuse(folder):
    raise PermissionError(f"cannot remove {folder}")
  monkeypatch.setattr(fileio, "remove_tree", refuse)
  commit.commit(out, "run-1")
  assert os.path.exists(os.path.join(out, "_SUCCESS"))
  assert commit.committed_run(out) == "run-1"


@pytest.mark.slow
def test_a_job_that_fails_after_its_commit_exits_0_with_a_warning(
    tmp_path, tree, monkeypatch, caplog, capsys):
  """The CLI: the job fails right after its commit wrote _SUCCESS (here the
  commit step raises once it has committed). The dataset is complete, so the
  run exits 0 with one warning line, no error, and the dataset reads back."""
  import logging
  from exemplar.transforms import commit
  committed = commit.commit

  def commit_then_fail(*args, **kwargs):
    committed(*args, **kwargs)
    raise RuntimeError("the worker died after the commit")
  monkeypatch.setattr(commit, "commit", commit_then_fail)
  out = str(tmp_path / "out")
  with caplog.at_level(logging.WARNING):
    assert run_main(["--input_dir", tree, "--output_dir", out] + SMALL) == 0
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
              and r.getMessage().startswith("The dataset is complete, but the job then failed")]
  assert len(warnings) == 1 and "the worker died after the commit" in warnings[0], caplog.text
  captured = capsys.readouterr()
  assert "error" not in captured.err, captured.err
  assert "wrote 3 images in 2 shard(s)" in captured.out
  monkeypatch.undo()
  from exemplar import inspect_cli
  assert inspect_cli.main([out, "--verify"]) == 0
  assert len(records(out)) == 3
  assert not os.path.exists(os.path.join(out, ".exemplar-lock"))


# --- 3. one writer at a time ---------------------------------------------------


def _try_lock(folder: str, barrier, hold_seconds: float, results) -> None:
  from exemplar.transforms import lock
  barrier.wait()
  try:
    with lock.OutputLock(folder):
      results.put(("held", os.getpid()))
      time.sleep(hold_seconds)
  except lock.OutputLocked as e:
    results.put(("refused", str(e)))


@pytest.mark.slow
def test_lock_admits_one_of_many_processes_started_together(tmp_path):
  folder = str(tmp_path)
  context = multiprocessing.get_context("fork")
  for _ in range(15):
    barrier = context.Barrier(6)
    results = context.Queue()
    workers = [context.Process(target=_try_lock, args=(folder, barrier, 0.3, results))
               for _ in range(6)]
    for worker in workers:
      worker.start()
    outcomes = [results.get(timeout=30) for _ in workers]
    for worker in workers:
      worker.join(timeout=30)
    held = [o for o in outcomes if o[0] == "held"]
    assert len(held) == 1, outcomes
    refused = [o[1] for o in outcomes if o[0] == "refused"]
    assert all(f"pid {held[0][1]}," in message for message in refused), refused
    assert not os.path.exists(os.path.join(folder, ".exemplar-lock"))


@pytest.mark.slow
def test_lock_left_by_a_killed_run_is_taken_over(tmp_path):
  from exemplar.transforms import lock
  folder = str(tmp_path)
  holder = subprocess.Popen([sys.executable, "-c", (
      "import sys, time\n"
      "from transforms.lock import OutputLock\n"
      f"OutputLock({folder!r}).acquire()\n"
      "print('held', flush=True)\n"
      "time.sleep(600)\n")], stdout=subprocess.PIPE, cwd=os.getcwd())
  try:
    assert holder.stdout.readline().strip() == b"held"
    with pytest.raises(lock.OutputLocked, match=f"pid {holder.pid},"):
      lock.OutputLock(folder).acquire()
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
  assert os.path.exists(os.path.join(folder, ".exemplar-lock"))  # left behind
  taken = lock.OutputLock(folder)
  taken.acquire()
  assert json.load(open(os.path.join(folder, ".exemplar-lock")))["pid"] == os.getpid()
  taken.release()


# One `exemplar` run as its own process, started behind a barrier: it
# imports everything, prints "ready", waits for the go file, then runs the
# CLI. Its lock is held a second longer than the run would (claim_output
# sleeps after taking it), so runs released together always overlap.
_RUN_AFTER_GO = """
import os, sys, time
from exemplar.main import main
from exemplar.transforms import commit
claim = commit.claim_output
def claim_and_hold(*args, **kwargs):
  lock = claim(*args, **kwargs)
  time.sleep(1.0)
  return lock
commit.claim_output = claim_and_hold
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
  time.sleep(0.005)
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_runs_started_together_leave_a_complete_dataset(tmp_path, tree):
  """Three CLI runs into one folder released together, twice: exactly one
  writes (exit 0); the others are refused (exit 2) with one line naming it
  (its host and pid); the folder ends finished and complete. Without the
  lock all three would write."""
  import socket
  out = str(tmp_path / "out")
  for round_ in range(2):
    go = str(tmp_path / f"go-{round_}")
    argv = ["--input_dir", tree, "--output_dir", out, "--overwrite",
            "--samples_per_class", "all"] + SMALL
    procs = [subprocess.Popen([sys.executable, "-c", _RUN_AFTER_GO, go] + argv,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    try:
      for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
      open(go, "w").close()
      results = [(p.pid, p.wait(timeout=300), p.stderr.read()) for p in procs]
    finally:
      for proc in procs:
        if proc.poll() is None:
          proc.kill()
          proc.wait(timeout=30)
    codes = sorted(code for _, code, _ in results)
    assert codes == [0, 2, 2], results
    winner = next(pid for pid, code, _ in results if code == 0)
    for _, code, err in results:
      if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("exemplar: ")]
        assert len(errors) == 1, err
        assert (f"is being written by another exemplar run (host {socket.gethostname()}, "
                f"pid {winner}, started ") in errors[0], err
    from exemplar import inspect_cli
    assert inspect_cli.main([out, "--verify"]) == 0
    assert len(records(out)) == 7
    assert not os.path.exists(os.path.join(out, ".exemplar-lock"))


# --- 4. output inside input ----------------------------------------------------


@pytest.mark.parametrize("where", ["inside", "same", "via_link"])
def test_output_inside_input_is_refused(tmp_path, tree, capsys, where):
  root = str(tmp_path / "images")
  shutil.copytree(tree, root)
  out = {"inside": os.path.join(root, "ant", "out"), "same": root,
         "via_link": str(tmp_path / "link" / "out")}[where]
  if where == "via_link":
    os.symlink(root, str(tmp_path / "link"))
  before = files_of(root)
  assert run_main(["--input_dir", root, "--output_dir", out] + SMALL) == 2
  err = capsys.readouterr().err
  assert "is inside --input_dir" in err and len(err.strip().splitlines()) == 1, err
  assert files_of(root) == before


# --- 6. image/filename is the absolute source path ----------------------------


@pytest.mark.slow
def test_source_paths_are_absolute_from_a_relative_input_dir(tmp_path, tree, monkeypatch):
  work = tmp_path / "work"
  work.mkdir()
  shutil.copytree(tree, str(work / "images"))
  monkeypatch.chdir(work)
  assert run_main(["--input_dir", "images", "--output_dir", "out"] + SMALL) == 0
  out = str(work / "out")
  monkeypatch.chdir(tmp_path)  # another working directory
  paths = records(out)
  assert all(os.path.isabs(p) and os.path.isfile(p) for p in paths), paths
  import tensorflow as tf
  shard = os.path.join(out, "exemplar-train.tfrecord-00000-of-00002")
  for raw in tf.data.TFRecordDataset([shard]):
    example = tf.train.Example.FromString(raw.numpy())
    filename = example.features.feature["image/filename"].bytes_list.value[0].decode()
    assert filename.startswith(str(work / "images") + os.sep)


@pytest.mark.slow
def test_an_exemplar_output_inside_the_input_tree_is_not_a_class(tmp_path, tree):
  """A dataset moved into the input tree (or one written there by an older
  exemplar) is recognised by its files record: not listed as a class, so
  the real labels do not shift."""
  root = str(tmp_path / "images")
  shutil.copytree(tree, root)
  out = str(tmp_path / "out")
  assert run_main(["--input_dir", root, "--output_dir", out] + SMALL) == 0
  shutil.move(out, os.path.join(root, "aaa_output"))  # sorts first: would be label 0
  from exemplar.transforms import listing
  assert listing.list_class_folders(root) == ["ant", "bee", "cat"]


def test_releasing_a_lock_never_removes_another_runs_lock_file(tmp_path):
  """Someone removed A's lock file while A ran and B took a new one: A's
  release must leave B's lock in place."""
  from exemplar.transforms import lock
  folder = str(tmp_path)
  first = lock.OutputLock(folder)
  first.acquire()
  os.remove(os.path.join(folder, ".exemplar-lock"))
  second = lock.OutputLock(folder)
  second.acquire()
  first.release()
  assert json.load(open(os.path.join(folder, ".exemplar-lock")))["token"] == second.holder.token
  with pytest.raises(lock.OutputLocked, match="wait for it to finish$"):
    lock.OutputLock(folder).acquire()
  second.release()
  assert not os.path.exists(os.path.join(folder, ".exemplar-lock"))


def test_an_exemplar_output_nested_in_a_class_folder_is_not_listed(tmp_path):
  """Its contact sheet (a .png) would otherwise become a training image."""
  from exemplar.transforms import listing
  from tests.conftest import touch
  root = str(tmp_path / "images")
  touch(root, "cat/a.jpg")
  touch(root, "cat/sub/b.png")
  touch(root, "cat/runs/pick/contact_sheet.png")
  touch(root, "cat/runs/pick/exemplar_files.json", b"{}")
  touch(root, "cat/runs/staged/.exemplar-staging/x/contact_sheet.png")
  touch(root, "cat/runs/staged/contact_sheet.png")
  assert sorted(listing.walk_class_folder(root, "cat")) == ["cat/a.jpg", "cat/sub/b.png"]


# --- 1. any name a file system allows: '\r', bytes that are not UTF-8 ----------


def test_csv_fields_with_a_carriage_return_read_back_exactly():
  """Python's csv writer leaves a lone '\\r' unquoted with a '\\n' line
  terminator; its reader then refuses the whole file (load_dataset and
  exemplar-inspect read manifest.csv, errors.csv with it)."""
  import csv
  import io
  from exemplar.transforms import changes, fileio
  rows = [["cat", "cat/c\rd.png", "1"], ["dog", "dog/a\nb.jpg", "2"], ["e", "plain", "3"]]
  text = fileio.csv_text(["class_name", "relative_path", "n"], rows)
  assert list(csv.reader(io.StringIO(text)))[1:] == rows
  text = changes.changes_csv([row + [""] * 6 for row in rows])
  assert [row[:3] for row in csv.reader(io.StringIO(text))][1:] == rows


def test_a_file_name_that_is_not_utf8_is_recorded_not_fatal(tmp_path):
  from exemplar.transforms import listing
  from tests.conftest import touch
  root = str(tmp_path / "images")
  touch(root, "cat/a.jpg")
  os.makedirs(os.path.join(root, "cat", "sub"))
  for raw in (b"cat/bad\xff.jpg", b"cat/sub\xfe/x.jpg"):
    path = os.path.join(os.fsencode(root), *raw.split(b"/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()
  problems = []
  assert sorted(listing.walk_class_folder(root, "cat", problems)) == ["cat/a.jpg"]
  assert sorted(problems) == [("cat/bad\ufffd.jpg", "file name is not valid UTF-8"),
                              ("cat/sub\ufffd", "folder name is not valid UTF-8")]


@pytest.mark.parametrize("flag", ["--input_dir", "--output_dir"])
def test_a_root_that_is_not_utf8_is_refused_in_one_line(tmp_path, tree, capsys, flag):
  bad = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xff")
  argv = {"--input_dir": ["--input_dir", bad, "--output_dir", str(tmp_path / "out")],
          "--output_dir": ["--input_dir", tree, "--output_dir", bad]}[flag]
  if flag == "--input_dir":
    shutil.copytree(tree, bad)
  assert run_main(argv + SMALL) == 2
  err = capsys.readouterr().err
  assert f"{flag} " in err and "not valid UTF-8" in err and len(err.strip().splitlines()) == 1
  assert not os.path.exists(str(tmp_path / "out")) and not (
      flag == "--output_dir" and os.path.exists(bad))


@pytest.mark.slow
def test_a_run_over_file_names_with_a_carriage_return_and_bad_bytes(tmp_path):
  """'c\\rd.png' is stored and read back by load_dataset and --verify; a file
  whose name is not UTF-8 is recorded in errors.csv, and the run succeeds."""
  import numpy as np
  from tests.conftest import noise_image, write_image
  root = str(tmp_path / "images")
  rng = np.random.default_rng(3)
  for relative in ["cat/c\rd.png", "cat/a.jpg", "dog/e\u2028f.png"]:
    write_image(os.path.join(root, *relative.split("/")), noise_image(rng, 16, 24), "PNG")
  with open(os.path.join(os.fsencode(root), b"dog", b"bad\xff.jpg"), "wb") as f:
    f.write(open(os.path.join(root, "cat", "a.jpg"), "rb").read())
  out = str(tmp_path / "out")
  assert run_main(["--input_dir", root, "--output_dir", out, "--samples_per_class", "all"]
                  + SMALL) == 0
  assert records(out) == sorted(os.path.join(root, *r.split("/")) for r in
                                ["cat/c\rd.png", "cat/a.jpg", "dog/e\u2028f.png"])
  from exemplar import dataset_files, inspect_cli
  errors = dataset_files.read_csv(os.path.join(out, "errors.csv"))
  assert [(e["relative_path"], e["reason"]) for e in errors] == [
      ("dog/bad\ufffd.jpg", "file name is not valid UTF-8")]
  assert inspect_cli.main([out, "--verify"]) == 0
