"""The private Beam APIs exemplar relies on (transforms/beam_internals.py),
checked against the installed Beam.

Each test exercises one function of beam_internals, so a Beam upgrade that
renames, moves or changes a private name fails here, with a message naming
the Beam version and the private name, rather than somewhere deep in a run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import struct

import apache_beam as beam
import pytest

from exemplar.transforms import beam_internals


@contextlib.contextmanager
def private_api(name: str):
  """Fails the test naming Beam's version and `name` on any error inside."""
  try:
    yield
  except Exception as e:  # noqa: BLE001 - any change in the private API
    pytest.fail(
        f"Beam {beam.__version__} (exemplar is written against "
        f"{beam_internals.TESTED_BEAM_VERSION}): the private API {name} is gone "
        f"or changed ({type(e).__name__}: {e}); update "
        f"transforms/beam_internals.py", pytrace=False)


# Every private name beam_internals reaches, as module:attribute.path.
PRIVATE_NAMES = [
    "apache_beam.io.tfrecordio:_TFRecordUtil.write_record",
    "apache_beam.io.tfrecordio:_TFRecordUtil._masked_crc32c",
    "apache_beam.io.gcp.gcsfilesystem:GCSFileSystem._gcsIO",
    "apache_beam.io.filesystems:FileSystems._pipeline_options",
    "apache_beam.io.filesystems:FileSystems.set_options",
    "apache_beam.runners.portability.fn_api_runner:FnApiRunner",
    "apache_beam.options.pipeline_options:PipelineOptions._add_argparse_args",
    "apache_beam.pvalue:AsSideInput._view_options",
    "apache_beam.transforms.sideinputs:SideInputMap",
    "apache_beam.runners.common:DoFnInvoker.create_invoker",
    "apache_beam.runners.common:DoFnSignature",
    "apache_beam.runners.common:DoFnContext",
    "apache_beam.runners.common:Receiver",
    "apache_beam.runners.common:_OutputHandler",
]
DASK_PRIVATE_NAMES = [
    "apache_beam.runners.dask.dask_runner:DaskOptions._extract_bag_kwargs",
    "apache_beam.runners.dask.dask_runner:DaskRunnerResult",
    "apache_beam.runners.dask.overrides:dask_overrides",
    "apache_beam.runners.dask.transform_evaluator:TRANSLATIONS",
    "apache_beam.runners.dask.transform_evaluator:NoOp",
    "apache_beam.runners.dask.transform_evaluator:Flatten",
    "apache_beam.runners.dask.transform_evaluator:get_windowed_value",
]


def has_dask() -> bool:
  try:
    importlib.import_module("apache_beam.runners.dask.dask_runner")
  except ImportError:
    return False
  return True


def resolve(dotted: str):
  module_name, _, attributes = dotted.partition(":")
  value = importlib.import_module(module_name)
  for attribute in attributes.split("."):
    value = getattr(value, attribute)
  return value


@pytest.mark.parametrize("name", PRIVATE_NAMES)
def test_private_name_exists(name):
  with private_api(name):
    resolve(name)


@pytest.mark.parametrize("name", DASK_PRIVATE_NAMES)
def test_dask_private_name_exists(name):
  if not has_dask():
    pytest.skip("Beam's dask extra is not installed")
  with private_api(name):
    resolve(name)


# --- TFRecord framing ----------------------------------------------------------


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
  return crc ^ 0xFFFFFFFF


def masked(crc: int) -> int:
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_masked_crc32c():
  assert crc32c(b"123456789") == 0xE3069283  # the reference check value
  with private_api("apache_beam.io.tfrecordio._TFRecordUtil._masked_crc32c"):
    for data in (b"", b"abc", bytes(range(256)) * 3):
      assert beam_internals.masked_crc32c(data) == masked(crc32c(data))


def test_write_tfrecord_record():
  record = b"an example"
  length = struct.pack("<Q", len(record))
  expected = (length + struct.pack("<I", masked(crc32c(length))) + record
              + struct.pack("<I", masked(crc32c(record))))
  with private_api("apache_beam.io.tfrecordio._TFRecordUtil.write_record"):
    out = io.BytesIO()
    beam_internals.write_tfrecord_record(out, record)
    assert out.getvalue() == expected


