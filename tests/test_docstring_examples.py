"""The `Example:` of each public transform's and function's docstring
(exemplar.SampleImageFolder, SampleImages, ReadImageList, WriteDataset,
load_dataset), taken from the docstring and run as written: its own imports,
a real Beam pipeline on the in-process runner, on a small real tree.

The examples name /data/flowers (a folder per class: daisy, roses, tulips,
and labels.csv) and outputs under /tmp; here every "/data/..." and
"/tmp/..." string literal is moved under tmp_path, where that tree is made.
`beam.Pipeline()` is the user's line; here Beam's default runner is the
in-process FnApiRunner (as exemplar's own default), so no example tries Prism.
"""

from __future__ import annotations

import ast
import builtins
import csv
import inspect
import os
import re
import textwrap
from typing import Dict, List

import pytest

import exemplar
from tests.conftest import noise_image, write_image

FLOWERS = {"daisy": ["1.jpg", "2.png", "3.jpg"], "roses": ["1.jpg", "2.png"],
           "tulips": ["1.jpg", "2.png"]}


def public_callables() -> Dict[str, object]:
  """exemplar's public transforms and functions (not its types and errors)."""
  import apache_beam as beam
  out = {}
  for name in exemplar.__all__:
    value = getattr(exemplar, name)
    if inspect.isfunction(value) or (inspect.isclass(value)
                                     and issubclass(value, beam.PTransform)):
      out[name] = value
  return out


def example_of(obj) -> str:
  """The code under the docstring's `Example:` line (dedented), or ''."""
  lines = (inspect.getdoc(obj) or "").splitlines()
  try:
    start = lines.index("Example:") + 1
  except ValueError:
    return ""
  block: List[str] = []
  for line in lines[start:]:
    if line.strip() and not line.startswith(" "):
      break
    block.append(line)
  return textwrap.dedent("\n".join(block)).strip() + "\n"


def free_names(code: str) -> set:
  """Names the code reads but neither imports, assigns nor takes as an
  argument (scopes aside: enough for a few lines of example)."""
  tree = ast.parse(code)
  bound = set(dir(builtins))
  used = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      bound |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
    elif isinstance(node, ast.Name):
      (used if isinstance(node.ctx, ast.Load) else bound).add(node.id)
    elif isinstance(node, ast.arg):
      bound.add(node.arg)
    elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      bound.add(node.name)
  return used - bound


def test_the_public_api_is_what_this_file_runs():
  assert sorted(public_callables()) == [
      "ReadImageList", "SampleImageFolder", "SampleImages", "WriteDataset", "load_dataset"]


@pytest.mark.parametrize("name", sorted(public_callables()))
def test_each_example_is_self_contained(name):
  code = example_of(public_callables()[name])
  assert code.strip(), f"{name}'s docstring has no Example: block"
  assert not free_names(code), (
      f"{name}'s example uses {sorted(free_names(code))} without importing "
      f"or defining them:\n{code}")


# --- running them ---------------------------------------------------------------


def localize(code: str, root: str) -> str:
  """Every "/data/..." and "/tmp/..." string literal, moved under `root`."""
  return re.sub(r'"(/(?:data|tmp)/[^"]*)"',
                lambda m: repr(root + m.group(1)), code)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Dict:
  """<root>/data/flowers/<class>/<file> (real images) and its labels.csv,
  <root>/tmp for the outputs; the examples already run."""
  import numpy as np
  root = str(tmp_path_factory.mktemp("docstrings"))
  flowers = os.path.join(root, "data", "flowers")
  rng = np.random.default_rng(4)
  for class_name, files in FLOWERS.items():
    for file_name in files:
      fmt = "PNG" if file_name.endswith(".png") else "JPEG"
      write_image(os.path.join(flowers, class_name, file_name),
                  noise_image(rng, 24, 32), fmt)
  with open(os.path.join(flowers, "labels.csv"), "w", newline="") as f:
    rows = [["path", "label"]] + [[f"{c}/{n}", c] for c, files in FLOWERS.items()
                                  for n in files]
    csv.writer(f, lineterminator="\n").writerows(rows + [["daisy/notes.txt", "daisy"]])
  os.makedirs(os.path.join(root, "tmp"))
  return {"root": root, "done": {}}


