"""The public PTransforms, each on small inputs with TestPipeline and
assert_that, and the README's library example run from a user's project
whose own `pipeline`, `transforms` and `configs` packages must break nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from typing import List, Optional, Tuple

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

import exemplar
from exemplar.transforms import sampling
from tests.conftest import make_tree

def in_process_pipeline() -> TestPipeline:
  """A TestPipeline on Beam's in-process FnApiRunner, as exemplar's default
  (Beam's default, DirectRunner, first tries Prism, which downloads a binary)."""
  from exemplar.transforms import beam_internals
  return TestPipeline(runner=beam_internals.fn_api_runner())


README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "README.md")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp("library") / "images")
  make_tree(root, {"ant": 5, "bee": 3, "cat": 4}, size=(16, 24))
  os.makedirs(os.path.join(root, "empty"))
  return root


def expected_picks(root: str, class_name: str, k: int, spares: int, seed: int):
  """The seeded bottom-(k + spares) of a class folder, by the pure function."""
  relative = sorted(f"{class_name}/{name}" for name in os.listdir(os.path.join(root, class_name)))
  sample = sampling.sample_paths(relative, seed, k + spares)
  return tuple(exemplar.Pick(rank, rel, os.path.join(root, rel))
               for rank, (_, rel) in enumerate(sample.candidates))


def test_sample_image_folder_gives_one_class_sample_per_folder(tree):
  with in_process_pipeline() as p:
    samples = p | exemplar.SampleImageFolder(tree, samples_per_class=2, seed=3, spares=1)
    assert_that(samples, equal_to([
        exemplar.ClassSample(name, tree, count, 2, expected_picks(tree, name, 2, 1, 3), True)
        for name, count in (("ant", 5), ("bee", 3), ("cat", 4))]
        + [exemplar.ClassSample("empty", tree, 0, 2, (), True)]))


def test_sample_images_from_any_source_picks_as_the_folder_does(tree):
  rows = [(name, os.path.join(tree, name, file)) for name in ("ant", "bee", "cat")
          for file in sorted(os.listdir(os.path.join(tree, name)))]
  with in_process_pipeline() as p:
    samples = (p | beam.Create(rows + rows[:3])  # duplicates count once
               | exemplar.SampleImages(samples_per_class=2, seed=3, spares=1, root=tree))
    assert_that(samples | beam.Map(lambda s: (s.class_name, s.files_seen, s.picks)),
                equal_to([(name, count, expected_picks(tree, name, 2, 1, 3))
                          for name, count in (("ant", 5), ("bee", 3), ("cat", 4))]))


def test_sample_images_without_root_keys_whole_paths(tree):
  rows = [("ant", os.path.join(tree, "ant", "img_000.jpg")),
          ("ant", os.path.join(tree, "ant", "img_001.png"))]
  with in_process_pipeline() as p:
    samples = p | beam.Create(rows) | exemplar.SampleImages("all", seed=0)
    assert_that(samples | beam.Map(lambda s: sorted(pick.path for pick in s.picks)),
                equal_to([sorted(path for _, path in rows)]))


def test_bad_arguments_are_refused_when_built(tree, tmp_path):
  with pytest.raises(ValueError, match="samples_per_class"):
    exemplar.SampleImages(samples_per_class=0)
  with pytest.raises(ValueError, match="image_size"):
    exemplar.WriteDataset(str(tmp_path / "o"), image_size=(0, 5))
  with pytest.raises(ValueError, match="color_mode"):
    exemplar.WriteDataset(str(tmp_path / "o"), color_mode="cmyk")
  with pytest.raises(ValueError, match="png_compression"):
    exemplar.WriteDataset(str(tmp_path / "o"), png_compression=13)
  with pytest.raises(ValueError, match="jpeg_quality"):
    exemplar.WriteDataset(str(tmp_path / "o"), image_format="jpeg", jpeg_quality=1.5)
  with pytest.raises(exemplar.ListingError):
    exemplar.SampleImageFolder(str(tmp_path / "missing"))
  with pytest.raises(exemplar.ListingError):
    exemplar.SampleImageFolder(tree, class_names=["ant", "nope"])


def test_labels_and_display_data(tree, tmp_path):
  stage = exemplar.SampleImageFolder(tree, samples_per_class=3, seed=9)
  assert stage.label == "SampleImageFolder(images, k=3)"
  assert stage.display_data()["samples_per_class"] == 3
  writer = exemplar.WriteDataset(str(tmp_path / "o"), image_size=(32, 48))
  assert writer.label == f"WriteDataset({tmp_path / 'o'})"
  assert writer.display_data()["image_size"] == "32x48"