# --- gs:// ---------------------------------------------------------------------


def test_gcs_client(monkeypatch):
  from apache_beam.io.gcp import gcsio
  client = object()
  monkeypatch.setattr(gcsio, "create_storage_client", lambda *args, **kwargs: client)
  with private_api("apache_beam.io.gcp.gcsfilesystem.GCSFileSystem._gcsIO().client"):
    assert beam_internals.gcs_client("gs://bucket/some/object") is client


def test_cancel_upload_reaches_the_writer_inside_a_compressed_file():
  from apache_beam.io.filesystem import CompressedFile, CompressionTypes
  from apache_beam.io.gcp.gcsio import BeamBlobWriter

  class Writer(io.BytesIO):
    mode = "wb"
    cancelled = False

    def terminate(self):
      self.cancelled = True

  with private_api("apache_beam.io.filesystem.CompressedFile._file"):
    writer = Writer()
    beam_internals.cancel_upload(CompressedFile(writer, CompressionTypes.GZIP))
    assert writer.cancelled
    plain = Writer()
    beam_internals.cancel_upload(plain)
    assert plain.cancelled
  with private_api("apache_beam.io.gcp.gcsio.BeamBlobWriter.terminate"):
    assert callable(BeamBlobWriter.terminate)


# --- FileSystems options, the in-process runner --------------------------------


def test_filesystems_options():
  from apache_beam.io.filesystems import FileSystems
  from apache_beam.options.pipeline_options import PipelineOptions
  saved = beam_internals.filesystems_options()
  options = PipelineOptions(["--project", "exemplar-test"])
  try:
    with private_api("apache_beam.io.filesystems.FileSystems._pipeline_options"):
      FileSystems.set_options(options)
      assert beam_internals.filesystems_options() is options
  finally:
    FileSystems.set_options(saved)


def test_fn_api_runner_runs_a_pipeline_here():
  from apache_beam.runners.runner import PipelineRunner
  from apache_beam.testing.util import assert_that, equal_to
  with private_api("apache_beam.runners.portability.fn_api_runner.FnApiRunner"):
    runner = beam_internals.fn_api_runner()
    assert isinstance(runner, PipelineRunner)
    with beam.Pipeline(runner=runner) as p:
      assert_that(p | beam.Create([1, 2, 3]) | beam.Map(lambda n: n * 2),
                  equal_to([2, 4, 6]))


def test_the_state_sampling_period_is_what_new_bundles_sample_at():
  from apache_beam.runners.worker import statesampler
  from apache_beam.utils.counters import CounterFactory
  with private_api("apache_beam.runners.worker.statesampler.StateSampler.__init__"):
    saved = statesampler.StateSampler.__init__.__defaults__
    assert saved == (statesampler.DEFAULT_SAMPLING_PERIOD_MS,)
    try:
      beam_internals.set_state_sampling_period(20)
      sampler = statesampler.StateSampler("step", CounterFactory())
      assert sampler.sampling_period_ms == 20
      sampler.start()
      sampler.stop()  # joins the sampler thread
    finally:
      statesampler.StateSampler.__init__.__defaults__ = saved
    assert statesampler.StateSampler("step", CounterFactory()).sampling_period_ms == 200


# --- options -------------------------------------------------------------------


def test_argparse_dests():
  parser = argparse.ArgumentParser()
  parser.add_argument("--input_dir")
  parser.add_argument("--no_sheet", dest="sheet", action="store_false")
  with private_api("argparse.ArgumentParser._actions"):
    assert beam_internals.argparse_dests(parser) == {"help", "input_dir", "sheet"}


def test_add_all_pipeline_options_knows_beams_flags():
  if has_dask():
    importlib.import_module("apache_beam.runners.dask.dask_runner")  # registers its options
  parser = argparse.ArgumentParser(add_help=False)
  with private_api("PipelineOptions.__subclasses__() / _add_argparse_args"):
    beam_internals.add_all_pipeline_options(parser)
    flags = ["--runner=DataflowRunner", "--project=p", "--region=r",
             "--direct_num_workers=2", "--save_main_session", "--setup_file=./setup.py"]
    if has_dask():
      flags.append("--dask_client_address=127.0.0.1:8786")
    _, unknown = parser.parse_known_args(flags + ["--no_such_flag"])
    assert unknown == ["--no_such_flag"]


