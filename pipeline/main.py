"""The `exemplar` command: parse, plan, run, report.

    exemplar --input_dir D --output_dir O [--samples_per_class K] [--seed S] ...

With no --input_dir it runs on the embedded demo tree. Exit codes: 0 done,
2 bad invocation or input (one line on stderr), 1 the job failed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline import assemble, runners
from pipeline.options import ExemplarConfig, UsageError, parse_args
from transforms import commit, listing, metadata

_LOGGER = logging.getLogger("exemplar")


def make_plan(config: ExemplarConfig) -> assemble.RunPlan:
  """Resolves the input root and its classes, and readies the output folder.

  Raises ListingError, OutputError or UsageError, each with a one-line reason.
  """
  input_dir = config.input_dir
  if input_dir is None:
    from pipeline import demo
    input_dir = demo.ensure_demo_tree()
    _LOGGER.info("No --input_dir: using the demo tree at %s", input_dir)
  input_dir = listing.normalize_root(input_dir)
  found = listing.list_class_folders(input_dir)
  class_names = listing.resolve_classes(found, config.class_names)
  output_dir = listing.normalize_root(config.output_dir)
  commit.prepare_output(output_dir, config.overwrite)
  return assemble.RunPlan(input_dir=input_dir, output_dir=output_dir,
                          class_names=tuple(class_names))


def make_pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
  options = PipelineOptions(list(beam_args))
  # Workers unpickle DoFns that reference module-level imports.
  options.view_as(beam.options.pipeline_options.SetupOptions).save_main_session = False
  return options


def run(config: ExemplarConfig, plan: assemble.RunPlan,
        beam_args: Sequence[str]) -> Dict:
  """Runs the job to completion and returns the run summary."""
  options = make_pipeline_options(beam_args)
  runner_name = options.view_as(StandardOptions).runner
  runner = runners.resolve_runner(runner_name)
  with beam.Pipeline(runner=runner, options=options) as p:
    assemble.build(p, config, plan)
  return read_summary(plan.output_dir)


def read_summary(output_dir: str) -> Dict:
  with FileSystems.open(FileSystems.join(output_dir, metadata.SUMMARY_JSON)) as f:
    return json.loads(f.read().decode("utf-8"))


def report(summary: Dict, output_dir: str, seconds: float) -> str:
  text = metadata.summary_text(summary, limit=30)
  return (text + f"\nwrote {summary['num_examples']} images in "
          f"{len(summary['shards'])} shard(s) to {output_dir} in {seconds:.1f} s\n")


def configure_logging() -> None:
  """Progress from exemplar; only warnings from Beam, TF and their C++ cores."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  logging.basicConfig(level=logging.INFO,
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  for noisy in ("absl", "tensorflow", "apache_beam"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Optional[List[str]] = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  configure_logging()
  try:
    config, beam_args = parse_args(argv)
    plan = make_plan(config)
  except (UsageError, listing.ListingError, commit.OutputError) as e:
    print(f"exemplar: error: {e}", file=sys.stderr)
    return 2
  _LOGGER.info("Sampling %s image(s) per class from %d classes under %s",
               config.samples_per_class, len(plan.class_names), plan.input_dir)
  started = time.monotonic()
  summary = run(config, plan, beam_args)
  print(report(summary, plan.output_dir, time.monotonic() - started))
  return 0


if __name__ == "__main__":
  sys.exit(main())