@pytest.mark.slow
def test_write_dataset_emits_what_it_wrote_and_the_pipeline_goes_on(tree, tmp_path):
  out = str(tmp_path / "out")
  seen = str(tmp_path / "after.txt")
  with in_process_pipeline() as p:
    written = (p | exemplar.SampleImageFolder(tree, samples_per_class=2, seed=1)
               | exemplar.WriteDataset(out, image_size=(12, 16), num_shards=2))
    assert_that(written | beam.Map(lambda d: (d.output_dir, d.num_examples,
                                              d.examples_per_class, len(d.shards),
                                              d.classes_short)),
                equal_to([(out, 6, {"ant": 2, "bee": 2, "cat": 2, "empty": 0}, 2,
                           ("empty",))]))
    _ = written | beam.Map(lambda d: open(seen, "w").write(d.output_dir))
  assert open(seen).read() == out
  ds = exemplar.load_dataset(out, batch_size=None, shuffle=False, dtype="uint8", verbose=False)
  assert ds.class_names == ["ant", "bee", "cat", "empty"]
  assert sorted(int(label) for _, label in ds) == [0, 0, 1, 1, 2, 2]


@pytest.mark.slow
def test_write_dataset_takes_class_names_from_the_samples(tmp_path, tree):
  out = str(tmp_path / "out")
  rows = [("zebra", os.path.join(tree, "ant", "img_000.jpg")),
          ("yak", os.path.join(tree, "bee", "img_001.png"))]
  with in_process_pipeline() as p:
    _ = (p | beam.Create(rows) | exemplar.SampleImages(1)
         | exemplar.WriteDataset(out, image_size=(8, 8)))
  ds = exemplar.load_dataset(out, batch_size=None, shuffle=False, dtype="uint8", verbose=False)
  assert ds.class_names == ["yak", "zebra"]
  assert sorted((int(label), path) for (_, label), path in zip(ds, ds.file_paths)) == [
      (0, rows[1][1]), (1, rows[0][1])]


def readme_example() -> str:
  text = open(README, encoding="utf-8").read()
  match = re.search(r"<!-- library-example:.*?-->\s*```python\n(.*?)```", text, re.S)
  assert match, "README has no library example block"
  return match.group(1)


def hostile_project(project) -> List[str]:
  """A user's project whose own `pipeline`, `transforms` and `configs`
  packages hold a module under each name exemplar's use (pipeline/main.py,
  pipeline/options.py, transforms/listing.py, configs/local.py, ...) that
  raises when imported, after noting its name in project/IMPORTED, and a
  configs/local.yaml that no run could use. Returns the hostile modules."""
  import exemplar.configs
  import exemplar.transforms
  sources = {"pipeline": os.path.dirname(exemplar.__file__),
             "transforms": os.path.dirname(exemplar.transforms.__file__),
             "configs": os.path.dirname(exemplar.configs.__file__)}
  hostile = []
  for package, source in sources.items():
    (project / package).mkdir(parents=True)
    (project / package / "__init__.py").write_text(
        f"NAME = {package!r}  # the user's own, not exemplar's\n")
    names = sorted({os.path.splitext(name)[0] for name in os.listdir(source)
                    if name.endswith((".py", ".yaml")) and name != "__init__.py"})
    for name in names:
      (project / package / f"{name}.py").write_text(textwrap.dedent("""\
          import os
          with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "IMPORTED"),
                    "a") as f:
            f.write(__name__ + "\\n")
          raise RuntimeError("the user's " + __name__ + " was imported in place of exemplar's")
          """))
      hostile.append(f"{package}.{name}")
  (project / "configs" / "local.yaml").write_text("samples_per_class: not a number\n")
  return hostile


