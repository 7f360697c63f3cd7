"""A whole exemplar run through the CLI, read back by real readers."""

import csv
import json
import os

import numpy as np
import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # whole CLI runs: seconds each


def test_cli_run_reads_back_through_load_dataset_and_tfds(small_tree, tmp_path, capsys):
  out = str(tmp_path / "out")
  assert run_cli(["--input_dir", small_tree, "--output_dir", out,
                  "--samples_per_class", "2", "--image_size", "32", "48"]) == 0
  printed = capsys.readouterr().out
  assert "6 images from 3 classes" in printed and out in printed

  from exemplar import load_dataset
  ds = load_dataset(out, batch_size=None, shuffle=False, dtype="uint8", verbose=False)
  assert ds.class_names == ["apple", "banana", "cherry"]
  pairs = [(image.numpy(), int(label)) for image, label in ds]
  assert sorted(label for _, label in pairs) == [0, 0, 1, 1, 2, 2]
  assert all(image.shape == (32, 48, 3) and image.dtype == np.uint8 for image, _ in pairs)

  import tensorflow_datasets as tfds
  builder = tfds.builder_from_directory(out)
  assert builder.info.features["label"].names == ["apple", "banana", "cherry"]
  examples = list(builder.as_dataset(split="train").as_numpy_iterator())
  assert len(examples) == 6
  by_name = {e["image/filename"].decode(): e for e in examples}
  manifest = list(csv.DictReader(open(os.path.join(out, "manifest.csv"))))
  assert {row["source_path"] for row in manifest} == set(by_name)
  for row in manifest:
    example = by_name[row["source_path"]]
    assert example["label"] == int(row["label"])
    assert example["image/class_name"].decode() == row["class_name"]
    assert example["image/sha256"].decode() == row["sha256"]

  summary = json.load(open(os.path.join(out, "summary.json")))
  assert [c["files_seen"] for c in summary["per_class"]] == [5, 3, 4]
  assert summary["classes_short"] == []
  assert open(os.path.join(out, "class_names.txt")).read() == "apple\nbanana\ncherry\n"
  assert os.path.exists(os.path.join(out, "_SUCCESS"))
  assert not any(name.startswith(".") for name in os.listdir(out))


def test_default_and_direct_runner_never_try_prism(small_tree, tmp_path):
  """Beam 2.77's DirectRunner tries Prism first, which downloads a binary; ours
  must not, whether the runner is left out or named DirectRunner."""
  import subprocess
  import sys
  code = (
      "import sys\n"
      "from exemplar.main import main\n"
      "for i, extra in enumerate([[], ['--runner', 'DirectRunner']]):\n"
      f"  assert main(['--input_dir', {small_tree!r}, '--output_dir', "
      f"{str(tmp_path)!r} + '/out%d' % i, '--image_size', '8', '8'] + extra) == 0\n"
      "bad = [m for m in sys.modules if 'prism' in m]\n"
      "assert not bad, bad\n"
      "print('no prism')\n")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "no prism" in done.stdout
  first = open(os.path.join(tmp_path, "out0", "exemplar-train.tfrecord-00000-of-00001"), "rb").read()
  second = open(os.path.join(tmp_path, "out1", "exemplar-train.tfrecord-00000-of-00001"), "rb").read()
  assert first == second


def test_every_file_mode_is_byte_identical_across_runners_and_shard_counts(tmp_path):
  """--samples_per_class all decodes and writes each shard in one step; the
  result must not depend on the runner, and every file lands exactly once."""
  from tests.conftest import make_tree
  root = str(tmp_path / "tree")
  relative = make_tree(root, {"a": 7, "b": 5, "c": 9}, size=(24, 24))
  outputs = {}
  for name, extra in (("inproc", []),
                      ("multi", ["--direct_num_workers", "2",
                                 "--direct_running_mode", "multi_processing"])):
    out = str(tmp_path / name)
    assert run_cli(["--input_dir", root, "--output_dir", out, "--samples_per_class", "all",
                    "--num_shards", "4", "--image_size", "16", "16"] + extra) == 0
    outputs[name] = out
  names = sorted(n for n in os.listdir(outputs["inproc"]) if n.startswith("exemplar-train"))
  assert len(names) == 4
  for name in names + ["manifest.csv", "class_names.txt"]:
    assert (open(os.path.join(outputs["inproc"], name), "rb").read()
            == open(os.path.join(outputs["multi"], name), "rb").read()), name
  manifest = list(csv.DictReader(open(os.path.join(outputs["inproc"], "manifest.csv"))))
  assert sorted(row["relative_path"] for row in manifest) == sorted(relative)
  from exemplar import load_dataset
  labels = sorted(int(label) for _, label in load_dataset(
      outputs["inproc"], batch_size=None, shuffle=False, dtype="uint8", verbose=False))
  assert labels == [0] * 7 + [1] * 5 + [2] * 9


def test_png_compression_and_jpeg_quality_change_size_not_what_is_read(small_tree, tmp_path):
  """--png_compression 0 stores the same pixels in more bytes; --jpeg_quality
  changes the JPEG's size; summary.json records both settings."""
  from exemplar import load_dataset

  def run(name, *flags):
    out = str(tmp_path / name)
    assert run_cli(["--input_dir", small_tree, "--output_dir", out,
                    "--samples_per_class", "2", "--image_size", "40", "40", *flags]) == 0
    ds = load_dataset(out, batch_size=None, shuffle=False, dtype="uint8", verbose=False)
    pixels = [image.numpy() for image, _ in ds]
    stored = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)
                 if ".tfrecord-" in f)
    config = json.load(open(os.path.join(out, "summary.json")))["config"]
    return pixels, stored, config

  default, default_bytes, config = run("default")
  assert (config["png_compression"], config["jpeg_quality"]) == (1, 95)
  stored, stored_bytes, config = run("stored", "--png_compression", "0")
  assert config["png_compression"] == 0
  assert all(np.array_equal(a, b) for a, b in zip(default, stored, strict=True))
  assert stored_bytes > 1.3 * default_bytes
  _, fine_bytes, _ = run("fine", "--image_format", "jpeg")
  _, coarse_bytes, config = run("coarse", "--image_format", "jpeg", "--jpeg_quality", "20")
  assert config["jpeg_quality"] == 20 and coarse_bytes < 0.8 * fine_bytes
