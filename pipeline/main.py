"""The `exemplar` command: parse, plan, run, report.

    exemplar --input_dir D --output_dir O [--samples_per_class K] [--seed S] ...

With no --input_dir it runs on the embedded demo tree. Exit codes: 0 done,
2 bad invocation or input (one line on stderr), 1 the job failed.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from typing import Dict, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from exemplar import assemble, runners
from exemplar.options import ExemplarConfig, UsageError, first_line, parse_args
from exemplar.transforms import commit, fileio, listing, metadata

_LOGGER = logging.getLogger("exemplar")


def make_plan(config: ExemplarConfig) -> assemble.RunPlan:
  """Resolves the input root, its classes and the output folder; touches
  nothing (the output folder is claimed by `commit.claim_output`).

  Local paths become absolute, so `image/filename` and the manifest's
  source paths name the file from any working directory. Raises ListingError
  or UsageError, each with a one-line reason.
  """
  output_dir = fileio.absolute(config.output_dir)
  if config.input_list is not None:
    input_list = fileio.absolute(config.input_list)
    if not fileio.exists(input_list):
      raise UsageError(f"--input_list {input_list} does not exist")
    # An empty or folder list, an unknown format, a header without labels:
    # refused here, before the output folder is claimed (ListFileError).
    from exemplar.transforms import list_file
    list_file.check_list_file(input_list)
    if config.class_names:
      twice = sorted(name for name, count in
                     collections.Counter(config.class_names).items() if count > 1)
      if twice:
        raise listing.ClassNamesError(f"{twice}: each asked for more than once")
      listing.check_class_names(config.class_names)
    return assemble.RunPlan(input_dir=None, output_dir=output_dir,
                            class_names=config.class_names, input_list=input_list)
  input_dir = config.input_dir
  if input_dir is None:
    from exemplar import demo
    input_dir = demo.ensure_demo_tree()
    _LOGGER.info("No --input_dir: using the demo tree at %s", input_dir)
  input_dir = fileio.absolute(input_dir)
  if fileio.is_within(output_dir, input_dir):
    raise UsageError(
        f"--output_dir {output_dir} is inside --input_dir {input_dir}: the next "
        "run would list its files as a class; choose a folder outside it")
  found = listing.list_class_folders(input_dir)
  class_names = listing.resolve_classes(found, config.class_names)
  return assemble.RunPlan(input_dir=input_dir, output_dir=output_dir,
                          class_names=tuple(class_names))


def make_pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
  options = PipelineOptions(list(beam_args))
  # Workers unpickle DoFns that reference module-level imports.
  options.view_as(beam.options.pipeline_options.SetupOptions).save_main_session = False
  runners.apply_offline_defaults(options)
  return options


# Beam counters that hold the time each stage spent, summed over workers.
STAGE_COUNTERS = (("list and sample", "listing_msec"), ("decode", "decode_msec"),
                  ("write shards", "write_msec"))


@dataclasses.dataclass
class RunOutcome:
  state: str
  counters: Dict[str, int]
  summary: Optional[Dict]  # None when the runner did not run the job here


def run(config: ExemplarConfig, plan: assemble.RunPlan,
        beam_args: Sequence[str]) -> RunOutcome:
  """Runs the job to completion; returns its state, counters and summary."""
  options = make_pipeline_options(beam_args)
  runner = runners.resolve_runner(options.view_as(StandardOptions).runner)
  p = beam.Pipeline(runner=runner, options=options)
  assemble.build(p, config, plan)
  result = p.run()
  state = str(result.wait_until_finish() or result.state)
  summary = (read_summary(plan.output_dir)
             if commit.is_finished(plan.output_dir) else None)
  return RunOutcome(state, collect_counters(result), summary)


def collect_counters(result) -> Dict[str, int]:
  """exemplar's Beam counters (committed values where the runner has them)."""
  try:
    query = result.metrics().query(MetricsFilter().with_namespace("exemplar"))
  except Exception:  # noqa: BLE001 - some runners report no metrics
    return {}
  counters: Dict[str, int] = {}
  for counter in query.get("counters", []):
    value = counter.committed if counter.committed is not None else counter.attempted
    counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + (value or 0)
  return counters


