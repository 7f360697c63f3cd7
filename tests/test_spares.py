"""A class yields k images whenever it has k decodable ones, even when more
picks fail than there are spares: more of the same seeded sample is drawn."""

import collections
import csv
import os

import pytest

from exemplar.transforms import sampling
from exemplar.transforms.decode_tasks import DecodeTask
from tests.conftest import make_tree, run_cli

pytestmark = pytest.mark.slow  # whole pipelines with broken files: seconds each


def corrupt_first_picks(root, class_name, count, seed=0):
  paths = sorted(f"{class_name}/{name}" for name in os.listdir(os.path.join(root, class_name)))
  order = [p for _, p in sampling.sample_paths(paths, seed, len(paths)).candidates]
  for relative in order[:count]:
    with open(os.path.join(root, relative), "wb") as f:
      f.write(b"not an image at all")
  return order


def read_csv(path):
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def test_more_failures_than_spares_still_gives_k(tmp_path):
  root = str(tmp_path / "tree")
  make_tree(root, {"many": 12, "other": 2})
  order = corrupt_first_picks(root, "many", 5)
  outputs = []
  for name in ("a", "b"):
    out = str(tmp_path / name)
    assert run_cli(["--input_dir", root, "--output_dir", out, "--samples_per_class", "2",
                    "--spares", "1", "--image_size", "16", "16"]) == 0
    outputs.append(out)
  manifest = read_csv(os.path.join(outputs[0], "manifest.csv"))
  picked = [r["relative_path"] for r in manifest if r["class_name"] == "many"]
  assert picked == order[5:7]  # the next two of the same seeded order
  errors = read_csv(os.path.join(outputs[0], "errors.csv"))
  assert sorted(r["relative_path"] for r in errors) == sorted(order[:5])
  for name in ("manifest.csv", "exemplar-train.tfrecord-00000-of-00001"):
    assert (open(os.path.join(outputs[0], name), "rb").read()
            == open(os.path.join(outputs[1], name), "rb").read())


def test_class_with_fewer_decodable_files_than_k_is_short(tmp_path):
  root = str(tmp_path / "tree")
  make_tree(root, {"few": 4})
  corrupt_first_picks(root, "few", 3)
  out = str(tmp_path / "out")
  assert run_cli(["--input_dir", root, "--output_dir", out, "--samples_per_class", "2",
                  "--spares", "0", "--image_size", "16", "16"]) == 0
  manifest = read_csv(os.path.join(out, "manifest.csv"))
  assert len(manifest) == 1
  import json
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert summary["classes_short"] == ["few"]
  assert summary["per_class"][0]["failed"] == 3


