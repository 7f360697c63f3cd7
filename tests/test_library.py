"""The public PTransforms, each on small inputs with TestPipeline and
assert_that, and the README's library example run from a user's project
whose own `pipeline`, `transforms` and `configs` packages must break nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

import exemplar
from exemplar.transforms import sampling
from tests.conftest import make_tree

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
  with TestPipeline() as p:
    samples = p | exemplar.SampleImageFolder(tree, samples_per_class=2, seed=3, spares=1)
    assert_that(samples, equal_to([
        exemplar.ClassSample(name, tree, count, 2, expected_picks(tree, name, 2, 1, 3), True)
        for name, count in (("ant", 5), ("bee", 3), ("cat", 4))]
        + [exemplar.ClassSample("empty", tree, 0, 2, (), True)]))


def test_sample_images_from_any_source_picks_as_the_folder_does(tree):
  rows = [(name, os.path.join(tree, name, file)) for name in ("ant", "bee", "cat")
          for file in sorted(os.listdir(os.path.join(tree, name)))]
  with TestPipeline() as p:
    samples = (p | beam.Create(rows + rows[:3])  # duplicates count once
               | exemplar.SampleImages(samples_per_class=2, seed=3, spares=1, root=tree))
    assert_that(samples | beam.Map(lambda s: (s.class_name, s.files_seen, s.picks)),
                equal_to([(name, count, expected_picks(tree, name, 2, 1, 3))
                          for name, count in (("ant", 5), ("bee", 3), ("cat", 4))]))


def test_sample_images_without_root_keys_whole_paths(tree):
  rows = [("ant", os.path.join(tree, "ant", "img_000.jpg")),
          ("ant", os.path.join(tree, "ant", "img_001.png"))]
  with TestPipeline() as p:
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
  with TestPipeline() as p:
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
  with TestPipeline() as p:
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


@pytest.mark.slow
def test_readme_example_runs_in_a_project_with_its_own_pipeline_transforms_configs(tree, tmp_path):
  project = tmp_path / "project"
  for package in ("pipeline", "transforms", "configs"):
    (project / package).mkdir(parents=True)
    (project / package / "__init__.py").write_text(
        f"NAME = {package!r}  # the user's own, not exemplar's\n")
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
      """) + code)
  env = dict(os.environ, PYTHONPATH=str(project))
  result = subprocess.run([sys.executable, str(script)], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "6 images in" in result.stdout
  assert "['ant', 'bee', 'cat', 'empty']" in result.stdout
  assert os.path.exists(out / "rows" / "_SUCCESS")
  # The CLI, run from the same project, is unaffected too.
  cli = os.path.join(os.path.dirname(sys.executable), "exemplar")
  result = subprocess.run([cli, "--input_dir", tree, "--output_dir", str(out / "cli"),
                           "--image_size", "8", "8"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert os.path.exists(out / "cli" / "_SUCCESS")


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
    with TestPipeline() as p:
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