# --- running a DoFn by hand ----------------------------------------------------


class Tagged(beam.DoFn):
  """Emits main and tagged outputs, with a side input and lifecycle calls."""

  def setup(self):
    self.calls = ["setup"]

  def start_bundle(self):
    self.calls.append("start")

  def process(self, element, extra):
    yield element + sum(extra)
    if element % 2:
      yield beam.pvalue.TaggedOutput("odd", element)

  def finish_bundle(self):
    self.calls.append("finish")


def test_run_dofn_bundle_with_a_side_input_and_tagged_outputs():
  from apache_beam.transforms.window import GlobalWindows
  p = beam.Pipeline()
  side = beam.pvalue.AsList(p | beam.Create([10, 20]))
  do_fn = Tagged()
  outputs = []
  with private_api("apache_beam.pvalue.AsSideInput._view_options"):
    view_options = beam_internals.side_input_view_options(side)
  with private_api("apache_beam.runners.common (DoFnInvoker, _OutputHandler) and "
                   "apache_beam.transforms.sideinputs.SideInputMap"):
    from apache_beam.utils.windowed_value import WindowedValue
    window = GlobalWindows.windowed_value
    side_map = beam_internals.side_input_map(
        type(side), view_options, [window(10), window(20)])
    par_do = beam.ParDo(do_fn, side)  # its args hold a placeholder for the side input
    beam_internals.run_dofn_bundle(
        do_fn, "Tagged", GlobalWindows(), [side_map], par_do.args, par_do.kwargs,
        [window(1), window(2)], lambda tag, value: outputs.append((tag, value)))
    assert isinstance(window(1), WindowedValue)
    assert outputs == [(None, 31), ("odd", 1), (None, 32)]
    assert do_fn.calls == ["setup", "start", "finish"]


# --- Beam's Dask runner --------------------------------------------------------


def test_dask_internals():
  if not has_dask():
    pytest.skip("Beam's dask extra is not installed")
  import dataclasses
  from apache_beam.runners.runner import PipelineRunner
  with private_api("apache_beam.runners.dask.dask_runner.DaskOptions._extract_bag_kwargs"):
    options = {"npartitions": 4, "address": "127.0.0.1:8786"}
    assert beam_internals.dask_bag_kwargs(options) == {"npartitions": 4}
    assert options == {"address": "127.0.0.1:8786"}
  with private_api("apache_beam.runners.dask.dask_runner.DaskRunnerResult"):
    runner, dask_options, result = beam_internals.dask_runner_classes()
    assert issubclass(runner, PipelineRunner)
    assert hasattr(dask_options, "_add_argparse_args")
    assert [f.name for f in dataclasses.fields(result)][:2] == ["client", "futures"]
  with private_api("apache_beam.runners.dask.overrides.dask_overrides"):
    assert beam_internals.dask_overrides()
  with private_api("apache_beam.runners.dask.transform_evaluator.get_windowed_value"):
    assert beam_internals.dask_windowed_value(7, None).value == 7


def test_dask_graph_by_the_internals_computes():
  """FixedDaskRunner's graph (dask_translate for Create, GroupByKey and
  Flatten; run_dofn_bundle for each ParDo), computed by dask in process."""
  if not has_dask():
    pytest.skip("Beam's dask extra is not installed")
  import dask
  from apache_beam.options.pipeline_options import PipelineOptions

  from exemplar.runners import FixedDaskRunner, build_dask_graph
  p = beam.Pipeline(runner=FixedDaskRunner(), options=PipelineOptions([]))
  numbers = p | "Numbers" >> beam.Create(range(6))
  more = p | "More" >> beam.Create([10])
  _ = ((numbers, more) | beam.Flatten() | beam.Map(lambda n: (n % 2, n))
       | beam.GroupByKey() | beam.MapTuple(lambda key, values: (key, sorted(values))))
  with private_api("apache_beam.runners.dask.transform_evaluator.TRANSLATIONS "
                   "(NoOp, Flatten) and the DoFn invoker"):
    leaves = build_dask_graph(p, {"npartitions": 2})
    (result,) = dask.compute(*leaves, scheduler="sync")
    assert sorted(result) == [(0, [0, 2, 4, 10]), (1, [1, 3, 5])]
