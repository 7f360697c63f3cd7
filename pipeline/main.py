"""The `exemplar` command: parse, plan, run, report.

    exemplar --input_dir D --output_dir O [--samples_per_class K] [--seed S] ...

With no --input_dir it runs on the embedded demo tree. Exit codes (README,
"Running on a schedule"): 0 done, or skipped by --skip_if_unchanged; 1 the
job failed; 2 a bad invocation or input, or a refused run (one line on
stderr); 3 done, with a short or empty class, under --fail_on_short.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import gc
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from typing import Callable, Dict, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from exemplar import assemble, console, prelist, runners
from exemplar.options import ExemplarConfig, UsageError, first_line, parse_args
from exemplar.transforms import (beam_internals, changes, commit, fileio, fingerprint, listing,
                                  metadata, progress, sample_images)

_LOGGER = logging.getLogger("exemplar")


def make_plan(config: ExemplarConfig) -> assemble.RunPlan:
  """Resolves the input root, its classes and the output folder; touches
  nothing (the output folder is claimed by `commit.claim_output`).

  Local paths become absolute, so `image/filename` and the manifest's
  source paths name the file from any working directory. Raises ListingError
  or UsageError, each with a one-line reason.
  """
  output_dir = fileio.absolute(config.output_dir)
  _check_utf8("--output_dir", output_dir)
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
  _check_utf8("--input_dir", input_dir)
  if fileio.is_within(output_dir, input_dir):
    raise UsageError(
        f"--output_dir {output_dir} is inside --input_dir {input_dir}: the next "
        "run would list its files as a class; choose a folder outside it")
  found = listing.list_class_folders(input_dir)
  class_names = listing.resolve_classes(found, config.class_names)
  return assemble.RunPlan(input_dir=input_dir, output_dir=output_dir,
                          class_names=tuple(class_names))


def _check_utf8(flag: str, path: str) -> None:
  """Refuses a path that is not valid UTF-8 (bytes a local file system allows
  in a name): its records, manifest and summary could not name it."""
  if not listing.is_utf8(path):
    raise UsageError(f"{flag} {listing.printable(path)!r} is not valid UTF-8 (U+FFFD "
                     "marks the bytes that are not): rename it or choose another folder")


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
        beam_args: Sequence[str], run_info: Optional[Dict] = None,
        after_imports: Optional[Callable[[], None]] = None) -> RunOutcome:
  """Runs the job to completion; returns its state, counters and summary.
  `run_info`: fingerprints and start time, for summary.json's "run".
  `after_imports`: called once TF and TFT are imported, before an
  in-process job starts (the command freezes the collector there)."""
  options = make_pipeline_options(beam_args)
  runner = runners.resolve_runner(options.view_as(StandardOptions).runner)
  prelisted = None
  capacity = prelist_capacity(config, plan, beam_args)
  if capacity is not None:
    # The tree is listed on the other core while this one imports what the
    # job's first stages would import anyway (exemplar/prelist.py).
    # `with`: an import that fails or is interrupted ends the child too.
    with prelist.start(plan.input_dir, plan.class_names, config.seed, capacity,
                       in_process_workers(options)) as prelisting:
      prelist.import_job_libraries()
      prelisted = prelisting.result()
  if after_imports is not None and in_process(beam_args):
    prelist.import_job_libraries()  # already done when the tree was prelisted
    after_imports()
  p = beam.Pipeline(runner=runner, options=options)
  assemble.build(p, config, plan, run_info, prelisted)
  result = p.run()
  state = str(result.wait_until_finish() or result.state)
  summary = (read_summary(plan.output_dir)
             if commit.is_finished(plan.output_dir) else None)
  return RunOutcome(state, collect_counters(result), summary)


def in_process_workers(options: PipelineOptions) -> int:
  """How many class folders an in-process job lists at once (its workers)."""
  from apache_beam.options.pipeline_options import DirectOptions
  workers = options.view_as(DirectOptions).direct_num_workers
  if not workers:  # 0: one per core, as Beam's FnApiRunner reads it
    return os.cpu_count() or 1
  return max(1, workers)


def prelist_capacity(config: ExemplarConfig, plan: assemble.RunPlan,
                     beam_args: Sequence[str]) -> Optional[int]:
  """The per-class sample size to list beside the imports, or None where
  that does not pay: a list file or a remote tree (nothing to walk here), a
  job whose stages run in other processes (they import for themselves), or
  every file kept (a sample as large as the tree, listed in no time next to
  decoding it)."""
  if (plan.input_dir is None or not fileio.is_local(plan.input_dir)
      or not in_process(beam_args)):
    return None
  k, sampling = assemble.sampling_args(config)
  capacity = sample_images.check_sample_args(
      k, sampling["spares"], sampling["seed"], sampling["splits"],
      sampling["min_per_class"], sampling["max_per_class"]).capacity
  return None if capacity == sample_images.UNBOUNDED else capacity


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
  if summary.get("changes"):
    compared = summary["changes"].get("compared_to")
    lines += changes.change_lines(
        summary["changes"], since="the last dataset" if compared == output_dir else compared)
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
  # Dataflow's "Created job with id: [...]" line, which orchestrators parse.
  logging.getLogger("apache_beam.runners.dataflow").setLevel(logging.INFO)


EXIT_DONE, EXIT_FAILED, EXIT_USAGE, EXIT_SHORT = 0, 1, 2, 3


def fingerprints(config: ExemplarConfig, plan: assemble.RunPlan) -> Dict:
  """The run's configuration fingerprint and, for a scheduled run
  (--skip_if_unchanged or --result_file), its input fingerprint
  (transforms/fingerprint.py): a stat of every file, ~10 s per million, which
  an interactive run does not pay."""
  described = dict(config.describe(), contact_sheet=config.contact_sheet,
                   input_dir=plan.input_dir, input_list=plan.input_list)
  prints = {"config_fingerprint": fingerprint.config_fingerprint(
      described, metadata.package_versions(("exemplar",))["exemplar"])}
  if config.skip_if_unchanged or config.result_file:
    listed = fingerprint.input_fingerprint(plan.input_dir, plan.class_names or (),
                                           plan.input_list)
    prints.update(input_fingerprint=listed["fingerprint"], input_files=listed["files"])
  return prints


def is_unchanged(output_dir: str, prints: Dict) -> bool:
  """Whether `output_dir` holds a finished dataset of the same fingerprints."""
  if not commit.is_finished(output_dir):
    return False
  try:
    run = read_summary(output_dir).get("run") or {}
  except Exception:  # noqa: BLE001 - an unreadable summary: not the same dataset
    return False
  return (run.get("input_fingerprint") == prints.get("input_fingerprint") is not None
          and run.get("config_fingerprint") == prints["config_fingerprint"])


def main(argv: Optional[List[str]] = None,
         after_imports: Optional[Callable[[], None]] = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  configure_logging()
  stderr_filter = None if "--verbose" in argv else console.quiet()
  try:
    return _main(argv, stderr_filter, after_imports)
  finally:
    progress.show_bars(None)
    if stderr_filter is not None:
      stderr_filter.close()


def console_main() -> int:
  """The `exemplar` command (setup.py's entry point): `main`, then a quick exit.

  By the time `main` returns every file is closed and every stream flushed.
  `gc.freeze()` then moves the millions of objects left (TensorFlow's and
  Beam's modules) out of the collector's reach, so the interpreter's exit
  skips its last full collection over them: ~1.3 s of a k=1 run. Exit
  handlers still run. Library callers of `main` (tests, notebooks) keep the
  collector as it was.
  """
  _return_large_blocks_to_the_os()
  # In-process runs end each long bundle ~100 ms sooner (beam_internals).
  beam_internals.set_state_sampling_period(STATE_SAMPLING_PERIOD_MS)
  code = main(after_imports=_settle_in_process_job)
  gc.freeze()
  return code


def _settle_in_process_job() -> None:
  """Once TF and Beam are imported, before an in-process job starts."""
  _one_tf_thread_per_call()
  # Their millions of objects are moved out of the collector's reach: its
  # full passes over them cost ~1 s of a k=1 run (8 of them, 0.26 s for the
  # last one after the imports).
  gc.freeze()


def _one_tf_thread_per_call() -> None:
  """Runs each TF call's ops on the thread that calls it (TF's inter-op and
  intra-op pools of one thread), unless the user set either pool's size
  (`TF_NUM_INTEROP_THREADS`, `TF_NUM_INTRAOP_THREADS`) or TF has started.

  The decode stage already runs two calls per core on its own threads
  (transforms/decode_tasks.py); TF's default pools, one thread per core
  each, only add threads that spin while waiting for work and take the
  cores from the threads holding the GIL. `all` on 10,000 photos: 25.8-27.1
  s -> 23.4 s, CPU time 36-38 s -> 32 s. A process-wide setting: the command
  makes it, never the library.
  """
  if {"TF_NUM_INTEROP_THREADS", "TF_NUM_INTRAOP_THREADS"} & set(os.environ):
    return
  import tensorflow as tf
  try:
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
  except RuntimeError:  # TF's context is up: its pools are made
    pass


# The longest wait for Beam's per-step timer thread at the end of a bundle.
STATE_SAMPLING_PERIOD_MS = 20

# glibc's mallopt parameter for the size from which malloc maps a block on its
# own (released to the OS on free) instead of carving it from the heap.
_M_MMAP_THRESHOLD = -3


def _return_large_blocks_to_the_os() -> None:
  """glibc only (a no-op elsewhere): blocks of 1 MiB and more get their own
  mapping, given back when freed.

  By default glibc raises that threshold to the largest block freed so far
  (up to 32 MiB), so after the first contact-sheet page (7.6 MB of pixels)
  every page, PNG and thumbnail buffer is carved from a heap that freeing
  cannot shrink, and the run's peak grows with their fragments. The same
  knob Dask documents for its workers (MALLOC_TRIM_THRESHOLD_); here set
  once by the command, never by the library. k=1 on 1,000 classes: peak
  891-897 MiB -> 877 MiB.
  """
  try:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
  except (OSError, AttributeError):  # not glibc
    pass


def _main(argv: List[str], stderr_filter,
          after_imports: Optional[Callable[[], None]] = None) -> int:
  started = time.time()
  config = None
  try:
    config, beam_args = parse_args(argv)
    plan = make_plan(config)
    if config.compare_to and not commit.is_finished(fileio.absolute(config.compare_to)):
      raise UsageError(f"--compare_to {config.compare_to} holds no finished exemplar dataset")
    prints = fingerprints(config, plan)
    if config.skip_if_unchanged and is_unchanged(plan.output_dir, prints):
      print(f"exemplar: {plan.output_dir} is up to date (input and configuration "
            "unchanged); nothing written")
      summary = read_summary(plan.output_dir)
      # Still short: a re-run does not turn a failed night green.
      code = (EXIT_SHORT if config.fail_on_short and summary.get("classes_short")
              else EXIT_DONE)
      return finish(config, plan.output_dir, prints, started, code, "skipped", summary)
    lock = commit.claim_output(plan.output_dir, config.overwrite,
                               resume_key=prints_key(prints))
    plan = dataclasses.replace(plan, run_id=lock.holder.token)
  except listing.InputRootError as e:
    # Library errors name the path or the names at fault first; the command
    # line names the flag.
    message = f"--input_dir {one_line(e)}"
  except listing.ClassNamesError as e:
    message = f"--class_names {one_line(e)}"
  except listing.UnstorableClassNameError as e:
    message = (f"{one_line(e)} (--class_names: the classes to keep, "
               "comma-separated)")
  except (UsageError, listing.ListingError) as e:
    message = one_line(e)
  except (commit.OutputError, commit.OutputLocked) as e:
    hint = ("; pass --overwrite to replace it"
            if isinstance(e, commit.DatasetExists) else "")
    message = f"--output_dir {one_line(e)}{hint}"
  else:
    message = None
  if message is not None:
    print(f"exemplar: error: {message}", file=sys.stderr)
    if config is not None:
      finish(config, fileio.absolute(config.output_dir), None, started, EXIT_USAGE,
             "refused", None, error=message)
    return EXIT_USAGE
  try:
    if stderr_filter is not None and in_process(beam_args) and stderr_filter.original.isatty():
      progress.show_bars(stderr_filter.original)
    code, status, summary = run_and_report(config, plan, beam_args, prints, started,
                                           after_imports)
  finally:
    lock.release()
  return finish(config, plan.output_dir, prints, started, code, status, summary)


def in_process(beam_args: Sequence[str]) -> bool:
  """Whether the job's stages run in this process (where bars can be drawn)."""
  from apache_beam.options.pipeline_options import DirectOptions
  options = PipelineOptions(list(beam_args))
  runner = options.view_as(StandardOptions).runner
  return (runners.is_local(runner)
          and options.view_as(DirectOptions).direct_running_mode != "multi_processing")


def prints_key(prints: Dict) -> str:
  """What a killed run's staged shards must match to be reused (each shard
  also checks its own decode tasks, which name every file it reads)."""
  return f"{prints.get('input_fingerprint', 'unlisted')}-{prints['config_fingerprint']}"


def finish(config: ExemplarConfig, output_dir: str, prints: Optional[Dict],
           started: float, code: int, status: str, summary: Optional[Dict],
           error: Optional[str] = None) -> int:
  """Writes --result_file (when given); returns the exit code."""
  if config.result_file:
    result = result_json(output_dir, prints, started, code, status, summary, error)
    try:
      fileio.write_file_atomically(
          fileio.absolute(config.result_file),
          [json.dumps(result, indent=2, sort_keys=True).encode("utf-8") + b"\n"])
    except Exception as e:  # noqa: BLE001 - the run's outcome stands; say so
      print(f"exemplar: error: --result_file {config.result_file} cannot be written: "
            f"{first_line(e)}", file=sys.stderr)
      return code or EXIT_FAILED
  return code


def result_json(output_dir: str, prints: Optional[Dict], started: float, code: int,
                status: str, summary: Optional[Dict], error: Optional[str]) -> Dict:
  """The --result_file's content (a pure function)."""
  summary = summary or {}
  finished = time.time()
  run = summary.get("run") or {}
  return {
      "status": status,
      "exit_code": code,
      "skipped": status == "skipped",
      "output_dir": output_dir,
      "error": error,
      "input_fingerprint": (prints or run).get("input_fingerprint"),
      "config_fingerprint": (prints or run).get("config_fingerprint"),
      "dataset_fingerprint": run.get("dataset_fingerprint"),
      "num_examples": summary.get("num_examples"),
      "num_failed": summary.get("num_failed"),
      "per_split": {s["name"]: s["num_examples"] for s in summary.get("splits", [])},
      "per_class": {c["class_name"]: c.get("per_split", {"train": c["sampled"]})
                    for c in summary.get("per_class", [])},
      "classes_short": summary.get("classes_short"),
      "changes": summary.get("changes"),
      "started": metadata.utc_stamp(started),
      "finished": metadata.utc_stamp(finished),
      "duration_sec": round(finished - started, 3),
      "versions": metadata.package_versions(("exemplar", "apache-beam")),
  }


def run_and_report(config: ExemplarConfig, plan: assemble.RunPlan,
                   beam_args: Sequence[str], prints: Dict, started_at: float,
                   after_imports: Optional[Callable[[], None]] = None):
  """Runs the job on a claimed output folder; prints the report; returns
  (exit code, status, summary)."""
  asked = (f"splits {config.splits}" if config.splits
           else f"{config.samples_per_class} image(s)")
  if plan.input_list is None:
    _LOGGER.info("Sampling %s per class from %d classes under %s",
                 asked, len(plan.class_names), plan.input_dir)
  else:
    _LOGGER.info("Sampling %s per class from the list %s", asked, plan.input_list)
  started = time.monotonic()
  try:
    try:
      outcome = run(config, plan, beam_args, dict(prints, started=started_at),
                    after_imports)
    finally:
      progress.show_bars(None)  # the bars end above the report
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
      return EXIT_FAILED, "failed", None
  print(report(outcome, plan.output_dir, time.monotonic() - started))
  summary = outcome.summary
  if summary is None:  # a runner that does not wait (the job runs elsewhere)
    return EXIT_DONE, "submitted", None
  if summary.get("classes_short"):
    if config.fail_on_short:
      print(f"exemplar: error: {len(summary['classes_short'])} class(es) short or empty "
            f"(--fail_on_short): {', '.join(summary['classes_short'][:10])}",
            file=sys.stderr)
      return EXIT_SHORT, "short", summary
    return EXIT_DONE, "short", summary
  return EXIT_DONE, "done", summary


def one_line(error: BaseException) -> str:
  """An error's message on one line (names may hold line breaks)."""
  return " ".join(str(error).split("\n"))


if __name__ == "__main__":
  sys.exit(console_main())
