"""exemplar's module structure: no import cycles, no process-wide side effects
in library code.

Every module of pipeline/ (-> exemplar), transforms/ (-> exemplar.transforms)
and configs/ (-> exemplar.configs) is parsed with ast, and every import of an
exemplar module counts, at module level and inside functions alike (a
function-level import only defers a cycle to run time).
"""

from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
import warnings
from typing import Dict, List, Set

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Repository folder -> the package it installs as (setup.py's package_dir).
PACKAGES = {"pipeline": "exemplar", "transforms": "exemplar.transforms",
            "configs": "exemplar.configs"}
# Where a process-wide setting may be changed: the commands' entry points.
CLI_FUNCTIONS = {("exemplar.main", "main"), ("exemplar.main", "configure_logging"),
                 ("exemplar.main", "console_main"),
                 ("exemplar.main", "_settle_in_process_job"),  # console_main's hook
                 ("exemplar.main", "_one_tf_thread_per_call"),
                 ("exemplar.inspect_cli", "main"),
                 ("exemplar.console", "quiet"),  # called by exemplar.main only
                 ("exemplar.prelist", "_child")}  # the listing child's own process


def module_files() -> Dict[str, str]:
  """{module name: file path} of every exemplar module."""
  modules = {}
  for folder, package in PACKAGES.items():
    for name in sorted(os.listdir(os.path.join(REPO, folder))):
      if name.endswith(".py"):
        module = package if name == "__init__.py" else f"{package}.{name[:-3]}"
        modules[module] = os.path.join(REPO, folder, name)
  return modules


def imported_modules(module: str, path: str, modules: Set[str]) -> Dict[str, int]:
  """{exemplar module: first line importing it} for one module's imports,
  at any depth. `from P import x` imports module P.x when there is one,
  else the name x of P (so P)."""
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
  found: Dict[str, int] = {}

  def add(target: str, line: int) -> None:
    if target in modules and target != module:
      found.setdefault(target, line)

  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        add(alias.name, node.lineno)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: from . import x, from ..y import z
        parts = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      for alias in node.names:
        submodule = f"{base}.{alias.name}"
        add(submodule if submodule in modules else base, node.lineno)
  return found


def import_graph() -> Dict[str, Dict[str, int]]:
  files = module_files()
  return {module: imported_modules(module, path, set(files))
          for module, path in files.items()}


def find_cycles(graph: Dict[str, Dict[str, int]], limit: int = 50) -> List[List[str]]:
  """Every elementary import cycle (up to `limit`), each from its smallest
  module name back to it."""
  cycles: List[List[str]] = []

  def walk(start: str, path: List[str], on_path: Set[str]) -> None:
    for target in sorted(graph[path[-1]]):
      if len(cycles) >= limit:
        return
      if target == start:
        cycles.append(path + [start])
      elif target > start and target not in on_path:
        on_path.add(target)
        walk(start, path + [target], on_path)
        on_path.discard(target)

  for start in sorted(graph):
    walk(start, [start], {start})
  return cycles


def describe(graph: Dict[str, Dict[str, int]]) -> str:
  short = lambda name: name.replace("exemplar.transforms.", "transforms.")  # noqa: E731
  return "\n".join(f"  {short(module)} -> {', '.join(short(t) for t in sorted(graph[module])) or '-'}"
                   for module in sorted(graph))


def test_the_graph_sees_module_and_function_level_imports():
  graph = import_graph()
  assert "exemplar.transforms.decoding" in graph["exemplar.transforms.decode_tasks"]
  assert "exemplar.runners" in graph["exemplar.options"]  # inside check_runner
  assert "exemplar.demo" in graph["exemplar.main"]  # inside make_plan
  assert find_cycles({"a": {"b": 1}, "b": {"c": 1, "a": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [
      ["a", "b", "a"], ["a", "b", "c", "a"]]


def test_no_import_cycles():
  graph = import_graph()
  cycles = find_cycles(graph)
  if cycles:
    shown = "\n".join("  " + " -> ".join(cycle) for cycle in cycles)
    pytest.fail(f"import cycles among exemplar's modules:\n{shown}\n"
                f"the module graph (module- and function-level imports):\n{describe(graph)}")


# --- process-wide side effects -----------------------------------------------


def side_effect(node: ast.AST) -> str:
  """What a statement changes for the whole process, or ''."""
  text = ast.unparse(node)
  if isinstance(node, ast.Call):
    name = ast.unparse(node.func)
    if name in ("logging.basicConfig", "warnings.filterwarnings", "warnings.simplefilter",
                "warnings.resetwarnings", "os.putenv", "os.environ.setdefault",
                "os.environ.update", "os.chdir", "os.umask", "sys.setrecursionlimit",
                "socket.setdefaulttimeout", "multiprocessing.set_start_method",
                "gc.freeze", "gc.disable", "gc.set_threshold"):
      return text
    if name.endswith((".setLevel", ".addHandler", "set_inter_op_parallelism_threads",
                       "set_intra_op_parallelism_threads")):
      return text
  if isinstance(node, (ast.Assign, ast.AugAssign)):
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    for target in targets:
      target_text = ast.unparse(target)
      if target_text.startswith(("os.environ", "Image.", "PIL.", "sys.", "warnings.",
                                 "logging.")):
        return text
  if isinstance(node, ast.Global):
    return text
  return ""


def test_library_code_changes_no_process_wide_setting():
  """logging set-up, environment variables, warnings filters, Pillow's
  limits, ...: only the commands' entry points may change them."""
  found = []
  for module, path in module_files().items():
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    functions = {}
    for parent in ast.walk(tree):
      if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)):
        for child in ast.walk(parent):
          functions.setdefault(child, parent.name)
    for node in ast.walk(tree):
      what = side_effect(node)
      if what and (module, functions.get(node, "")) not in CLI_FUNCTIONS:
        found.append(f"{os.path.relpath(path, REPO)}:{node.lineno}: {what}")
  # A lazily built cache is module state, not a setting of the process.
  found = [f for f in found if not f.endswith("global _DASK")]
  assert not found, "process-wide side effects in library code:\n" + "\n".join(found)


def test_importing_exemplar_leaves_the_process_alone():
  """In a fresh interpreter: importing every exemplar module changes no
  logging, environment, warnings filter or Pillow setting."""
  modules = sorted(module_files())
  script = f"""
import logging, os, sys, warnings
import apache_beam, numpy, yaml
from PIL import Image
def state():
  root = logging.getLogger()
  return (list(root.handlers), root.level, dict(os.environ), list(warnings.filters),
          Image.MAX_IMAGE_PIXELS, sys.getrecursionlimit())
before = state()
import importlib
for name in {modules!r}:
  importlib.import_module(name)
after = state()
names = ("root handlers", "root level", "environment", "warnings filters",
         "Image.MAX_IMAGE_PIXELS", "recursion limit")
changed = [n for n, b, a in zip(names, before, after) if b != a]
print("changed:", changed)
sys.exit(1 if changed else 0)
"""
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr[-3000:]


def test_reading_a_huge_header_leaves_pillow_settings_alone():
  """The size of an image far beyond Pillow's decompression-bomb limit is
  read without changing Image.MAX_IMAGE_PIXELS and without a warning."""
  import struct
  import zlib
  from PIL import Image
  from exemplar.transforms import headers

  def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data)))

  def png_header(width: int, height: int) -> bytes:
    """A PNG's header and end, no pixels: what a crafted file claims."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")

  limit = Image.MAX_IMAGE_PIXELS
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # any warning fails the test
    assert headers.header_size(png_header(100_000, 90_000)) == (90_000, 100_000)
    assert headers.header_size(png_header(12_000, 10_000)) == (10_000, 12_000)
    assert headers.exif_orientation(png_header(100_000, 90_000)) == 1
    assert headers.header_size(b"not an image") is None
  assert Image.MAX_IMAGE_PIXELS == limit
  # Pillow's own open still refuses it: its setting is untouched.
  with pytest.raises(Image.DecompressionBombError):
    Image.open(io.BytesIO(png_header(100_000, 90_000)))


def test_import_exemplar_is_lazy_and_the_image_ops_need_no_beam():
  """`import exemplar` imports no Beam or TF; each public name loads its
  module on first use; the image ops (decoding, png_encoder) import no Beam,
  so a plain tf.data script (benchmarks/baselines/tfdata_floor.py) can call
  them without paying for it."""
  import exemplar
  script = """
