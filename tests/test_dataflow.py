"""The Dataflow job, built offline: our steps, our package, no submission.

Beam's DataflowRunner with `--template_location` set to a local file writes
the job description there instead of submitting it. Its staging
(`--staging_location`, which Dataflow requires on gs://) goes to
fake-gcs-server on loopback (tests/test_gcs.py), `--no_auth` keeps the
Dataflow client anonymous, and nothing reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from typing import Dict

import pytest

from tests.conftest import make_tree, run_cli
from tests.test_gcs import GcsEmulator

pytestmark = pytest.mark.slow  # Dataflow job builds and the launcher: seconds each

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "exemplar-dataflow"
JOB_NAME = "exemplar-offline-test"
# The steps a Dataflow user sees (full labels of the pipeline's transforms).
OUR_STEPS = ("Sample/ListAndSample", "Sample/MergeSamples",
             "WriteDataset/DecodeAndWriteShards/DecodeAndWriteShard",
             "WriteDataset/TransformGraph/BuildAndCopy", "WriteDataset/Finalize")


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> Dict:
  """Builds the Dataflow job for a small tree; returns what it produced."""
  from apache_beam.portability.api import beam_runner_api_pb2

  work = tmp_path_factory.mktemp("dataflow")
  tree = str(work / "images")
  make_tree(tree, {"ant": 3, "bee": 2}, seed=2)
  emulator = GcsEmulator(str(work))
  try:
    emulator.start()
    client = emulator.client()
    client.create_bucket(BUCKET)
    template = str(work / "template.json")
    argv = [
        "--config", os.path.join(REPO, "configs", "dataflow.yaml"),
        "--input_dir", tree, "--output_dir", str(work / "out"),
        "--project", "exemplar-test", "--region", "us-central1",
        "--temp_location", f"gs://{BUCKET}/tmp",
        "--staging_location", f"gs://{BUCKET}/staging",
        "--setup_file", os.path.join(REPO, "setup.py"),
        "--job_name", JOB_NAME, "--template_location", template, "--no_auth"]
    # The whole command line, as a user (or the Flex Template launcher) runs it.
    assert run_cli(argv) == 0
    staged = {blob.name.rsplit("/", 1)[-1]: blob.download_as_bytes()
              for blob in client.list_blobs(BUCKET, prefix="staging/")}
    with open(template) as f:
      description = json.load(f)
    return {
        "description": description,
        "staged": staged,
        "proto": beam_runner_api_pb2.Pipeline.FromString(staged["pipeline.pb"]),
    }
  finally:
    emulator.stop()


@pytest.mark.slow
def test_job_is_described_not_submitted(job):
  description = job["description"]
  assert description["name"] == JOB_NAME
  assert description["type"] == "JOB_TYPE_BATCH"
  assert "use_runner_v2" in description["environment"]["experiments"]


@pytest.mark.slow
def test_job_names_our_steps(job):
  labels = {t.unique_name for t in job["proto"].components.transforms.values()}
  missing = [step for step in OUR_STEPS if step not in labels]
  assert missing == []


@pytest.mark.slow
def test_job_stages_our_package_and_no_sdk_download(job):
  import apache_beam as beam
  staged = job["staged"]
  # setup.py -> an sdist staged as workflow.tar.gz; the SDK itself comes with
  # the worker container (nothing downloaded, no SDK tarball staged).
  assert sorted(staged) == ["pipeline.pb", "submission_environment_dependencies.txt",
                            "workflow.tar.gz"]
  pool = job["description"]["environment"]["workerPools"][0]
  assert "workflow.tar.gz" in {package["name"] for package in pool["packages"]}
  assert pool["workerHarnessContainerImage"].endswith(f"_sdk:{beam.__version__}")
  with tarfile.open(fileobj=io.BytesIO(staged["workflow.tar.gz"])) as sdist:
    names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
  for shipped in ("setup.py", "pipeline/main.py", "pipeline/runners.py",
                  "transforms/writing.py", "transforms/tft_graph.py",
                  "configs/local.yaml", "configs/dataflow.yaml"):
    assert shipped in names


# --- the Flex Template: Dockerfile launcher script and parameters -----------


def launcher_script() -> str:
  """The script the Dockerfile writes for the Flex Template launcher."""
  import shlex
  with open(os.path.join(REPO, "Dockerfile")) as f:
    text = f.read().replace("\\\n", " ")
  run = next(line for line in text.splitlines()
             if line.startswith("RUN printf") and "exemplar_flex_main.py" in line)
  tokens = shlex.split(run)
  assert tokens[:3] == ["RUN", "printf", "%s\\n"]
  return "".join(line + "\n" for line in tokens[3:tokens.index(">")])


def template_parameters():
  with open(os.path.join(REPO, "configs", "flex_template_metadata.json")) as f:
    return json.load(f)["parameters"]


def test_dockerfile_copies_what_setup_py_ships():
  import re
  with open(os.path.join(REPO, "Dockerfile")) as f:
    text = f.read()
  copied = re.findall(r"^COPY (?!--)(\S+)", text, flags=re.M)
  assert copied == ["setup.py", "pipeline/", "transforms/", "configs/"]
  assert all(os.path.exists(os.path.join(REPO, path)) for path in copied)
  assert "ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/exemplar_flex_main.py" in text


SAMPLE_VALUES = {
    "input_dir": "gs://bucket/images", "output_dir": "gs://bucket/out",
    "samples_per_class": "2", "seed": "7", "image_size": "24x32",
    "interpolation": "bicubic", "crop_to_aspect_ratio": "true",
    "color_mode": "rgb", "image_format": "png", "jpeg_quality": "90",
    "png_compression": "0", "class_names": "ant,bee",
    "num_shards": "2", "spares": "1", "overwrite": "false"}


def test_every_template_parameter_is_an_exemplar_flag():
  import re

  from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

  from exemplar.options import parse_args
  parameters = template_parameters()
  assert {p["name"] for p in parameters} == set(SAMPLE_VALUES)
  for parameter in parameters:  # each sample value passes its regexes
    for regex in parameter.get("regexes", []):
      assert re.match(regex, SAMPLE_VALUES[parameter["name"]]), parameter["name"]
  namespace = {}
  exec(launcher_script().rsplit("sys.exit", 1)[0], namespace)  # defines flags()
  argv = list(namespace["flags"]([f"--{k}={v}" for k, v in SAMPLE_VALUES.items()]))
  config, beam_args = parse_args(argv)
  # configs/local.yaml says local; the template runs on Dataflow.
  assert beam_args == ["--runner=local", "--runner=DataflowRunner"]
  assert PipelineOptions(beam_args).view_as(StandardOptions).runner == "DataflowRunner"
  assert (config.image.height, config.image.width) == (24, 32)
  assert config.image.crop_to_aspect_ratio is True and config.overwrite is False
  assert (config.samples_per_class, config.seed, config.num_shards) == (2, 7, 2)
  assert config.class_names == ("ant", "bee")


@pytest.mark.slow
def test_launcher_script_runs_template_style_parameters(tmp_path):
  """The launcher passes --name=value; the script turns them into a run."""
  import subprocess
  import sys
  script = tmp_path / "exemplar_flex_main.py"
  script.write_text(launcher_script())
  tree = str(tmp_path / "images")
  make_tree(tree, {"ant": 3, "bee": 2}, seed=2)
  out = str(tmp_path / "out")
  values = dict(SAMPLE_VALUES, input_dir=tree, output_dir=out)
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  done = subprocess.run(
      [sys.executable, str(script), "--runner=local",
       *(f"--{k}={v}" for k, v in values.items())],
      cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  with open(os.path.join(out, "summary.json")) as f:
    summary = json.load(f)
  assert summary["num_examples"] == 4
  assert summary["config"]["image_size"] == [24, 32]
  assert summary["config"]["crop_to_aspect_ratio"] is True
  assert summary["config"]["seed"] == 7
  assert sorted(n for n in os.listdir(out) if n.startswith("exemplar-train")) == [
      "exemplar-train.tfrecord-00000-of-00002", "exemplar-train.tfrecord-00001-of-00002"]
