"""The benchmark's own scripts still run against today's code.

`bash scripts/bench.sh` takes ~10 minutes on trees of 1.3M files, so CI
cannot run it; these run its stage scripts and baselines on a tiny tree, so
an internal change (e.g. the shard key DecodeAndWriteShard takes) fails here
instead of in the next benchmark run.
"""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import make_tree

pytestmark = pytest.mark.slow  # whole processes importing TF

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp("bench") / "photos")
  make_tree(root, {"a": 6, "b": 5, "c": 5}, size=(48, 64))
  return root


def stage(args, cwd) -> dict:
  proc = subprocess.run([sys.executable] + args, capture_output=True, text=True,
                        timeout=300, cwd=cwd)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  lines = [line for line in proc.stdout.splitlines() if line.startswith("STAGE ")]
  assert lines, proc.stdout[-2000:]
  return dict(re.findall(r"(\w+)=(\S+)", lines[-1]))


@pytest.mark.parametrize("mode", [["--mode", "beam"], ["--mode", "loop", "--processes", "1"]])
def test_decode_stage_decodes_every_image(tree, tmp_path, mode):
  st = stage([os.path.join(BENCH, "stages", "decode_stage.py"), tree] + mode, str(tmp_path))
  assert int(st["images"]) == 16


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_tfdata_floor_writes_every_image_readably(tree, tmp_path, image_format):
  import tensorflow as tf
  out = str(tmp_path / "floor")
  st = stage([os.path.join(BENCH, "baselines", "tfdata_floor.py"), tree, "--output", out,
              "--image_format", image_format], str(tmp_path))
  assert int(st["images"]) == 16 and st["beam_imported"] == "0"
  files = [os.path.join(out, name) for name in sorted(os.listdir(out))]
  records = list(tf.data.TFRecordDataset(files))
  assert len(records) == 16
  example = tf.train.Example.FromString(records[0].numpy())
  image = tf.io.decode_image(example.features.feature["image/encoded"].bytes_list.value[0])
  assert tuple(image.shape) == (256, 256, 3)


def test_bare_glob_script_loads_one_image_per_class(tree, tmp_path):
  st = stage([os.path.join(BENCH, "baselines", "glob_bare.py"), tree], str(tmp_path))
  assert int(st["images"]) == 3


def test_run_phases_clocks_a_whole_all_run(tree, tmp_path):
  out = str(tmp_path / "out")
  st = stage([os.path.join(BENCH, "stages", "run_phases.py"), "--input_dir", tree,
              "--output_dir", out, "--samples_per_class", "all", "--num_shards", "2"],
             str(tmp_path))
  assert int(st["shards"]) == 2
  phases = [float(st[k]) for k in ("imports", "build", "to_decode", "decode", "sheet", "after")]
  assert all(p >= 0 for p in phases) and float(st["imports"]) > 0.5  # TF was imported
  assert abs(sum(phases) - float(st["total"])) < 0.5  # the phases cover the run
  assert os.path.exists(os.path.join(out, "_SUCCESS"))


def test_op_costs_times_every_op_and_png_level(tree, tmp_path):
  st = stage([os.path.join(BENCH, "stages", "op_costs.py"), tree, "--limit", "8"], str(tmp_path))
  assert int(st["images"]) == 8
  for name in ("decode_resize", "stored_png", "png_encode", "png_encode_l0", "png_encode_l12",
               "serialize"):
    assert float(st[name + "_ms"]) > 0
  assert int(st["png_bytes_l0"]) > int(st["png_bytes_l1"]) >= int(st["png_bytes_l12"])