import sys
import exemplar
heavy = lambda: sorted(m for m in ("apache_beam", "tensorflow") if m in sys.modules)
assert heavy() == [], heavy()
import exemplar.transforms.decoding, exemplar.transforms.png_encoder
assert "apache_beam" not in sys.modules
assert exemplar.WriteDataset.__module__ == "exemplar.transforms.write_dataset"
assert "apache_beam" in sys.modules
print("ok")
"""
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
  assert result.stdout.strip() == "ok", result.stdout + result.stderr[-3000:]
  for name in exemplar.__all__:
    assert getattr(exemplar, name).__name__ == name
  assert set(exemplar.__all__) <= set(dir(exemplar))
  with pytest.raises(AttributeError, match="no attribute 'nope'"):
    exemplar.nope  # noqa: B018


# --- dead code and names defined once -------------------------------------------


def test_no_unused_module_level_function_or_class():
  """Every function and class defined at module level is named somewhere
  else in exemplar (or in setup.py's entry points): no dead code."""
  import collections
  import re
  words = {module: collections.Counter(re.findall(r"\w+", open(path, encoding="utf-8").read()))
           for module, path in module_files().items()}
  words["setup.py"] = collections.Counter(
      re.findall(r"\w+", open(os.path.join(REPO, "setup.py"), encoding="utf-8").read()))
  unused = []
  for module, path in module_files().items():
    for node in ast.parse(open(path, encoding="utf-8").read(), path).body:
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        if node.name.startswith("__") and node.name.endswith("__"):
          continue  # called by Python itself (a module's __getattr__, __dir__)
        if sum(counts[node.name] for counts in words.values()) <= 1:
          unused.append(f"{module}.{node.name}")
  assert not unused, "defined and never used: " + ", ".join(unused)


def test_the_shard_name_template_is_defined_once():
  """Shard names are spelled in transforms/names.py only: the writer's
  template, the readers' pattern and TFDS's template agree."""
  found = []
  for module, path in module_files().items():
    if module == "exemplar.transforms.names":
      continue
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    for node in ast.walk(tree):
      if (isinstance(node, ast.Constant) and isinstance(node.value, str)
          and id(node) not in docstrings and "tfrecord" in node.value):
        found.append(f"{os.path.relpath(path, REPO)}:{node.lineno}: {node.value!r}")
  assert not found, "shard names spelled outside transforms/names.py:\n" + "\n".join(found)

  from exemplar.transforms import names
  from tensorflow_datasets.core import naming
  for index, count, split in ((0, 1, "train"), (3, 8, "validation"), (99998, 99999, "test")):
    name = names.shard_file_name(index, count, split)
    assert names.SHARD_NAME.fullmatch(name)
    template = naming.ShardedFileTemplate(data_dir="/d", dataset_name=names.DATASET_NAME,
                                          split=split, filetype_suffix=names.SHARD_SUFFIX)
    assert os.path.basename(os.fspath(template.sharded_filepath(
        shard_index=index, num_shards=count))) == name
  assert not names.SHARD_NAME.fullmatch(names.shard_file_name(0, 1) + ".tmp")
