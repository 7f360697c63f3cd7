"""exemplar.prelist: the listing child takes the job's own samples, the CLI
writes the same bytes with it or without it, and a failed child only means
the job lists for itself."""

import json
import os
import pickle
import subprocess
import sys

import pytest

from tests.conftest import make_tree, touch
from exemplar import main as main_module
from exemplar import prelist
from exemplar.transforms import listing, sampling


@pytest.fixture
def tricky_tree(tmp_path) -> str:
  """Nested folders, hidden and junk folders, a folder named like an image,
  a dangling link, a name that is not UTF-8, a class with no images."""
  root = str(tmp_path / "images")
  make_tree(root, {"cat": 9, "dog": 4, "empty": 0}, size=(12, 10))
  for relative in ("cat/deep/er/x1.jpg", "cat/deep/x2.PNG", "cat/.hidden.jpg",
                   "cat/__MACOSX/y.jpg", "cat/@eaDir/z.jpg", "cat/notes.txt",
                   "dog/looks_like.jpg/inside.png", "dog/.git/w.png"):
    touch(root, relative)
  os.symlink(os.path.join(root, "nowhere.jpg"), os.path.join(root, "dog", "dangling.jpg"))
  with open(os.path.join(root.encode(), b"cat", b"bad\xffname.jpg"), "wb") as f:
    f.write(b"x")
  return root


def job_listing(root, class_name, seed, capacity):
  """What the job's ListAndSampleClassFn computes for one local class."""
  problems = []
  sample = sampling.sample_paths(listing.ClassListing(root, class_name, problems),
                                 seed, capacity)
  return sample.seen, sample.candidates, problems


@pytest.mark.parametrize("seed,capacity", [(0, 1), (7, 3), (-2**100, 50)])
def test_the_child_samples_exactly_as_the_job_lists(tricky_tree, seed, capacity):
  classes = listing.list_class_folders(tricky_tree)
  assert classes == ["cat", "dog", "empty"]
  listed = prelist.start(tricky_tree, classes, seed, capacity).result()
  assert listed is not None
  assert [c.class_name for c in listed] == classes
  for got in listed:
    seen, candidates, problems = job_listing(tricky_tree, got.class_name, seed, capacity)
    assert (got.seen, list(got.candidates), sorted(got.problems)) == (
        seen, candidates, sorted(problems))
  by_name = {c.class_name: c for c in listed}
  # 9 + 2 nested; the junk, hidden and text files and the bad name are not images.
  assert by_name["cat"].seen == 11
  assert by_name["cat"].problems == [("cat/bad\ufffdname.jpg", "file name is not valid UTF-8")]
  assert by_name["dog"].seen == 6  # 4 + inside.png + the dangling link
  assert by_name["empty"].seen == 0 and by_name["empty"].candidates == []


def test_the_child_imports_neither_beam_nor_tensorflow(tricky_tree):
  request = json.dumps({"root": tricky_tree, "classes": ["dog"], "seed": "3",
                        "capacity": 2}).encode()
  proc = subprocess.run([sys.executable, *prelist._SAFE_PATH, "-X", "importtime",
                         "-c", prelist._BOOTSTRAP, prelist._HOME],
                        input=request, capture_output=True, timeout=60)
  assert proc.returncode == 0, proc.stderr[-2000:]
  imported = {line.split("|")[-1].strip().split(".")[0]
              for line in proc.stderr.decode().splitlines() if line.startswith("import time:")}
  assert "exemplar" in imported and "hashlib" in imported
  assert not imported & {"apache_beam", "tensorflow", "numpy", "PIL"}
  answer = pickle.loads(proc.stdout)
  (name, seen, candidates, problems, msec), = answer["classes"]
  assert (name, seen, len(candidates)) == ("dog", 6, 2)


def run_and_read(root, out, argv=()):
  code = main_module.main(["--input_dir", root, "--output_dir", out,
                           "--image_size", "8", "8"] + list(argv))
  assert code == 0
  # Everything but the files that carry the run's times and folder, and the
  # SavedModel (TF numbers the functions it traces per process).
  skip = {"summary.json", "report.html", "exemplar_files.json", "dataset_info.json"}
  files = {}
  for folder, _, names in os.walk(out):
    for name in names:
      relative = os.path.relpath(os.path.join(folder, name), out)
      if name not in skip and not relative.startswith("transform/transform_fn/"):
        with open(os.path.join(folder, name), "rb") as f:
          files[relative] = f.read()
  with open(os.path.join(out, "summary.json")) as f:
    return files, json.load(f)


@pytest.mark.parametrize("argv", [[], ["--samples_per_class", "3"],
                                  ["--splits", "train=2,validation=1", "--seed", "5"]])
