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

from tests.conftest import make_tree
from tests.test_gcs import GcsEmulator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "exemplar-dataflow"
JOB_NAME = "exemplar-offline-test"
# The steps a Dataflow user sees (full labels of the pipeline's transforms).
OUR_STEPS = ("Sample/ListAndSample", "Sample/MergeSamples", "DecodeChosen",
             "WriteShards/WriteShard", "TransformGraph/BuildAndCopy", "Finalize")


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> Dict:
  """Builds the Dataflow job for a small tree; returns what it produced."""
  import apache_beam as beam
  from apache_beam.portability.api import beam_runner_api_pb2

  from pipeline import assemble, main, runners
  from pipeline.options import parse_args

  work = tmp_path_factory.mktemp("dataflow")
  tree = str(work / "images")
  make_tree(tree, {"ant": 3, "bee": 2}, seed=2)
  emulator = GcsEmulator(str(work))
  try:
    emulator.start()
    client = emulator.client()
    client.create_bucket(BUCKET)
    template = str(work / "template.json")
    config, beam_args = parse_args([
        "--config", os.path.join(REPO, "configs", "dataflow.yaml"),
        "--input_dir", tree, "--output_dir", str(work / "out"),
        "--project", "exemplar-test", "--region", "us-central1",
        "--temp_location", f"gs://{BUCKET}/tmp",
        "--staging_location", f"gs://{BUCKET}/staging",
        "--setup_file", os.path.join(REPO, "setup.py"),
        "--job_name", JOB_NAME, "--template_location", template, "--no_auth"])
    plan = main.make_plan(config)
    options = main.make_pipeline_options(beam_args)
    runner = runners.resolve_runner(
        options.view_as(beam.options.pipeline_options.StandardOptions).runner)
    assert runner == "DataflowRunner"
    pipeline = beam.Pipeline(runner=runner, options=options)
    assemble.build(pipeline, config, plan)
    result = pipeline.run()
    staged = {blob.name.rsplit("/", 1)[-1]: blob.download_as_bytes()
              for blob in client.list_blobs(BUCKET, prefix="staging/")}
    with open(template) as f:
      description = json.load(f)
    return {
        "result": result,
        "description": description,
        "staged": staged,
        "proto": beam_runner_api_pb2.Pipeline.FromString(staged["pipeline.pb"]),
    }
  finally:
    emulator.stop()


@pytest.mark.slow
def test_job_is_described_not_submitted(job):
  assert job["result"].has_job is False  # a template: no job id, no submission
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
