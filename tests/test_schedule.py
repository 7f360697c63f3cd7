"""Scheduled re-runs: fingerprints and --skip_if_unchanged, changes.csv, exit
codes, --fail_on_short and --result_file."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from typing import Dict

import pytest

from exemplar.transforms import fingerprint
from tests.conftest import make_tree, run_cli, write_image, noise_image

FLAGS = ["--samples_per_class", "2", "--image_size", "8", "8", "--seed", "5"]


def mtimes(folder: str) -> Dict[str, int]:
  found = {}
  for parent, dirs, names in os.walk(folder):
    for name in dirs + names:
      path = os.path.join(parent, name)
      found[os.path.relpath(path, folder)] = os.lstat(path).st_mtime_ns
  found["."] = os.stat(folder).st_mtime_ns
  return found


def read_rows(path: str):
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


# --- fingerprints (fast) --------------------------------------------------------


def test_the_input_fingerprint_sees_added_removed_renamed_and_rewritten_files(tmp_path):
  root = str(tmp_path / "tree")
  make_tree(root, {"a": 3, "b": 2}, size=(4, 4))
  classes = ["a", "b"]
  first = fingerprint.input_fingerprint(root, classes)
  assert first["files"] == 5
  assert fingerprint.input_fingerprint(root, classes) == first  # stable
  seen = {first["fingerprint"]}

  def changed() -> str:
    now = fingerprint.input_fingerprint(root, classes)["fingerprint"]
    assert now not in seen
    seen.add(now)
    return now

  open(os.path.join(root, "a", "notes.txt"), "w").write("not an image")
  assert fingerprint.input_fingerprint(root, classes)["fingerprint"] in seen  # not listed
  os.rename(os.path.join(root, "a", "img_000.jpg"), os.path.join(root, "a", "img_900.jpg"))
  changed()
  os.remove(os.path.join(root, "b", "img_001.png"))
  changed()
  path = os.path.join(root, "a", "img_001.png")
  stat = os.stat(path)
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # same bytes, rewritten
  changed()
  open(os.path.join(root, "b", "new.png"), "wb").write(b"x")
  changed()


def test_the_config_fingerprint_ignores_where_and_how_a_run_reports():
  base = {"seed": 1, "samples_per_class": 2, "output_dir": "/a"}
  same = dict(base, output_dir="/b", result_file="r.json", skip_if_unchanged=True)
  assert fingerprint.config_fingerprint(base, "1") == fingerprint.config_fingerprint(same, "1")
  assert fingerprint.config_fingerprint(base, "1") != fingerprint.config_fingerprint(
      dict(base, seed=2), "1")
  assert fingerprint.config_fingerprint(base, "1") != fingerprint.config_fingerprint(base, "2")


# --- whole runs ------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path) -> str:
  root = str(tmp_path / "images")
  make_tree(root, {"ant": 5, "bee": 4, "cat": 3}, size=(10, 10))
  return root


@pytest.mark.slow
def test_skip_if_unchanged_writes_nothing_and_a_changed_tree_runs(tree, tmp_path, capsys):
  out, result = str(tmp_path / "out"), str(tmp_path / "result.json")
  args = ["--input_dir", tree, "--output_dir", out, *FLAGS, "--skip_if_unchanged",
          "--overwrite", "--result_file", result]
  assert run_cli(args) == 0
  first = json.load(open(result))
  assert first["status"] == "done" and not first["skipped"]
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert summary["run"]["input_fingerprint"] == first["input_fingerprint"]
  assert summary["run"]["input_files"] == 12
  before = mtimes(out)
  time.sleep(0.05)
  capsys.readouterr()
  assert run_cli(args) == 0
  printed = capsys.readouterr().out
  assert printed == (f"exemplar: {out} is up to date (input and configuration "
                     "unchanged); nothing written\n")
  assert mtimes(out) == before  # not a file, not the folder itself
  skipped = json.load(open(result))
  assert skipped["status"] == "skipped" and skipped["skipped"] and skipped["exit_code"] == 0
  assert skipped["dataset_fingerprint"] == first["dataset_fingerprint"]
  # Other options: a new run (it needs --overwrite, given here).
  assert run_cli(args[:-6] + ["--seed", "6", "--skip_if_unchanged", "--overwrite"]) == 0
  assert mtimes(out) != before
  # A file added: a new run.
  write_image(os.path.join(tree, "bee", "new.png"),
              noise_image(__import__("numpy").random.default_rng(1), 10, 10), "PNG")
  before = mtimes(out)
  assert run_cli(args) == 0
  assert json.load(open(result))["status"] == "done"
  assert mtimes(out) != before


@pytest.mark.slow
def test_a_grown_tree_gives_the_right_changes_csv(tree, tmp_path, capsys):
  out = str(tmp_path / "out")
  args = ["--input_dir", tree, "--output_dir", out, "--samples_per_class", "all",
          "--image_size", "8", "8", "--splits", "train=60%,validation=40%", "--seed", "2"]
  assert run_cli(args) == 0
  assert not os.path.exists(os.path.join(out, "changes.csv"))  # nothing to compare with
  old = {r["relative_path"]: r for r in read_rows(os.path.join(out, "manifest.csv"))}
  removed = sorted(old)[0]
  os.remove(os.path.join(tree, removed))
  rng = __import__("numpy").random.default_rng(3)
  added = ["cat/x_new.png", "ant/y_new.png"]
  for relative in added:
    write_image(os.path.join(tree, relative), noise_image(rng, 10, 10), "PNG")
  capsys.readouterr()
  assert run_cli(args + ["--overwrite"]) == 0
  printed = capsys.readouterr().out
  rows = read_rows(os.path.join(out, "changes.csv"))
  by_kind = {}
  for row in rows:
    by_kind.setdefault(row["change"], []).append(row["relative_path"])
  assert sorted(by_kind["added"]) == sorted(added)
  assert by_kind["removed"] == [removed]
  assert "moved_split" not in by_kind  # percentage splits: no image changes split
  new = {r["relative_path"]: r for r in read_rows(os.path.join(out, "manifest.csv"))}
  moved = [p for p in set(old) & set(new) if old[p]["shard"] != new[p]["shard"]]
  assert sorted(by_kind.get("moved_shard", [])) == sorted(moved)
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert summary["changes"]["added"] == 2 and summary["changes"]["removed"] == 1
  assert summary["changes"]["compared_to"] == out
  assert "changes since the last dataset: 2 added, 1 removed" in printed
  # --compare_to another dataset, into a new folder.
  other = str(tmp_path / "other")
  shutil.copytree(out, other)
  fresh = str(tmp_path / "fresh")
  assert run_cli(args[:3] + [fresh] + args[4:] + ["--compare_to", other]) == 0
  assert read_rows(os.path.join(fresh, "changes.csv")) == []
  assert f"no changes since {other}" in capsys.readouterr().out


@pytest.mark.slow
def test_exit_codes_and_the_result_file(tree, tmp_path, capsys):
  os.makedirs(os.path.join(tree, "empty"))
  out, result = str(tmp_path / "out"), str(tmp_path / "r" / "result.json")
  args = ["--input_dir", tree, "--output_dir", out, *FLAGS, "--result_file", result]
  # A short (empty) class is reported, exit 0 ...
  assert run_cli(args) == 0
  data = json.load(open(result))
  assert data["status"] == "short" and data["classes_short"] == ["empty"]
  assert data["per_split"] == {"train": 6}
  assert data["per_class"] == {"ant": {"train": 2}, "bee": {"train": 2},
                               "cat": {"train": 2}, "empty": {"train": 0}}
  assert set(data) >= {"input_fingerprint", "config_fingerprint", "dataset_fingerprint",
                       "started", "finished", "duration_sec", "versions", "num_failed"}
  assert data["started"].endswith("Z") and data["duration_sec"] > 0
  # ... and 3 under --fail_on_short (the dataset is written all the same).
  assert run_cli(args + ["--overwrite", "--fail_on_short"]) == 3
  assert "class(es) short or empty (--fail_on_short): empty" in capsys.readouterr().err
  assert json.load(open(result))["exit_code"] == 3
  assert os.path.exists(os.path.join(out, "_SUCCESS"))
  # A refused run (a finished dataset, no --overwrite): 2, and said so.
  assert run_cli(args) == 2
  refused = json.load(open(result))
  assert refused["status"] == "refused" and refused["exit_code"] == 2
  assert "--overwrite" in refused["error"]
  # A usage error: 2.
  assert run_cli(args + ["--samples_per_class", "0"]) == 2
  # --compare_to something that is not a dataset: 2.
  assert run_cli(args + ["--overwrite", "--compare_to", str(tmp_path)]) == 2


def test_dataflow_job_id_line_is_not_silenced():
  from exemplar.main import configure_logging
  configure_logging()
  logger = logging.getLogger("apache_beam.runners.dataflow.internal.apiclient")
  assert logger.isEnabledFor(logging.INFO)
  assert not logging.getLogger("apache_beam.runners.worker").isEnabledFor(logging.INFO)
