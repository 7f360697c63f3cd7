"""exemplar as a Kubeflow Pipelines v2 component (kfp SDK 2.x), for Vertex AI
Pipelines or any KFP 2 backend.

    python examples/kfp/exemplar_component.py     # writes exemplar_pipeline.yaml

The `exemplar` step runs the exemplar command in the image the repository's
Dockerfile builds (set EXEMPLAR_IMAGE when compiling). By default it submits
a Dataflow job from that image and waits for it; the workers start from the
same image (`--sdk_container_image`), so nothing is pip-installed at run
time. `--result_file` is written straight to the step's output parameter
`result` (the JSON of README's "Running on a schedule"), which `read_result`
turns into `status` and `num_examples` for later steps.

Exit codes: 0 done or skipped (`--skip_if_unchanged`: same files and options
as the finished dataset already there), 3 a short or empty class; the step
fails on 1 (the job failed), 2 (refused: bad flag, or another run holds the
output folder's lock) and, when `fail_on_short` is true, 3.

Upload the YAML with the Vertex AI SDK, e.g. for a daily schedule:

    from google.cloud import aiplatform
    job = aiplatform.PipelineJob(display_name="exemplar", template_path="exemplar_pipeline.yaml",
                                 parameter_values={"input_dir": "gs://...", "output_dir": "gs://...",
                                                   "project": "P", "temp_location": "gs://.../tmp"})
    job.create_schedule(display_name="exemplar-daily", cron="15 2 * * *")
"""

import os  # no `from __future__ import annotations`: kfp reads the real types
from typing import NamedTuple

from kfp import compiler, dsl

# The Dockerfile's image (its entrypoint is Beam's boot; `command` replaces it).
EXEMPLAR_IMAGE = os.environ.get(
    "EXEMPLAR_IMAGE", "us-central1-docker.pkg.dev/MY_PROJECT/MY_REPO/exemplar:0.2.0")

# Runs exemplar with the arguments after it; exit 3 (short classes) passes
# unless FAIL_ON_SHORT ($0) is true. "$@" keeps every argument as it is.
_RUN = """
fail_on_short="$0"
exemplar "$@"
rc=$?
if [ "$rc" -eq 3 ] && [ "$fail_on_short" != "true" ] && [ "$fail_on_short" != "True" ]; then
  echo "exemplar: short or empty classes; published anyway (fail_on_short is off)" >&2
  rc=0
fi
exit "$rc"
"""


@dsl.container_component
def exemplar(
    input_dir: str,
    output_dir: str,
    result: dsl.OutputPath(str),
    samples_per_class: str = "1",
    seed: int = 0,
    fail_on_short: bool = False,
    runner: str = "DataflowRunner",
    project: str = "MY_PROJECT",
    region: str = "us-central1",
    temp_location: str = "gs://MY_BUCKET/exemplar/tmp",
):
  """Samples input_dir into a TFRecord dataset in output_dir (both gs://)."""
  return dsl.ContainerSpec(
      image=EXEMPLAR_IMAGE,
      command=["sh", "-c", _RUN, fail_on_short],
      args=[
          "--input_dir", input_dir,
          "--output_dir", output_dir,
          "--samples_per_class", samples_per_class,
          "--seed", seed,
          "--skip_if_unchanged",
          "--overwrite",
          "--fail_on_short",
          "--result_file", result,
          "--runner", runner,
          "--project", project,
          "--region", region,
          "--temp_location", temp_location,
          "--sdk_container_image", EXEMPLAR_IMAGE,
      ])


@dsl.component(base_image="python:3.11-slim")
def read_result(result: str, fail_on_short: bool = False) -> NamedTuple(
    "Result", [("status", str), ("num_examples", int), ("classes_short", list)]):
  """The result JSON's fields that later steps branch on."""
  import collections
  import json
  r = json.loads(result)
  print(json.dumps(r, indent=2))
  # A run on an unchanged short dataset is "skipped" with exit 0: fail it here.
  if fail_on_short and r.get("classes_short"):
    raise RuntimeError(f"short or empty classes: {r['classes_short'][:10]}")
  Result = collections.namedtuple("Result", "status num_examples classes_short")
  return Result(r["status"], r.get("num_examples") or 0, r.get("classes_short") or [])


@dsl.pipeline(name="exemplar", description="Re-sample an image tree when it has changed")
def exemplar_pipeline(
    input_dir: str = "gs://MY_BUCKET/images",
    output_dir: str = "gs://MY_BUCKET/exemplar/scheduled",
    samples_per_class: str = "1",
    seed: int = 0,
    fail_on_short: bool = False,
    project: str = "MY_PROJECT",
    region: str = "us-central1",
    temp_location: str = "gs://MY_BUCKET/exemplar/tmp",
):
  run = exemplar(input_dir=input_dir, output_dir=output_dir,
                 samples_per_class=samples_per_class, seed=seed,
                 fail_on_short=fail_on_short, project=project, region=region,
                 temp_location=temp_location)
  # exemplar itself decides whether anything changed: a cached step would
  # never see a changed tree.
  run.set_caching_options(False)
  read_result(result=run.outputs["result"],
              fail_on_short=fail_on_short).set_caching_options(False)


if __name__ == "__main__":
  compiler.Compiler().compile(exemplar_pipeline, package_path="exemplar_pipeline.yaml")
  print("wrote exemplar_pipeline.yaml")