def test_a_cli_run_writes_the_same_bytes_with_the_child_or_without(
    tricky_tree, tmp_path, monkeypatch, argv):
  started, answered = [], []
  real_start, real_result = prelist.start, prelist.Prelisting.result
  monkeypatch.setattr(prelist, "start", lambda *a: started.append(a) or real_start(*a))
  monkeypatch.setattr(prelist.Prelisting, "result",
                      lambda self: answered.append(real_result(self)) or answered[-1])
  out = str(tmp_path / "out")  # one folder: the sheet's header names it
  with_child, summary = run_and_read(tricky_tree, out, argv)
  assert len(started) == 1
  assert answered[0] is not None  # the job started from the child's samples
  monkeypatch.setattr(main_module, "prelist_capacity", lambda *a: None)
  without, summary_without = run_and_read(tricky_tree, out, argv + ["--overwrite"])
  assert len(started) == 1
  assert any(name.endswith(".png") for name in with_child)  # the contact sheet
  assert any(".tfrecord" in name for name in with_child)
  # The second run replaced the first: the same picks, so no change listed.
  assert without.pop("changes.csv").count(b"\n") == 1
  assert with_child.keys() == without.keys()
  for name in with_child:
    assert with_child[name] == without[name], name
  for key in ("files_seen", "num_examples", "classes_short"):
    assert summary[key] == summary_without[key]
  assert summary["files_seen"] == 11 + 6
  # errors.csv has the bad name either way (from the child's problems).
  assert b"file name is not valid UTF-8" in with_child["errors.csv"]


def test_every_file_kept_or_a_job_in_other_processes_lists_in_the_job(tricky_tree, tmp_path):
  plan = main_module.make_plan(main_module.parse_args(
      ["--input_dir", tricky_tree, "--output_dir", str(tmp_path / "o")])[0])
  config = lambda *argv: main_module.parse_args(  # noqa: E731
      ["--input_dir", tricky_tree, "--output_dir", str(tmp_path / "o")] + list(argv))
  k1, beam_args = config()
  assert main_module.prelist_capacity(k1, plan, beam_args) == 1 + 4  # k + spares
  every, beam_args = config("--samples_per_class", "all")
  assert main_module.prelist_capacity(every, plan, beam_args) is None
  mp, beam_args = config("--direct_num_workers", "2",
                         "--direct_running_mode", "multi_processing")
  assert main_module.prelist_capacity(mp, plan, beam_args) is None


def test_a_child_that_fails_leaves_the_listing_to_the_job(tricky_tree, tmp_path,
                                                          monkeypatch, caplog):
  # A python that exits at once with an error instead of listing.
  monkeypatch.setattr(prelist.sys, "executable", "/bin/false")
  caplog.set_level("INFO", logger="exemplar.prelist")
  assert prelist.start(tricky_tree, ["cat"], 0, 1).result() is None
  assert "Listing in the job instead" in caplog.text and "exit 1" in caplog.text
  files, summary = run_and_read(tricky_tree, str(tmp_path / "out"))
  assert summary["files_seen"] == 17 and summary["num_examples"] == 2
  monkeypatch.setattr(prelist.sys, "executable", "/nonexistent/python")
  assert prelist.start(tricky_tree, ["cat"], 0, 1).result() is None
  assert "could not start it" in caplog.text


def test_prelisted_must_name_the_classes_taken(tricky_tree):
  from exemplar.transforms.bottom_k import SampledClass
  from exemplar.transforms.sample_images import SampleImageFolder
  with pytest.raises(ValueError, match="exactly the classes"):
    SampleImageFolder(tricky_tree, prelisted=[SampledClass("cat", 0, [], [], 0)])


def test_a_relative_root_is_this_process_s(tricky_tree, monkeypatch):
  monkeypatch.chdir(os.path.dirname(tricky_tree))
  listed = prelist.start(os.path.basename(tricky_tree), ["cat"], 0, 1).result()
  assert listed is not None and listed[0].seen == 11


def test_a_launcher_that_raises_before_result_ends_the_child(tricky_tree):
  with pytest.raises(KeyboardInterrupt):
    with prelist.start(tricky_tree, ["cat", "dog"], 0, 1) as prelisting:
      raise KeyboardInterrupt
  assert prelisting._proc.returncode is not None  # ended and reaped


def test_a_child_that_ran_another_exemplar_is_not_trusted(tricky_tree, monkeypatch, caplog):
  # The child imports the exemplar this process imported (its folder goes
  # first on the child's sys.path) and says which files it ran: another
  # copy's samples (other rules, other extensions) would not be the job's.
  caplog.set_level("INFO", logger="exemplar.prelist")
  listed = prelist.start(tricky_tree, ["cat"], 0, 1).result()
  assert listed is not None and listed[0].seen == 11
  monkeypatch.setattr(prelist, "_code_files", lambda: ["/elsewhere/exemplar/prelist.py"])
  assert prelist.start(tricky_tree, ["cat"], 0, 1).result() is None
  assert "it ran another exemplar" in caplog.text


def test_the_child_lists_with_the_jobs_workers_in_class_order(tricky_tree):
  classes = ["dog", "cat", "empty"]
  one = prelist.start(tricky_tree, classes, 5, 3).result()
  many = prelist.start(tricky_tree, classes, 5, 3, threads=4).result()
  assert [c.class_name for c in many] == classes
  assert [c[:4] for c in one] == [c[:4] for c in many]  # all but the times
  options = main_module.make_pipeline_options(["--direct_num_workers", "8",
                                                "--direct_running_mode", "multi_threading"])
  assert main_module.in_process_workers(options) == 8
  assert main_module.in_process_workers(main_module.make_pipeline_options([])) == 1
