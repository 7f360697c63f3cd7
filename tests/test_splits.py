"""Stored splits: disjoint per-class picks, hash-stable fractions, TFDS splits,
prefix-balanced record order, and the readers that take them back."""

from __future__ import annotations

import collections
import csv
import json
import os
import random
import shutil
from typing import Dict, List

import numpy as np
import pytest

from exemplar.transforms import sample_images, sampling, splits, writing
from exemplar.transforms.decoding import ImageSettings
from tests.conftest import make_tree, run_cli

SETTINGS = ImageSettings(height=16, width=16)


def read_manifest(out: str) -> List[Dict[str, str]]:
  with open(os.path.join(out, "manifest.csv"), newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def picks_by_split(out: str) -> Dict[str, Dict[str, List[str]]]:
  """{split: {class: [relative path, in rank order]}} from manifest.csv."""
  out_map: Dict[str, Dict[str, List[str]]] = collections.defaultdict(
      lambda: collections.defaultdict(list))
  for row in sorted(read_manifest(out), key=lambda r: int(r["rank"])):
    out_map[row["split"]][row["class_name"]].append(row["relative_path"])
  return out_map


# --- parsing and validation (pure) -------------------------------------------


def test_parse_counts_and_fractions():
  assert splits.parse_splits("train=5, validation=2") == (
      splits.SplitSpec("train", count=5), splits.SplitSpec("validation", count=2))
  assert splits.parse_splits({"train": "80%", "test": "20%"}) == (
      splits.SplitSpec("train", fraction=0.8), splits.SplitSpec("test", fraction=0.2))
  assert splits.parse_splits([("a", 1)]) == (splits.SplitSpec("a", count=1),)
  assert splits.describe(splits.parse_splits("train=12.5%")) == "train=12.5%"


@pytest.mark.parametrize("text,message", [
    ("train=5,validation=20%", "not a mix"),
    ("train=80%,validation=30%", "more than 100%"),
    ("train=5,train=2", "twice"),
    ("all=5", "TFDS"),
    ("tr ain=5", "TFDS"),
    ("train=0", "integer >= 1"),
    ("train=-3", "integer >= 1"),
    ("train=0%", "above 0"),
    ("train", "NAME=COUNT"),
    ("train=5,", "empty entry"),
    ("", "empty"),
])
def test_bad_splits_are_value_errors(text, message):
  with pytest.raises(ValueError, match=message):
    splits.parse_splits(text)


def test_sample_args_combine_as_documented():
  plan = sample_images.check_sample_args(1, 4, 0, "train=1,validation=2")
  assert plan.k == 3 and plan.describe() == "train=1,validation=2"
  assert sample_images.check_sample_args(1, 4, 0, "train=4").specs == ()  # plain k=4
  assert sample_images.check_sample_args("10%", 4, 0).by_hash
  assert sample_images.check_sample_args("all", 4, 0, "train=80%,validation=20%").k is None
  with pytest.raises(ValueError, match="not both"):
    sample_images.check_sample_args(5, 4, 0, "train=1")
  with pytest.raises(ValueError, match="bound fraction splits"):
    sample_images.check_sample_args(5, 4, 0, max_per_class=3)
  with pytest.raises(ValueError, match="above max_per_class"):
    sample_images.check_sample_args("50%", 4, 0, min_per_class=4, max_per_class=3)


# --- fraction splits: each image placed by its own hash ----------------------


def fraction_sample(paths: List[str], plan, seed: int = 0):
  sample = sampling.sample_paths(paths, seed, sample_images.UNBOUNDED)
  return sample_images.to_class_sample("c", sample, "/root", plan, False)


def split_of_each(class_sample) -> Dict[str, str]:
  planned = dict(class_sample.splits)
  return {p.relative_path: p.split for p in class_sample.picks if p.rank < planned[p.split]}


def test_a_fraction_split_never_moves_an_image_when_files_come_and_go():
  plan = sample_images.check_sample_args("all", 0, 0, "train=70%,validation=20%,test=10%")
  rng = random.Random(5)
  paths = [f"c/img_{i:04d}.jpg" for i in range(400)]
  before = split_of_each(fraction_sample(paths, plan))
  assert set(before) == set(paths)  # the fractions cover every file
  counts = collections.Counter(before.values())
  assert 240 <= counts["train"] <= 320 and 50 <= counts["validation"] <= 110
  grown = [p for p in paths if rng.random() > 0.2] + [f"c/new_{i}.png" for i in range(150)]
  after = split_of_each(fraction_sample(grown, plan))
  assert set(after) == set(grown)
  assert all(after[p] == before[p] for p in set(before) & set(after))


def test_topped_up_images_never_change_split_either():
  plan = sample_images.check_sample_args("all", 0, 0, "train=40%,validation=10%",
                                         min_per_class=3)
  rng = random.Random(2)
  for trial in range(30):
    paths = [f"c/{trial}_{i}.jpg" for i in range(rng.randint(1, 12))]
    before = split_of_each(fraction_sample(paths, plan))
    grown = paths + [f"c/{trial}_new_{i}.jpg" for i in range(rng.randint(1, 8))]
    after = split_of_each(fraction_sample(grown, plan))
    assert all(after[p] == before[p] for p in set(before) & set(after)), trial


def test_split_names_are_unique_case_aside_and_yaml_forms_parse():
  with pytest.raises(ValueError, match="twice"):
    splits.parse_splits("train=5,Train=2")
  with pytest.raises(ValueError, match="TFDS"):
    splits.parse_splits("ALL=2")
  with pytest.raises(ValueError, match="not a string"):
    splits.parse_splits({False: 5})
  assert splits.parse_splits(["train=5", "validation=2"]) == splits.parse_splits(
      "train=5,validation=2")


def test_max_and_min_per_class_bound_a_fraction_split():
  paths = [f"c/{i:03d}.jpg" for i in range(200)]
  capped = fraction_sample(paths, sample_images.check_sample_args(
      "all", 2, 0, "train=80%,validation=20%", max_per_class=5))
  assert dict(capped.splits) == {"train": 5, "validation": 5}
  whole = split_of_each(fraction_sample(paths, sample_images.check_sample_args(
      "all", 0, 0, "train=80%,validation=20%")))
  # The capped picks are each split's first in seeded order, in their split.
  assert all(whole[path] == split for path, split in split_of_each(capped).items())
  spares = [p for p in capped.picks if p.rank >= 5]
  assert len(spares) == 4 and all(whole[p.relative_path] == p.split for p in spares)
  # 10% of 6 files is about 0.6: min_per_class tops up from files in no split.
  small = fraction_sample(paths[:6], sample_images.check_sample_args(
      "10%", 0, 0, min_per_class=2))
  assert dict(small.splits) == {"train": 2} and dict(small.targets) == {"train": 2}


# --- (rank, label) order cut into shards ---------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_shards_are_consecutive_runs_of_rank_then_label_order(seed):
  rng = random.Random(seed)
  names = [f"class_{i}" for i in range(rng.randint(1, 12))]
  planned = {name: rng.choice([0, 1, 2, 3, 7, 20]) for name in names}
  fixed = rng.choice([None, 1, 2, 3, 5])
  layout = writing.split_layout("train", planned, names, fixed, SETTINGS)
  shard_of = {}
  for label, name in enumerate(names):
    for rank, shard in enumerate(writing.rank_shards(layout, label, planned[name])):
      shard_of[rank, label] = shard
  order = sorted(shard_of)  # (rank, label): the split's record order
  shards = [shard_of[key] for key in order]
  assert shards == sorted(shards)  # shards are consecutive runs of that order
  sizes = collections.Counter(shards)
  if len(order) >= layout.num_shards:
    assert len(sizes) == layout.num_shards  # none empty
    assert max(sizes.values()) - min(sizes.values()) <= 1


def test_count_split_tasks_never_share_a_candidate():
  plan = sample_images.check_sample_args(1, 3, 0, "train=2,validation=3")
  paths = [f"c/{i}.jpg" for i in range(20)]
  sample = sample_images.to_class_sample(
      "c", sampling.sample_paths(paths, 0, plan.capacity), "/r", plan, True)
  layouts = {name: writing.split_layout(name, {"c": n}, ["c"], 2, SETTINGS)
             for name, n in sample.splits}
  tasks = writing.sample_tasks(sample, 0, layouts)
  used = [path for _, task in tasks for path in task.candidates]
  assert len(used) == len(set(used)) == 5 + 3  # picks and every spare, once
  seeded = [p.relative_path for p in sample.picks]
  # train: ranks 0 and 1 on shards 0 and 1; validation: ranks 0-1 on shard 0,
  # rank 2 on shard 1. Each task starts at its ranks' seeded positions.
  assert [(shard, t.split, t.need, t.candidates[:t.need]) for shard, t in tasks] == [
      (0, "train", 1, seeded[0:1]), (1, "train", 1, seeded[1:2]),
      (0, "validation", 2, seeded[2:4]), (1, "validation", 1, seeded[4:5])]


# --- whole runs -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp("splits") / "images")
  make_tree(root, {"ant": 9, "bee": 4, "cat": 7, "dog": 2, "eel": 8}, seed=4, size=(20, 24))
  return root


@pytest.fixture(scope="module")
def two_splits(tree, tmp_path_factory) -> str:
  out = str(tmp_path_factory.mktemp("two") / "out")
  assert run_cli(["--input_dir", tree, "--output_dir", out, "--splits",
                  "train=1,validation=3", "--num_shards", "2", "--seed", "3",
                  "--image_size", "16", "16"]) == 0
  return out


@pytest.mark.slow
def test_count_splits_are_disjoint_exact_and_nest_with_a_plain_run(tree, two_splits,
                                                                   tmp_path):
  by_split = picks_by_split(two_splits)
  for name in ("ant", "bee", "cat", "eel"):
    assert len(by_split["train"][name]) == 1 and len(by_split["validation"][name]) == 3
    assert not set(by_split["train"][name]) & set(by_split["validation"][name])
  # dog has 2 files: train gets 1, validation the other, and is short there.
  assert (len(by_split["train"]["dog"]), len(by_split["validation"]["dog"])) == (1, 1)
  summary = json.load(open(os.path.join(two_splits, "summary.json")))
  assert [(s["name"], s["num_examples"], s["classes_short"]) for s in summary["splits"]] == [
      ("train", 5, []), ("validation", 13, ["dog"])]
  assert summary["classes_short"] == ["dog"]
  assert sorted(os.path.basename(n) for n in os.listdir(two_splits) if ".tfrecord-" in n) == [
      "exemplar-train.tfrecord-00000-of-00002", "exemplar-train.tfrecord-00001-of-00002",
      "exemplar-validation.tfrecord-00000-of-00002",
      "exemplar-validation.tfrecord-00001-of-00002"]
  # The train pick is a plain k=1 run's pick; train+validation a plain k=4's.
  for k, wanted in ((1, lambda c: by_split["train"][c]),
                    (4, lambda c: by_split["train"][c] + by_split["validation"][c])):
    plain = str(tmp_path / f"k{k}")
    assert run_cli(["--input_dir", tree, "--output_dir", plain, "--samples_per_class",
                    str(k), "--seed", "3", "--image_size", "16", "16"]) == 0
    assert {c: v for c, v in picks_by_split(plain)["train"].items()} == {
        c: wanted(c) for c in by_split["train"]}


@pytest.mark.slow
def test_tfds_reads_each_split_and_any_prefix_is_balanced(two_splits):
  import tensorflow_datasets as tfds
  builder = tfds.builder_from_directory(two_splits)
  assert set(builder.info.splits) == {"train", "validation"}
  assert builder.info.splits["validation"].num_examples == 13
  assert builder.info.splits["validation"].num_shards == 2
  validation = [(int(e["label"]), e["image/relative_path"].numpy().decode())
                for e in builder.as_dataset(split="validation")]
  rows = {r["relative_path"]: r for r in read_manifest(two_splits) if r["split"] == "validation"}
  assert sorted(p for _, p in validation) == sorted(rows)
  # Every first pick of every class before any second pick: (rank, label) order.
  order = [(int(rows[p]["rank"]), label) for label, p in validation]
  assert order == sorted(order)
  prefix = [int(label) for label in tfds.as_numpy(builder.as_dataset(
      split="validation[:5]").map(lambda e: e["label"]))]
  assert sorted(prefix) == [0, 1, 2, 3, 4]  # the first 5 records: one per class
  train = builder.as_dataset(split="train")
  assert sorted(int(e["label"]) for e in train) == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_load_dataset_subset_both_reads_the_stored_splits(two_splits, capsys):
  import exemplar
  train, val = exemplar.load_dataset(two_splits, subset="both", seed=1, batch_size=4)
  assert capsys.readouterr().out == ("Found 18 files belonging to 5 classes.\n"
                                     "Using 5 files for training.\n"
                                     "Using 13 files for validation.\n")
  by_split = picks_by_split(two_splits)
  assert sorted(os.path.relpath(p, os.path.dirname(p) + "/..") for p in val.file_paths) == sorted(
      p for paths in by_split["validation"].values() for p in paths)
  assert len(train) == 2 and len(val) == 4
  images, labels = next(iter(val))
  assert images.shape == (4, 16, 16, 3) and images.dtype.name == "float32"
  assert labels.dtype.name == "int32"


@pytest.mark.slow
def test_fraction_splits_convert_a_tree_and_no_image_moves_when_it_grows(tree, tmp_path):
  root = str(tmp_path / "tree")
  shutil.copytree(tree, root)
  out = str(tmp_path / "out")
  flags = ["--input_dir", root, "--output_dir", out, "--splits",
           "train=75%,validation=25%", "--samples_per_class", "all",
           "--image_size", "16", "16", "--seed", "9"]
  assert run_cli(flags) == 0
  first = {r["relative_path"]: r["split"] for r in read_manifest(out)}
  assert len(first) == 9 + 4 + 7 + 2 + 8  # every file, each in one split
  assert set(first.values()) == {"train", "validation"}
  os.remove(os.path.join(root, sorted(first)[0]))
  make_tree(os.path.join(root, "_new"), {"x": 0})  # nothing: a stray empty folder
  shutil.rmtree(os.path.join(root, "_new"))
  make_tree(str(tmp_path / "more"), {"ant": 6, "cat": 5}, seed=8, size=(20, 24))
  for name in ("ant", "cat"):
    for f in os.listdir(tmp_path / "more" / name):
      shutil.copy(tmp_path / "more" / name / f, os.path.join(root, name, "new_" + f))
  assert run_cli(flags + ["--overwrite"]) == 0
  second = {r["relative_path"]: r["split"] for r in read_manifest(out)}
  assert len(second) == len(first) - 1 + 11
  assert all(second[p] == first[p] for p in set(first) & set(second))
  import tensorflow_datasets as tfds
  builder = tfds.builder_from_directory(out)
  assert (builder.info.splits["train"].num_examples
          + builder.info.splits["validation"].num_examples) == len(second)


@pytest.mark.slow
def test_proportional_sample_with_bounds(tree, tmp_path):
  out = str(tmp_path / "out")
  assert run_cli(["--input_dir", tree, "--output_dir", out, "--samples_per_class", "50%",
                  "--min_per_class", "2", "--max_per_class", "3",
                  "--image_size", "16", "16"]) == 0
  per_class = collections.Counter(r["class_name"] for r in read_manifest(out))
  assert all(2 <= n <= 3 for n in per_class.values()), per_class
  assert set(per_class) == {"ant", "bee", "cat", "dog", "eel"}


@pytest.mark.parametrize("flags,message", [
    (["--splits", "train=1,validation=2%"], "--splits: splits must be all counts"),
    (["--splits", "train=1", "--samples_per_class", "3"], "not both"),
    (["--samples_per_class", "3", "--max_per_class", "2"], "--min_per_class/--max_per_class"),
    (["--samples_per_class", "150%"], "--samples_per_class"),
])
def test_bad_split_flags_are_usage_errors(flags, message, capsys, tmp_path):
  assert run_cli(["--output_dir", str(tmp_path / "o"), *flags]) == 2
  assert message in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "o")


