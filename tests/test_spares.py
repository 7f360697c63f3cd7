"""A class yields k images whenever it has k decodable ones, even when more
picks fail than there are spares: more of the same seeded sample is drawn."""

import csv
import os

from tests.conftest import make_tree, run_cli
from transforms import sampling


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