def test_class_tasks_run_consecutive_ranks_and_share_the_spares():
  from exemplar.transforms.writing import Run, class_tasks, shard_runs
  paths = [f"c/{i}" for i in range(14)]  # 10 planned + 4 spares, seeded order
  whole = class_tasks("c", 3, paths, shard_runs("train", 0, [0] * 10), seen=50)
  assert whole == [(0, DecodeTask("c", 3, paths, 10, 0, 50))]  # one task, all spares
  # Ranks 0-2 on shard 0, 3-5 on 1, 6-7 on 2, 8-9 on 3: four runs.
  runs = shard_runs("train", 0, [0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
  assert runs == [Run(0, 3, "train", 0, 0), Run(3, 3, "train", 0, 1),
                  Run(6, 2, "train", 0, 2), Run(8, 2, "train", 0, 3)]
  tasks = class_tasks("c", 3, paths, runs, seen=50)
  assert [(shard, t.first_rank, t.stride, t.need, t.spare_start, t.spare_stride)
          for shard, t in tasks] == [(0, 0, 1, 3, 10, 4), (1, 3, 1, 3, 11, 4),
                                     (2, 6, 1, 2, 12, 4), (3, 8, 1, 2, 13, 4)]
  assert [t.candidates for _, t in tasks] == [
      ["c/0", "c/1", "c/2", "c/10"], ["c/3", "c/4", "c/5", "c/11"],
      ["c/6", "c/7", "c/12"], ["c/8", "c/9", "c/13"]]
  assert all(t.seen == 50 for _, t in tasks)  # each may draw more of its sequence
  few = class_tasks("c", 3, paths[:3], shard_runs("train", 0, [0, 1, 2]), seen=3)
  assert [(t.first_rank, t.candidates, t.seen) for _, t in few] == [
      (0, ["c/0"], 0), (1, ["c/1"], 0), (2, ["c/2"], 0)]  # nothing more to draw
  assert class_tasks("c", 3, [], [], seen=0) == []


def test_k_over_several_shards_is_balanced_with_spares(tmp_path):
  root = str(tmp_path / "tree")
  make_tree(root, {"big": 16, "small": 3})
  order = corrupt_first_picks(root, "big", 1)
  outputs = []
  for name, extra in (("a", []), ("b", ["--direct_num_workers", "2",
                                          "--direct_running_mode", "multi_processing"])):
    out = str(tmp_path / name)
    # 13 images planned over 4 shards: "big" decodes as 4 tasks of
    # consecutive ranks (0-1, 2-3, 4-6, 7-9), with one spare each but the last.
    assert run_cli(["--input_dir", root, "--output_dir", out, "--samples_per_class", "10",
                    "--spares", "3", "--num_shards", "4", "--image_size", "16", "16"]
                   + extra) == 0
    outputs.append(out)
  manifest = read_csv(os.path.join(outputs[0], "manifest.csv"))
  big = sorted((r for r in manifest if r["class_name"] == "big"), key=lambda r: int(r["rank"]))
  assert [int(r["rank"]) for r in big] == list(range(10))
  # Task 0 (ranks 0-1) lost its first pick: its next candidate moves up and
  # its share of the spares (seeded position 10) fills rank 1.
  assert [r["relative_path"] for r in big] == [order[1], order[10]] + order[2:10]
  # Record order is (rank, label), cut into 4 consecutive shards of 3-4.
  assert [(r["class_name"], int(r["rank"])) for r in manifest][:6] == [
      ("big", 0), ("small", 0), ("big", 1), ("small", 1), ("big", 2), ("small", 2)]
  per_shard = collections.Counter(r["shard"] for r in manifest)
  assert [per_shard[s] for s in sorted(per_shard)] == [4, 3, 3, 3]
  for name in sorted(os.listdir(outputs[0])):
    if name.startswith("exemplar-train") or name == "manifest.csv":
      assert (open(os.path.join(outputs[0], name), "rb").read()
              == open(os.path.join(outputs[1], name), "rb").read()), name


def test_more_shards_than_spares_still_gives_k_and_balanced_shards(tmp_path):
  root = str(tmp_path / "tree")
  make_tree(root, {"a": 10, "b": 1, "c": 20, "d": 1})
  corrupt_first_picks(root, "c", 1)
  out = str(tmp_path / "out")
  assert run_cli(["--input_dir", root, "--output_dir", out, "--samples_per_class", "10",
                  "--spares", "2", "--num_shards", "2", "--image_size", "8", "8"]) == 0
  manifest = read_csv(os.path.join(out, "manifest.csv"))
  per_class = collections.Counter(r["class_name"] for r in manifest)
  assert per_class == {"a": 10, "b": 1, "c": 10, "d": 1}  # c's broken pick replaced
  assert sorted(int(r["rank"]) for r in manifest if r["class_name"] == "c") == list(range(10))
  assert sorted(collections.Counter(r["shard"] for r in manifest).values()) == [11, 11]
  out5 = str(tmp_path / "out5")
  assert run_cli(["--input_dir", root, "--output_dir", out5, "--samples_per_class", "5",
                  "--spares", "1", "--num_shards", "10", "--image_size", "8", "8"]) == 0
  manifest = read_csv(os.path.join(out5, "manifest.csv"))
  assert collections.Counter(r["class_name"] for r in manifest)["c"] == 5


def test_records_of_a_split_are_in_rank_label_order_across_shards(tmp_path):
  import tensorflow as tf
  root, out = str(tmp_path / "tree"), str(tmp_path / "out")
  make_tree(root, {"a": 45, "b": 3}, size=(8, 8))
  assert run_cli(["--input_dir", root, "--output_dir", out, "--samples_per_class", "40",
                  "--num_shards", "2", "--image_size", "8", "8"]) == 0
  manifest = read_csv(os.path.join(out, "manifest.csv"))
  key = {r["relative_path"]: (int(r["rank"]), int(r["label"])) for r in manifest}
  order = []
  for shard in sorted({r["shard"] for r in manifest}):
    records = tf.data.TFRecordDataset(os.path.join(out, shard))
    features = [tf.train.Example.FromString(r.numpy()).features.feature for r in records]
    order += [key[f["image/relative_path"].bytes_list.value[0].decode()] for f in features]
    assert len(features) in (21, 22), shard
  assert order == sorted(order) and len(order) == 43
  assert order[:6] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