@pytest.mark.slow
def test_inspect_names_the_splits_and_verify_accepts_them(two_splits, capsys):
  from exemplar.inspect_cli import main as inspect_main
  assert inspect_main([two_splits, "--verify"]) == 0
  printed = capsys.readouterr().out
  assert "splits             train=1,validation=3" in printed
  assert "train: 5 examples, 2 shards, validation: 13 examples, 2 shards, 1 classes short" in printed
  assert "exemplar-validation.tfrecord-00001-of-00002" in printed
  assert "verify: OK" in printed


@pytest.mark.slow
def test_keras_fit_on_the_stored_splits_as_a_tutorial_writes_it(two_splits):
  import keras
  from exemplar import load_dataset
  train_ds = load_dataset(two_splits, batch_size=4, seed=2)
  val_ds = load_dataset(two_splits, subset="validation", batch_size=4, seed=2)
  model = keras.Sequential([
      keras.Input(shape=(16, 16, 3)),
      keras.layers.Rescaling(1. / 255),
      keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
      keras.layers.GlobalAveragePooling2D(),
      keras.layers.Dense(len(train_ds.class_names)),
  ])
  model.compile(optimizer="adam",
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  history = model.fit(train_ds, validation_data=val_ds, epochs=1, verbose=0)
  assert np.isfinite(history.history["val_loss"][0])
  assert model.predict(val_ds, verbose=0).shape == (13, 5)


@pytest.mark.slow
def test_inspect_json_is_one_document(two_splits, capsys):
  from exemplar.inspect_cli import main as inspect_main
  capsys.readouterr()
  assert inspect_main([two_splits, "--json", "--verify"]) == 0
  doc = json.loads(capsys.readouterr().out)
  assert doc["verify"]["ok"] and doc["verify"]["report"][-1].startswith("verify: OK")
  assert [s["name"] for s in doc["summary"]["splits"]] == ["train", "validation"]
  assert len(doc["shards"]) == 4 and doc["exit_code"] == 0
  assert doc["class_names"] == ["ant", "bee", "cat", "dog", "eel"]


@pytest.mark.slow
def test_a_split_of_no_image_is_left_out_of_the_tfds_metadata(tree, tmp_path):
  out = str(tmp_path / "out")
  assert run_cli(["--input_dir", tree, "--output_dir", out, "--splits", "train=9,validation=2",
                  "--image_size", "16", "16"]) == 0
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert [(s["name"], s["num_examples"]) for s in summary["splits"]] == [
      ("train", 30), ("validation", 0)]
  assert not [n for n in os.listdir(out) if n.startswith("exemplar-validation")]
  import tensorflow_datasets as tfds
  builder = tfds.builder_from_directory(out)
  assert list(builder.info.splits) == ["train"]
  assert sum(1 for _ in builder.as_dataset(split="train")) == 30