@pytest.mark.slow
def test_readme_example_runs_in_a_project_with_its_own_pipeline_transforms_configs(tree, tmp_path):
  project = tmp_path / "project"
  hostile = hostile_project(project)
  assert {"pipeline.main", "pipeline.options", "pipeline.reader", "transforms.listing",
          "transforms.sampling", "transforms.writing", "configs.local"} <= set(hostile)
  out = tmp_path / "out"
  code = (readme_example()
          .replace("/data/flowers", tree)
          .replace("/tmp/flowers_pick", str(out / "pick"))
          .replace("/tmp/flowers_rows", str(out / "rows"))
          .replace('"daisy"', '"ant"').replace('"tulip"', '"bee"')
          .replace("daisy/1.jpg", "ant/img_000.jpg").replace("daisy/2.png", "ant/img_001.png")
          .replace("tulip/1.jpg", "bee/img_000.jpg"))
  script = project / "job.py"
  script.write_text(textwrap.dedent("""\
      import pipeline, transforms, configs  # the user's own packages come first
      assert pipeline.NAME == "pipeline" and configs.NAME == "configs"
      try:
        import transforms.listing
      except RuntimeError:
        pass  # the user's modules are the ones Python finds by these names
      else:
        raise AssertionError("the user's transforms.listing did not raise")
      import os
      os.remove("IMPORTED")
      """) + code)
  env = dict(os.environ, PYTHONPATH=str(project))
  result = subprocess.run([sys.executable, str(script)], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert not (project / "IMPORTED").exists(), (project / "IMPORTED").read_text()
  assert "6 images in" in result.stdout
  assert "['ant', 'bee', 'cat', 'empty']" in result.stdout
  assert os.path.exists(out / "rows" / "_SUCCESS")
  # The CLI, run from the same project, is unaffected too: in process, and
  # with worker processes (fresh interpreters started in the project, its
  # folder first on their sys.path, that unpickle exemplar's DoFns).
  # Every interpreter started with the project on PYTHONPATH notes itself.
  (project / "sitecustomize.py").write_text(textwrap.dedent("""\
      import os, sys
      with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "PROCESSES"),
                "a") as f:
        f.write(repr((os.getcwd(), sys.argv[:1])) + "\\n")
      """))
  cli = os.path.join(os.path.dirname(sys.executable), "exemplar")
  for name, extra in (("cli", []),
                      ("cli_workers", ["--direct_num_workers", "2",
                                       "--direct_running_mode", "multi_processing"])):
    result = subprocess.run([cli, "--input_dir", tree, "--output_dir", str(out / name),
                             "--image_size", "8", "8", "--samples_per_class", "2", *extra],
                            cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (name, result.stderr[-3000:])
    assert not (project / "IMPORTED").exists(), (name, (project / "IMPORTED").read_text())
    assert os.path.exists(out / name / "_SUCCESS")
  processes = [eval(line) for line in (project / "PROCESSES").read_text().splitlines()]
  # The in-process run's listing child (python -P -c, started in the folder
  # exemplar was found in, which it puts first on its path; see
  # exemplar/prelist.py) imported exemplar's modules, not the project's: its
  # samples were the job's (the same records below).
  from exemplar import prelist
  children = [p for p in processes if p == (prelist._HOME, ["-c"])]
  assert len(children) == 1, processes
  processes = [p for p in processes if p not in children]
  assert all(cwd == str(project) for cwd, _ in processes), processes
  # The CLI twice, and the two SDK worker processes (python -m sdk_worker_main).
  assert sorted(argv[0] == "-m" for _, argv in processes) == [False, False, True, True], \
      processes
  # Both runs took the same picks: the same records, byte for byte.
  assert (open(out / "cli" / "manifest.csv", "rb").read()
          == open(out / "cli_workers" / "manifest.csv", "rb").read())


def test_bad_library_arguments_are_value_errors_when_built(tmp_path, tree):
  out = str(tmp_path / "o")
  for kwargs in ({"num_shards": 2.7}, {"num_shards": "2"}, {"num_shards": True},
                 {"image_size": "88"}, {"image_size": (8.5, 8)}, {"max_pixels": -5},
                 {"class_names": "abc"}):
    with pytest.raises(ValueError):
      exemplar.WriteDataset(out, **kwargs)
  with pytest.raises(ValueError, match="output_dir"):
    exemplar.WriteDataset("")
  with pytest.raises(ValueError, match="class_names"):
    exemplar.SampleImageFolder(tree, class_names="ant")


def test_building_a_write_dataset_creates_nothing(tmp_path):
  out = tmp_path / "not" / "yet"
  exemplar.WriteDataset(str(out))
  assert not (tmp_path / "not").exists()


@pytest.mark.slow
def test_a_dataset_committed_meanwhile_is_not_replaced_without_overwrite(tree, tmp_path):
  """Two WriteDatasets into one folder (as two pipelines would): the first
  commit stands, the second finds a finished dataset under the lock and
  fails the job without touching it."""
  out = str(tmp_path / "out")
  with pytest.raises(Exception, match="holds a finished dataset"):
    with in_process_pipeline() as p:
      samples = p | exemplar.SampleImageFolder(tree, samples_per_class=1)
      _ = samples | "First" >> exemplar.WriteDataset(out, image_size=(8, 8))
      _ = samples | "Second" >> exemplar.WriteDataset(out, image_size=(4, 4))
  ds = exemplar.load_dataset(out, batch_size=None, shuffle=False, dtype="uint8",
                             verbose=False)
  shapes = {tuple(image.shape) for image, _ in ds}
  assert len(shapes) == 1 and len(ds.file_paths) == 3  # one whole dataset
  from exemplar.verify import Verifier  # noqa: F401 - the dataset is complete:
  from exemplar import inspect_cli
  assert inspect_cli.main([out, "--verify"]) == 0


# --- SampleImages's declared input type ---------------------------------------


def test_sample_images_refuses_a_pcollection_of_another_type_when_built():
  from apache_beam.options.pipeline_options import TypeOptions
  from apache_beam.typehints.decorators import TypeCheckError

  from exemplar.transforms import beam_internals
  p = beam.Pipeline(runner=beam_internals.fn_api_runner())  # built, never run
  assert p.options.view_as(TypeOptions).pipeline_type_check  # Beam's default
  paths = p | "Paths" >> beam.Create(["/data/ant/1.jpg"])  # str, not (class, path)
  with pytest.raises(TypeCheckError, match=r"at FromPaths: expected .*Tuple\[<class 'str'>, "
                                          r"<class 'str'>\]\], got <class 'str'>"):
    _ = paths | "FromPaths" >> exemplar.SampleImages()
  triples = p | "Triples" >> beam.Create([("ant", "/data/ant/1.jpg", 3)])
  with pytest.raises(TypeCheckError, match="at FromTriples"):
    _ = triples | "FromTriples" >> exemplar.SampleImages()
  # What it takes: (class_name, path) tuples and ReadImageList's ListedImages
  # (the command line's --input_list feeds those), and elements of undeclared type.
  rows = p | "Rows" >> beam.Create([("ant", "/data/ant/1.jpg")])
  _ = rows | "FromRows" >> exemplar.SampleImages()
  listed = p | "Listed" >> beam.Create([exemplar.ListedImage("ant", "/d/ant/1.jpg", "ant/1.jpg",
                                                             None)])
  _ = listed | "FromListed" >> exemplar.SampleImages(root="/d")
  untyped = rows | "Untyped" >> beam.Map(lambda row: row).with_output_types(
      beam.typehints.Any)
  _ = untyped | "FromUntyped" >> exemplar.SampleImages()


def test_read_image_list_feeds_sample_images_when_built(tmp_path):
  list_path = tmp_path / "list.csv"
  list_path.write_text("path,label\nant/1.jpg,ant\n")
  p = beam.Pipeline()  # built, never run
  listed = p | exemplar.ReadImageList(str(list_path))
  _ = listed.images | exemplar.SampleImages(root=str(tmp_path))


# --- progress: per run ------------------------------------------------------------


def progress_lines(tree: str, out: str) -> List[str]:
  """The progress lines one library run (SampleImageFolder | WriteDataset)
  logs, with a line per tick."""
  import logging

  from exemplar.transforms import beam_internals, progress
  lines: List[str] = []
  handler = logging.Handler(logging.INFO)
  handler.emit = lambda record: lines.append(record.getMessage())
  logger = logging.getLogger("exemplar.progress")
  old_level = logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  try:
    with pytest.MonkeyPatch.context() as patch:
      patch.setattr(progress, "INTERVAL_SECONDS", 0.0)
      with beam.Pipeline(runner=beam_internals.fn_api_runner()) as p:
        _ = (p | exemplar.SampleImageFolder(tree, samples_per_class=2)
             | exemplar.WriteDataset(out, image_size=(8, 8), contact_sheet=False))
  finally:
    logger.removeHandler(handler)
    logger.setLevel(old_level)
  return lines


def counts(lines: List[str], what: str) -> List[Tuple[int, Optional[int]]]:
  """(count, total or None) of `what` in each progress line naming it."""
  found = [re.search(re.escape(what) + r": (\d+)(?: of (\d+))?", line) for line in lines]
  return [(int(m.group(1)), m.group(2) and int(m.group(2))) for m in found if m]


@pytest.fixture(scope="module")
def two_runs(tree, tmp_path_factory) -> List[List[str]]:
  """The progress lines of two library runs, one after the other, in this process."""
  out = tmp_path_factory.mktemp("progress")
  return [progress_lines(tree, str(out / f"run{i}")) for i in (1, 2)]


@pytest.mark.slow
def test_listing_progress_of_a_second_run_starts_from_zero(two_runs):
  for lines in two_runs:
    # 4 classes (ant, bee, cat, empty), 12 files: each run's own.
    assert counts(lines, "classes listed")[-1] == (4, 4), lines
    assert max(n for n, _ in counts(lines, "classes listed")) == 4, lines
    assert counts(lines, "files listed")[-1] == (12, None), lines


@pytest.mark.slow
def test_writing_progress_of_a_second_run_starts_from_zero(two_runs):
  for lines in two_runs:
    assert counts(lines, "images decoded")[-1] == (6, 6), lines  # 2 each of 3 classes
    assert max(n for n, _ in counts(lines, "images decoded")) == 6, lines
    assert counts(lines, "shards written")[-1] == (1, 1), lines
