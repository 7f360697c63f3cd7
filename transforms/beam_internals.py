"""Every private Beam API exemplar relies on, one function per use.

Where Beam's public API falls short, exemplar reaches into Beam's internals:
names with a leading '_', and runner machinery that is Beam's implementation
rather than its user API. Every such use is here, with why it is needed, so
that a Beam upgrade that changes one breaks in one known place:
tests/test_beam_internals.py checks each against the installed Beam and
fails naming the Beam version and the private name.

Written against apache-beam 2.77.0 (pinned in setup.py). Beam is imported
inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Iterable, List, Optional, Sequence, Set, Tuple

TESTED_BEAM_VERSION = "2.77.0"


# --- TFRecord framing: apache_beam.io.tfrecordio._TFRecordUtil --------------


def write_tfrecord_record(file_handle, record: bytes) -> None:
  """Writes `record` to `file_handle` (anything with `write`) framed as
  TFRecord: length, masked CRC32C of the length, data, masked CRC32C of it.

  Why: exemplar writes each shard itself, decoded and written whole by one
  task and renamed into place (transforms/writing.py), not through Beam's
  WriteToTFRecord sink, whose finalize step fails on runners that run set-up
  more than once. `_TFRecordUtil.write_record` is Beam's framing, with the
  fastest CRC32C Beam finds installed.
  """
  from apache_beam.io.tfrecordio import _TFRecordUtil
  _TFRecordUtil.write_record(file_handle, record)


def masked_crc32c(data: bytes) -> int:
  """TFRecord's checksum of `data` (CRC32C, rotated and offset).

  Why: `exemplar-inspect --verify` checks both checksums of every record
  without TensorFlow (pipeline/records.py); `_TFRecordUtil._masked_crc32c`
  is Beam's, on the fastest CRC32C implementation installed.
  """
  from apache_beam.io.tfrecordio import _TFRecordUtil
  return _TFRecordUtil._masked_crc32c(data)


# --- gs:// -------------------------------------------------------------------


def gcs_client(path: str):
  """The google.cloud.storage client of the job's GCS file system (for a
  gs:// `path`).

  Why: exemplar names gs:// objects exactly (Beam's FileSystems.match and
  delete take glob patterns; transforms/fileio.py), lists first-level
  prefixes with a delimiter and class folders in key ranges
  (transforms/listing.py) and creates its lock object only if absent
  (transforms/lock.py): none of these is in Beam's FileSystem API.
  `GCSFileSystem._gcsIO()` is the GcsIO built from the job's pipeline options
  (credentials, endpoint, retries); its `client` is the storage client.
  """
  from apache_beam.io.filesystems import FileSystems
  return FileSystems.get_filesystem(path)._gcsIO().client


def cancel_upload(file_handle) -> None:
  """Cancels a gs:// upload opened with `FileSystems.create`, so that nothing
  of it appears (closing it would publish what was written so far).

  Why: Beam's file API has no abort. For a path Beam treats as compressed,
  the writer is wrapped in a `CompressedFile`, whose private `_file` is the
  GCS writer (a google.cloud.storage BlobWriter: `terminate()` cancels).
  """
  getattr(file_handle, "_file", file_handle).terminate()


# --- process-wide FileSystems options ----------------------------------------


def filesystems_options():
  """The pipeline options `FileSystems` currently uses, process-wide (None
  before any were set); `FileSystems.set_options` (public) puts them back.

  Why: constructing a `beam.Pipeline` replaces them with its own options for
  the whole process. transforms/tft_graph.py runs TFT in a nested pipeline on
  a worker and must give the job's options (GCS endpoint, credentials) back
  afterwards; Beam keeps them only in the private
  `FileSystems._pipeline_options`.
  """
  from apache_beam.io.filesystems import FileSystems
  return FileSystems._pipeline_options


# --- the in-process runner ---------------------------------------------------


def fn_api_runner():
  """A new instance of Beam's in-process FnApiRunner.

  Why: exemplar's local default (pipeline/runners.py) and the TFT graph's
  nested pipeline (transforms/tft_graph.py) must run here and offline.
  Beam's public names for a local run ('DirectRunner') first try the Prism
  runner, which downloads a binary; the FnApiRunner is reached only by its
  runner-internal module path.
  """
  from apache_beam.runners.portability.fn_api_runner import FnApiRunner
  return FnApiRunner()


def set_state_sampling_period(period_ms: int) -> None:
  """Makes each new bundle's state sampler (Beam's per-step timer) sample at
  most `period_ms` apart, instead of Beam's 200 ms. Process-wide: for a
  command's own in-process runs only (exemplar.main.console_main).

  Why: a bundle ends by joining its sampler thread, which sleeps between
  samples in steps growing to the period ("May have to wait up to
  sampling_period_ms", statesampler_fast.pyx). Every bundle longer than about
  a second (the transform graph, decoding, the contact sheet, the finish)
  so waits up to 200 ms, ~100 ms on average, with both cores idle: on a k=1
  run of 1,000 classes the 20 ms period took 10.4-11.5 s to 10.0 s. Beam has
  no option for it: `StateSampler(...)` is built by the SDK worker's
  BundleProcessor with its default period, which this changes.
  """
  from apache_beam.runners.worker.statesampler import StateSampler
  init = StateSampler.__init__
  names = init.__code__.co_varnames[:init.__code__.co_argcount]
  if names[-len(init.__defaults__):] != ("sampling_period_ms",):
    raise TypeError(f"StateSampler.__init__{names} has no sole default sampling_period_ms")
  init.__defaults__ = (period_ms,)


# --- pipeline options --------------------------------------------------------


def argparse_dests(parser: argparse.ArgumentParser) -> Set[str]:
  """The destination names of every argument `parser` defines.

  Why: a config file's keys are checked against exemplar's flags
  (pipeline/options.py); argparse lists a parser's arguments only in its
  private `_actions`. (The standard library's, not Beam's; kept here with the
  other private uses.)
  """
  return {action.dest for action in parser._actions}


def add_all_pipeline_options(parser: argparse.ArgumentParser) -> None:
  """Adds the flags of every registered `PipelineOptions` subclass to
  `parser`, as Beam builds its own parser (an option two classes register
  is added once).

  Why: exemplar refuses a flag that no Beam option knows before any job
  starts (pipeline/options.py, `check_beam_args`); Beam only warns and drops
  it. Beam's own parser is built by walking `PipelineOptions.__subclasses__()`
  and calling each class's private `_add_argparse_args`.
  """
  from apache_beam.options.pipeline_options import PipelineOptions
  seen = set()

  def register(cls):
    for sub in cls.__subclasses__():
      if sub not in seen:
        seen.add(sub)
        try:
          sub._add_argparse_args(parser)
        except argparse.ArgumentError:
          pass  # an option registered by two classes
        register(sub)
  register(PipelineOptions)


# --- running a DoFn by hand (pipeline/runners.py, FixedDaskRunner) -----------
#
# FixedDaskRunner runs each Beam ParDo over a Dask partition itself (Beam
# 2.77's Dask translation of ParDo mixes tagged outputs and recomputes side
# inputs; see pipeline/runners.py), with the worker machinery Beam's own
# runners use: apache_beam.runners.common and transforms.sideinputs.


def side_input_view_options(side_input) -> Any:
  """A side input's view options (how its values are presented: AsList,
  AsSingleton's default, ...), to rebuild the view on a Dask worker.

  Why: only the private `AsSideInput._view_options()` gives them.
  """
  return side_input._view_options()


def side_input_map(view_class, view_options, windowed_values: Sequence) -> Any:
  """Beam's `SideInputMap` over a side input's windowed values: what a DoFn
  invoker takes as one side input.

  Why: `apache_beam.transforms.sideinputs.SideInputMap` is runner machinery,
  not user API.
  """
  from apache_beam.transforms.sideinputs import SideInputMap
  return SideInputMap(view_class, view_options, windowed_values)


def run_dofn_bundle(do_fn, label: str, window_fn, side_inputs: Sequence,
                    args: Sequence, kwargs: dict, windowed_elements: Iterable,
                    emit: Callable[[Optional[str], Any], None]) -> None:
  """Runs `do_fn` over `windowed_elements` as one bundle (setup, start
  bundle, process each, finish bundle, teardown); `emit(tag, value)` gets
  every output, tag None for the main output.

  Why: Beam's `DoFnInvoker`, `DoFnSignature`, `DoFnContext`, `Receiver` and
  the private `_OutputHandler` (apache_beam.runners.common) are how Beam's
  own runners invoke a DoFn, with its side inputs, tagged outputs and
  lifecycle methods; Beam has no public API for that.
  """
  from apache_beam import DoFn
  from apache_beam.runners.common import (DoFnContext, DoFnInvoker, DoFnSignature,
                                          Receiver, _OutputHandler)

  class TagReceiver(Receiver):
    def __init__(self, tag):
      self.tag = tag

    def receive(self, windowed_value):
      emit(self.tag, windowed_value.value)

  class Receivers(dict):
    def __missing__(self, tag):
      self[tag] = TagReceiver(tag)
      return self[tag]

  receivers = Receivers()
  invoker = DoFnInvoker.create_invoker(
      DoFnSignature(do_fn),
      _OutputHandler(
          window_fn=window_fn, main_receivers=receivers[None],
          tagged_receivers=receivers, per_element_output_counter=None,
          output_batch_converter=None, process_yields_batches=False,
          process_batch_yields_elements=False),
      context=DoFnContext(label, state=None), side_inputs=list(side_inputs),
      input_args=list(args), input_kwargs=dict(kwargs),
      user_state_context=None, bundle_finalizer_param=DoFn.BundleFinalizerParam())
  invoker.invoke_setup()
  invoker.invoke_start_bundle()
  for windowed_element in windowed_elements:
    invoker.invoke_process(windowed_element)
  invoker.invoke_finish_bundle()
  invoker.invoke_teardown()


# --- Beam's Dask runner (apache_beam.runners.dask) ---------------------------
#
# FixedDaskRunner subclasses Beam's DaskRunner and keeps its translation of
# every transform but ParDo. The modules below are the runner's
# implementation; DaskRunner and DaskOptions themselves are public. Each
# function raises ImportError without Beam's dask extra.


def dask_windowed_value(element, window_fn) -> Any:
  """An element as the WindowedValue the Dask runner's translations use.

  Why: `transform_evaluator.get_windowed_value` is the Dask runner's.
  """
  from apache_beam.runners.dask import transform_evaluator
  return transform_evaluator.get_windowed_value(element, window_fn)


def dask_translate(node, input_bags: List, bag_kwargs: dict):
  """The dask bag of one applied transform (not a ParDo), by Beam's Dask
  translation (`transform_evaluator.TRANSLATIONS`; a transform it does not
  know is its NoOp; a Flatten takes every input bag).

  Why: FixedDaskRunner keeps Beam's translation of Create, GroupByKey,
  Flatten and the rest, which the Dask runner keeps in these internals.
  """
  from apache_beam.runners.dask import transform_evaluator as evaluator
  op_class = evaluator.TRANSLATIONS.get(node.transform.__class__, evaluator.NoOp)
  op = op_class(node, bag_kwargs=bag_kwargs)
  if isinstance(op, evaluator.Flatten):
    return op.apply(input_bags)
  return op.apply(input_bags[0] if input_bags else None)


def dask_overrides() -> List:
  """The PTransform overrides the Dask runner applies before translating.

  Why: `overrides.dask_overrides()` is the Dask runner's; FixedDaskRunner
  builds its graph the same way.
  """
  from apache_beam.runners.dask import overrides
  return overrides.dask_overrides()


def dask_bag_kwargs(dask_options: dict) -> dict:
  """Takes the dask.bag arguments (npartitions, partition_size) out of the
  Dask options (in place) and returns them.

  Why: `DaskOptions._extract_bag_kwargs` is how DaskRunner.run_pipeline
  splits them from the Client's arguments.
  """
  from apache_beam.runners.dask import dask_runner
  return dask_runner.DaskOptions._extract_bag_kwargs(dask_options)


def dask_runner_classes() -> Tuple[type, type, type]:
  """(DaskRunner, DaskOptions, DaskRunnerResult) of Beam's Dask runner.

  Why: FixedDaskRunner subclasses DaskRunner, and its result subclasses
  `DaskRunnerResult`, a dataclass of (client, futures): the Dask runner's
  internal result type.
  """
  from apache_beam.runners.dask import dask_runner
  return dask_runner.DaskRunner, dask_runner.DaskOptions, dask_runner.DaskRunnerResult
