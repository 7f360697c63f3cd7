"""A class yields k images whenever it has k decodable ones, even when more
picks fail than there are spares: more of the same seeded sample is drawn."""

import collections
import csv
import os

from tests.conftest import make_tree, run_cli
from transforms import sampling
from transforms.decoding import DecodeTask


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


def test_split_class_cuts_large_k_into_runs_with_shared_spares():
  from transforms.writing import split_class
  paths = [f"c/{i}" for i in range(14)]  # 10 wanted + 4 spares, seeded order
  whole = split_class("c", 3, paths, need=10, seen=50, run=10)
  assert whole == [DecodeTask("c", 3, paths, 10, 0, 50)]  # one task draws more
  runs = split_class("c", 3, paths, need=10, seen=50, run=4)
  assert [(t.first_rank, t.need) for t in runs] == [(0, 4), (4, 4), (8, 2)]
  assert [t.candidates for t in runs] == [
      paths[0:4] + paths[10:11], paths[4:8] + paths[11:12], paths[8:10] + paths[12:14]]
  assert all(t.seen == len(t.candidates) for t in runs)  # runs draw no more
  assert split_class("c", 3, paths[:2], need=10, seen=2, run=4) == [
      DecodeTask("c", 3, paths[:2], 2, 0, 2)]
  assert split_class("c", 3, [], need=1, seen=0, run=4) == []


def test_k_larger_than_a_shard_is_spread_over_shards_with_spares(tmp_path):
  root = str(tmp_path / "tree")
  make_tree(root, {"big": 16, "small": 3})
  order = corrupt_first_picks(root, "big", 1)
  outputs = []
  for name, extra in (("a", []), ("b", ["--direct_num_workers", "2",
                                          "--direct_running_mode", "multi_processing"])):
    out = str(tmp_path / name)
    # 13 images planned over 4 shards: runs of 4, so "big" is cut into 3.
    assert run_cli(["--input_dir", root, "--output_dir", out, "--samples_per_class", "10",
                    "--spares", "3", "--num_shards", "4", "--image_size", "16", "16"]
                   + extra) == 0
    outputs.append(out)
  manifest = read_csv(os.path.join(outputs[0], "manifest.csv"))
  big = [r for r in manifest if r["class_name"] == "big"]
  assert [int(r["rank"]) for r in big] == list(range(10))
  # The broken first pick is replaced by the first spare of its run.
  assert [r["relative_path"] for r in big] == order[1:4] + [order[10]] + order[4:10]
  per_shard = collections.Counter(r["shard"] for r in manifest)
  assert sorted(per_shard.values()) == [2, 3, 4, 4]  # runs of at most 4: big 4+4+2, small 3
  for name in sorted(os.listdir(outputs[0])):
    if name.startswith("exemplar-train") or name == "manifest.csv":
      assert (open(os.path.join(outputs[0], name), "rb").read()
              == open(os.path.join(outputs[1], name), "rb").read()), name