@pytest.fixture
def in_process_default(monkeypatch):
  """`beam.Pipeline()` runs on the in-process FnApiRunner; DirectRunner (which
  first tries Prism, a download) is never used."""
  from apache_beam.options.pipeline_options import StandardOptions
  from apache_beam.runners.direct.direct_runner import DirectRunner
  monkeypatch.setattr(StandardOptions, "DEFAULT_RUNNER",
                      "apache_beam.runners.portability.fn_api_runner.FnApiRunner")

  def refuse(*args, **kwargs):
    raise AssertionError("an example ran on DirectRunner (Prism first)")
  monkeypatch.setattr(DirectRunner, "run_pipeline", refuse)


def run_example(name: str, workspace, capsys) -> str:
  """Runs `name`'s docstring example (once per module); returns what it printed."""
  done = workspace["done"]
  if name not in done:
    code = localize(example_of(public_callables()[name]), workspace["root"])
    capsys.readouterr()
    exec(compile(code, f"<{name} docstring example>", "exec"),  # noqa: S102
         {"__name__": f"{name}_docstring_example"})
    done[name] = capsys.readouterr().out
  return done[name]


def tmp(workspace, *parts: str) -> str:
  return os.path.join(workspace["root"], "tmp", *parts)


def read_back(out: str):
  ds = exemplar.load_dataset(out, batch_size=None, shuffle=False, dtype="uint8",
                             verbose=False)
  return ds.class_names, [(tuple(image.shape), int(label)) for image, label in ds]


@pytest.mark.slow
def test_read_image_list_example(workspace, in_process_default, capsys):
  printed = run_example("ReadImageList", workspace, capsys)
  folder = tmp(workspace)
  assert (f"ListedImage(class_name='daisy', path='{folder}/daisy/1.jpg', "
          "relative_path='daisy/1.jpg', ml_use=None)") in printed, printed
  assert (f"ListedImage(class_name='roses', path='{folder}/roses/2.png', "
          "relative_path='roses/2.png', ml_use=None)") in printed, printed
  assert "DecodeFailure(class_name='x', relative_path='notes.txt'" in printed, printed
  assert "not an image name" in printed, printed


@pytest.mark.slow
def test_sample_images_example(workspace, in_process_default, capsys):
  run_example("SampleImages", workspace, capsys)
  out = tmp(workspace, "flowers_rows")
  assert os.path.exists(os.path.join(out, "_SUCCESS"))
  names, records = read_back(out)
  assert names == ["daisy", "tulips"]
  assert sorted(records) == [((64, 64, 3), 0), ((64, 64, 3), 1)]


@pytest.mark.slow
def test_sample_image_folder_example(workspace, in_process_default, capsys):
  run_example("SampleImageFolder", workspace, capsys)
  names, records = read_back(tmp(workspace, "flowers_pick"))
  assert names == ["daisy", "roses", "tulips"]
  assert sorted(records) == [((128, 128, 3), label) for label in (0, 0, 1, 1, 2, 2)]


@pytest.mark.slow
def test_write_dataset_example(workspace, in_process_default, capsys):
  printed = run_example("WriteDataset", workspace, capsys)
  out = tmp(workspace, "flowers_from_list")
  assert f"3 images in {out}" in printed, printed
  names, records = read_back(out)
  assert names == ["daisy", "roses", "tulips"]
  assert sorted(records) == [((128, 128, 3), label) for label in (0, 1, 2)]
  with open(os.path.join(out, "errors.csv"), newline="") as f:
    errors = list(csv.DictReader(f))
  assert [(e["relative_path"], "not an image name" in e["reason"]) for e in errors] == [
      ("daisy/notes.txt", True)]


@pytest.mark.slow
def test_load_dataset_example(workspace, in_process_default, capsys):
  run_example("SampleImageFolder", workspace, capsys)  # writes what it reads
  printed = run_example("load_dataset", workspace, capsys)
  assert printed.splitlines() == [
      "Found 6 files belonging to 3 classes.", "['daisy', 'roses', 'tulips']",
      "(4, 128, 128, 3) <dtype: 'float32'> [1 2 1 2]"], printed  # as the comments say
