"""Same input and seed -> the same bytes, whatever the runner, workers or tree copy.

Real runs through the CLI on a small tree, plus a Beam-level check that the
per-class combine gives the same sample however the listing is split.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import shutil
from typing import Dict, List

import pytest

from tests.conftest import make_tree, run_cli, write_image
from exemplar.transforms import listing, sampling

pytestmark = pytest.mark.slow  # whole runs compared byte for byte: seconds each

SEED = 7
K = 2
# 'date' has fewer files than K; 'apple' has a nested folder.
COUNTS = {"apple": 5, "banana": 3, "cherry": 4, "date": 1}
COMPARED = ["manifest.csv", "class_names.txt", "errors.csv", "dataset_info.json",
            "features.json", "label.labels.txt"]


def build_tree(root: str) -> None:
  make_tree(root, COUNTS, seed=1, size=(24, 32))
  import numpy as np
  rng = np.random.default_rng(5)
  for name in ("nested 1.png", "nested 2.jpg"):
    fmt = "PNG" if name.endswith("png") else "JPEG"
    write_image(os.path.join(root, "apple", "deep", "er", name),
                rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), fmt)


def run(root: str, out: str, *extra: str) -> str:
  argv = ["--input_dir", root, "--output_dir", out, "--samples_per_class", str(K),
          "--seed", str(SEED), "--image_size", "16", "20", "--num_shards", "3"]
  assert run_cli(argv + list(extra)) == 0
  return out


def output_bytes(out: str) -> Dict[str, bytes]:
  """The shards, manifest and class names of a run, by file name."""
  names = sorted(os.path.basename(p) for p in glob.glob(
      os.path.join(out, "exemplar-train.tfrecord-*")))
  assert names == [f"exemplar-train.tfrecord-{i:05d}-of-00003" for i in range(3)]
  return {name: open(os.path.join(out, name), "rb").read() for name in names + COMPARED}


def manifest(out: str) -> List[Dict[str, str]]:
  with open(os.path.join(out, "manifest.csv"), newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def summary_without_paths(out: str) -> Dict:
  summary = json.load(open(os.path.join(out, "summary.json")))
  summary["config"].pop("output_dir")
  run = summary.pop("run")  # its times differ; its fingerprints may not
  summary["fingerprints"] = {k: v for k, v in run.items() if k.endswith("fingerprint")}
  return summary


def records(out: str):
  """Every record of every shard, parsed, in file order, by shard."""
  import tensorflow as tf
  by_shard = {}
  for path in sorted(glob.glob(os.path.join(out, "exemplar-train.tfrecord-*"))):
    parsed = []
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
      example = tf.train.Example.FromString(raw)
      parsed.append({key: feature for key, feature in example.features.feature.items()})
    by_shard[os.path.basename(path)] = parsed
  return by_shard


def expected_picks(root: str, seed: int) -> Dict[str, List[str]]:
  """The seeded bottom-k of each class, computed directly from sampling.py."""
  picks = {}
  for class_name in listing.list_class_folders(root):
    paths = list(listing.walk_class_folder(root, class_name))
    picks[class_name] = [p for _, p in sampling.sample_paths(paths, seed, K).candidates]
  return picks


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp("det") / "images")
  build_tree(root)
  return root


@pytest.fixture(scope="module")
def default_run(tree, tmp_path_factory) -> str:
  return run(tree, str(tmp_path_factory.mktemp("det_default") / "out"))


def test_picks_are_the_seeded_bottom_k(tree, default_run):
  rows = manifest(default_run)
  got: Dict[str, List[str]] = {}
  for row in sorted(rows, key=lambda r: (int(r["label"]), int(r["rank"]))):
    got.setdefault(row["class_name"], []).append(row["relative_path"])
  assert got == expected_picks(tree, SEED)
  assert open(os.path.join(default_run, "class_names.txt")).read() == (
      "apple\nbanana\ncherry\ndate\n")


def test_load_dataset_file_paths_follow_record_order_across_shards(default_run):
  from exemplar import load_dataset
  ds = load_dataset(default_run, batch_size=None, shuffle=False, dtype="uint8", verbose=False)
  in_records = [r["image/filename"].bytes_list.value[0].decode()
                for shard in records(default_run).values() for r in shard]
  assert len(in_records) == 3 * K + 1
  assert ds.file_paths == in_records
  assert len(list(ds)) == len(in_records) == len(manifest(default_run))


def test_k_larger_than_a_class_gives_all_its_files_and_lists_it_short(tree, default_run):
  rows = manifest(default_run)
  assert [r["relative_path"] for r in rows if r["class_name"] == "date"] == [
      "date/img_000.jpg"]
  summary = json.load(open(os.path.join(default_run, "summary.json")))
  assert summary["classes_short"] == ["date"]
  per_class = {c["class_name"]: c for c in summary["per_class"]}
  assert per_class["date"]["files_seen"] == 1 and per_class["date"]["sampled"] == 1
  assert per_class["apple"]["files_seen"] == 7 and per_class["apple"]["sampled"] == K


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["multi_processing", "multi_threading"])
def test_same_bytes_with_two_workers(tree, default_run, tmp_path, mode):
  out = run(tree, str(tmp_path / "out"), "--direct_num_workers", "2",
            "--direct_running_mode", mode)
  expected, got = output_bytes(default_run), output_bytes(out)
  assert list(got) == list(expected)
  for name in expected:
    assert got[name] == expected[name], name
  assert summary_without_paths(out) == summary_without_paths(default_run)


def test_same_bytes_when_run_again_with_runner_named_direct(tree, default_run, tmp_path):
  out = run(tree, str(tmp_path / "out"), "--runner", "DirectRunner")
  assert output_bytes(out) == output_bytes(default_run)


def test_a_copy_of_the_tree_gives_the_same_picks_and_records(tree, default_run, tmp_path):
  copy = str(tmp_path / "elsewhere" / "copied images")
  shutil.copytree(tree, copy)
  out = run(copy, str(tmp_path / "out"))

  def strip_source(rows):
    return [{k: v for k, v in row.items() if k != "source_path"} for row in rows]
  assert strip_source(manifest(out)) == strip_source(manifest(default_run))
  assert all(row["source_path"].startswith(copy + os.sep) for row in manifest(out))

  ours, theirs = records(out), records(default_run)
  assert list(ours) == list(theirs)
  for shard in ours:
    assert len(ours[shard]) == len(theirs[shard])
    for a, b in zip(ours[shard], theirs[shard]):
      assert a.pop("image/filename") != b.pop("image/filename")
      assert a == b, shard
  assert open(os.path.join(out, "class_names.txt")).read() == open(
      os.path.join(default_run, "class_names.txt")).read()


def test_a_different_seed_changes_the_picks(tree, default_run, tmp_path):
  out = str(tmp_path / "out")
  assert run_cli(["--input_dir", tree, "--output_dir", out, "--samples_per_class", str(K),
                  "--seed", str(SEED + 1), "--image_size", "16", "20",
                  "--num_shards", "3"]) == 0
  picks = {(r["class_name"], r["relative_path"]) for r in manifest(out)}
  before = {(r["class_name"], r["relative_path"]) for r in manifest(default_run)}
  assert picks != before
  expected = expected_picks(tree, SEED + 1)
  assert picks == {(c, p) for c, paths in expected.items() for p in paths}
  # The short class keeps its only file whatever the seed.
  assert ("date", "date/img_000.jpg") in picks


# --- the combine step, in a real Beam pipeline ------------------------------


def test_combine_gives_the_same_sample_for_any_split_and_order():
  import random

  import apache_beam as beam
  from apache_beam.runners.portability.fn_api_runner import FnApiRunner
  from apache_beam.testing.test_pipeline import TestPipeline
  from apache_beam.testing.util import assert_that, equal_to

  capacity = 4
  files = {c: [f"{c}/sub/{i:04d}.jpg" for i in range(n)]
           for c, n in {"x": 200, "y": 3, "z": 57}.items()}
  whole = {c: sampling.sample_paths(paths, SEED, capacity) for c, paths in files.items()}
  rng = random.Random(0)

  def partials(parts: int):
    """Each class's listing cut into `parts` random pieces, sampled apart."""
    out = []
    for c, paths in files.items():
      paths = list(paths)
      rng.shuffle(paths)
      cuts = sorted(rng.randint(0, len(paths)) for _ in range(parts - 1))
      bounds = [0] + cuts + [len(paths)]
      out += [(c, sampling.sample_paths(paths[a:b], SEED, capacity))
              for a, b in zip(bounds, bounds[1:])]
    rng.shuffle(out)
    return out

  expected = [(c, (s.seen, s.candidates)) for c, s in whole.items()]
  with TestPipeline(runner=FnApiRunner()) as p:
    for name, parts in [("one", 1), ("few", 3), ("many", 25), ("many_again", 25)]:
      merged = (
          p
          | f"Create_{name}" >> beam.Create(partials(parts), reshuffle=True)
          | f"Merge_{name}" >> beam.CombinePerKey(sampling.SeededSampleFn(capacity))
          | f"Plain_{name}" >> beam.MapTuple(
              lambda c, s: (c, (s.seen, [tuple(x) for x in s.candidates]))))
      assert_that(merged, equal_to(expected), label=f"Check_{name}")