def read_summary(output_dir: str) -> Dict:
  with FileSystems.open(FileSystems.join(output_dir, metadata.SUMMARY_JSON)) as f:
    return json.loads(f.read().decode("utf-8"))


def report(outcome: RunOutcome, output_dir: str, seconds: float) -> str:
  """The closing lines: per-class table, time per stage, where the output is."""
  if outcome.summary is None:
    return (f"job state {outcome.state}; no finished dataset in {output_dir} "
            f"yet (the runner may still be running it)\n")
  summary = outcome.summary
  lines = [metadata.summary_text(summary, limit=30)]
  stages = [(name, outcome.counters[key] / 1000.0)
            for name, key in STAGE_COUNTERS if key in outcome.counters]
  if stages:
    lines.append("time per stage (summed over workers): " + ", ".join(
        f"{name} {secs:.1f} s" for name, secs in stages))
  lines.append(f"wrote {summary['num_examples']} images in "
               f"{len(summary['shards'])} shard(s) to {output_dir} in {seconds:.1f} s")
  return "\n".join(lines) + "\n"


def failure_log(error: BaseException) -> str:
  """Writes the traceback to a file; returns its path."""
  handle, path = tempfile.mkstemp(prefix="exemplar-failure-", suffix=".log")
  with os.fdopen(handle, "w") as f:
    traceback.print_exception(type(error), error, error.__traceback__, file=f)
  return path


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
    lock = commit.claim_output(plan.output_dir, config.overwrite)
    plan = dataclasses.replace(plan, run_id=lock.holder.token)
  except listing.InputRootError as e:
    # Library errors name the path or the names at fault first; the command
    # line names the flag.
    print(f"exemplar: error: --input_dir {one_line(e)}", file=sys.stderr)
    return 2
  except listing.ClassNamesError as e:
    print(f"exemplar: error: --class_names {one_line(e)}", file=sys.stderr)
    return 2
  except listing.UnstorableClassNameError as e:
    print(f"exemplar: error: {one_line(e)} (--class_names: the classes to keep, "
          "comma-separated)", file=sys.stderr)
    return 2
  except (UsageError, listing.ListingError) as e:
    print(f"exemplar: error: {one_line(e)}", file=sys.stderr)
    return 2
  except (commit.OutputError, commit.OutputLocked) as e:
    hint = ("; pass --overwrite to replace it"
            if isinstance(e, commit.DatasetExists) else "")
    print(f"exemplar: error: --output_dir {one_line(e)}{hint}", file=sys.stderr)
    return 2
  try:
    return run_and_report(config, plan, beam_args)
  finally:
    lock.release()


def run_and_report(config: ExemplarConfig, plan: assemble.RunPlan,
                   beam_args: Sequence[str]) -> int:
  """Runs the job on a claimed output folder; prints the report; the exit code."""
  if plan.input_list is None:
    _LOGGER.info("Sampling %s image(s) per class from %d classes under %s",
                 config.samples_per_class, len(plan.class_names), plan.input_dir)
  else:
    _LOGGER.info("Sampling %s image(s) per class from the list %s",
                 config.samples_per_class, plan.input_list)
  started = time.monotonic()
  try:
    outcome = run(config, plan, beam_args)
  except Exception as e:  # noqa: BLE001 - one line for people, the rest in a file
    if commit.committed_run(plan.output_dir) == plan.run_id:
      # The dataset was committed (_SUCCESS written) before the failure: it
      # is complete, and the job did its work.
      _LOGGER.warning("The dataset is complete, but the job then failed: %s",
                      first_line(e))
      outcome = RunOutcome("DONE", {}, read_summary(plan.output_dir))
    else:
      earlier = ("the earlier dataset there is unchanged"
                 if commit.is_finished(plan.output_dir) else "it holds no finished dataset")
      print(f"exemplar: error: the job failed: {first_line(e)} "
            f"(traceback in {failure_log(e)}; {plan.output_dir}: {earlier})",
            file=sys.stderr)
      return 1
  print(report(outcome, plan.output_dir, time.monotonic() - started))
  return 0


def one_line(error: BaseException) -> str:
  """An error's message on one line (names may hold line breaks)."""
  return " ".join(str(error).split("\n"))


if __name__ == "__main__":
  sys.exit(main())
