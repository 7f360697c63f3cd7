"""The same input and seed give byte-identical datasets on every runner.

Runners: Beam's in-process FnApiRunner (the default), its multi-process mode,
the PortableRunner with the embedded job service, and a real Dask cluster: a
`dask scheduler` and two `dask worker` processes on 127.0.0.1, started here
with the `dask` CLI beside this Python, one of which is killed mid-run.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

import pytest

from tests.conftest import make_tree, run_cli

pytestmark = pytest.mark.slow  # multi-process, portable and Dask runners: seconds each

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASK_CLI = os.path.join(os.path.dirname(sys.executable), "dask")
START_TIMEOUT = 60.0
# What must be byte-identical across runners (summary.json names the output
# folder and the TFT SavedModel embeds random ids, so they are not compared).
COMPARED = ("manifest.csv", "class_names.txt", "errors.csv")
RUN_FLAGS = ["--samples_per_class", "3", "--seed", "11", "--image_size", "24", "32",
             "--num_shards", "3"]


def dataset_files(out: str) -> Dict[str, bytes]:
  """The shards and the compared metadata of an output folder, by name."""
  names = sorted(n for n in os.listdir(out)
                 if n.startswith("exemplar-train.tfrecord-") or n in COMPARED)
  files = {}
  for name in names:
    with open(os.path.join(out, name), "rb") as f:
      files[name] = f.read()
  return files


def tfrecord_payloads(data: bytes) -> List[bytes]:
  """The records of a TFRecord file's bytes (length, crc, data, crc frames)."""
  records, pos = [], 0
  while pos + 12 <= len(data):
    (length,) = struct.unpack("<Q", data[pos:pos + 8])
    records.append(data[pos + 12:pos + 12 + length])
    pos += 12 + length + 4
  return records


def shard_rows(files: Dict[str, bytes]) -> List[Tuple[str, int, str, str]]:
  """(shard, position, class, relative_path) of every record of every shard."""
  from tensorflow.core.example import example_pb2
  rows = []
  for name in sorted(n for n in files if n.startswith("exemplar-train.tfrecord-")):
    shard = name[len("exemplar-train.tfrecord-"):]
    for position, record in enumerate(tfrecord_payloads(files[name])):
      try:
        feature = example_pb2.Example.FromString(record).features.feature
        rows.append((shard, position,
                     feature["image/class_name"].bytes_list.value[0].decode(),
                     feature["image/relative_path"].bytes_list.value[0].decode()))
      except Exception as e:  # noqa: BLE001 - a broken record is reported, not raised
        rows.append((shard, position, "?", f"unparsable record: {e}"))
  return rows


def difference(files: Dict[str, bytes], reference: Dict[str, bytes]) -> str:
  """What differs, readably: per-record rows of the shards, text of the rest."""
  names = sorted(set(files) | set(reference))
  differing = [n for n in names if files.get(n) != reference.get(n)]
  lines = [f"differing files: {differing}"]
  got, want = shard_rows(files), shard_rows(reference)
  for shard in sorted({row[0] for row in got + want}):
    g = [row for row in got if row[0] == shard]
    w = [row for row in want if row[0] == shard]
    if g == w:
      continue
    lines.append(f"shard {shard}: (shard, position, class, relative_path)")
    for i in range(max(len(g), len(w))):
      a = g[i] if i < len(g) else None
      b = w[i] if i < len(w) else None
      lines.append(f"  {'  ' if a == b else '!='} this run {a}  reference {b}")
    same_picks = sorted(r[2:] for r in g) == sorted(r[2:] for r in w)
    if same_picks:
      lines.append("  same records, different order (or bytes)")
  missing = sorted({r[2:] for r in want} - {r[2:] for r in got})
  extra = sorted({r[2:] for r in got} - {r[2:] for r in want})
  counts = collections.Counter(r[2:] for r in got)
  duplicated = sorted(r for r, n in counts.items() if n > 1)
  if missing or extra or duplicated:
    lines.append(f"missing from this run: {missing}")
    lines.append(f"extra in this run: {extra}")
    lines.append(f"duplicated in this run: {duplicated}")
  for name in differing:
    if name.startswith("exemplar-train.tfrecord-"):
      continue
    lines.append(f"{name}:\n  this run:  {files.get(name)!r}\n  reference: {reference.get(name)!r}")
  return "\n".join(lines)


def assert_same_dataset(files: Dict[str, bytes], reference: Dict[str, bytes]) -> None:
  """Byte-identical, or a failure that shows which records differ."""
  same = files == reference  # the check: bytes
  assert same, difference(files, reference)


def assert_clean(out: str) -> None:
  """A finished dataset and no temporary or staging file anywhere below it."""
  assert os.path.exists(os.path.join(out, "_SUCCESS"))
  leftovers = [os.path.join(root, name)
               for root, dirs, files in os.walk(out)
               for name in dirs + files if name.startswith(".")]
  assert leftovers == []


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp("runners") / "images")
  make_tree(root, {"ant": 6, "bee": 5, "cat": 7, "dog": 4}, seed=3, size=(48, 64))
  return root


@pytest.fixture(scope="module")
def reference(tree, tmp_path_factory) -> Dict[str, bytes]:
  """The dataset the default (in-process) runner writes."""
  out = str(tmp_path_factory.mktemp("reference") / "out")
  assert run_cli(["--input_dir", tree, "--output_dir", out, *RUN_FLAGS]) == 0
  assert_clean(out)
  files = dataset_files(out)
  assert len([n for n in files if n.startswith("exemplar-train")]) == 3
  assert files["class_names.txt"] == b"ant\nbee\ncat\ndog\n"
  return files


def run_on(tree: str, out: str, runner_flags: List[str]) -> Dict[str, bytes]:
  assert run_cli(["--input_dir", tree, "--output_dir", out, *RUN_FLAGS,
                  *runner_flags]) == 0
  assert_clean(out)
  return dataset_files(out)


@pytest.mark.slow
def test_multi_processing_direct_runner_is_byte_identical(tree, reference, tmp_path):
  files = run_on(tree, str(tmp_path / "out"),
                 ["--direct_num_workers", "2",
                  "--direct_running_mode", "multi_processing"])
  assert_same_dataset(files, reference)


@pytest.mark.slow
def test_portable_runner_embedded_is_byte_identical(tree, reference, tmp_path):
  # LOOPBACK runs the SDK workers in this process; the default environment
  # would be a Docker container (an image pull), which exemplar never needs.
  files = run_on(tree, str(tmp_path / "out"),
                 ["--runner", "PortableRunner", "--job_endpoint", "embed",
                  "--environment_type", "LOOPBACK"])
  assert_same_dataset(files, reference)


@pytest.mark.parametrize("flags,expected", [
    (["--runner", "PortableRunner", "--job_endpoint", "embed"], "LOOPBACK"),
    (["--runner", "PortableRunner", "--job_endpoint", "embed",
      "--environment_type", "PROCESS"], "PROCESS"),
    (["--runner", "PortableRunner", "--job_endpoint", "localhost:8099"], None),
    (["--runner", "DaskRunner"], None),
])
def test_embedded_portable_runner_defaults_to_loopback(flags, expected):
  from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions

  from exemplar.runners import apply_offline_defaults
  options = PipelineOptions(flags)
  apply_offline_defaults(options)
  assert options.view_as(PortableOptions).environment_type == expected


def test_dask_graph_groups_by_task_shuffle_not_local_files():
  """Built with no Dask client about, dask.bag's groupby would default to its
  disk shuffle (partd files of one process): groups lost across workers."""
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions

  from exemplar.runners import FixedDaskRunner, build_dask_graph
  p = beam.Pipeline(runner=FixedDaskRunner(), options=PipelineOptions([]))
  _ = (p | beam.Create(range(10)) | beam.Map(lambda n: (n % 3, n))
       | beam.GroupByKey())
  keys = [str(key) for bag in build_dask_graph(p, {"npartitions": 4})
          for key in dict(bag.__dask_graph__())]
  assert any("shuffle" in key for key in keys)
  assert not any("partd" in key for key in keys)


_DOUBLED: List[int] = []


def _double_and_count(n: int) -> int:
  _DOUBLED.append(n)
  return 2 * n


def test_dask_graph_computes_side_inputs_once():
  """Each side input is one value in the graph: the steps above it run once,
  however many ParDos read it (dask.bag would give each Item argument a
  private, renamed copy of its whole upstream graph: ProhibitReuse)."""
  import apache_beam as beam
  import dask
  from apache_beam.options.pipeline_options import PipelineOptions

  from exemplar.runners import FixedDaskRunner, build_dask_graph
  p = beam.Pipeline(runner=FixedDaskRunner(), options=PipelineOptions([]))
  doubled = p | beam.Create(range(10)) | "Double" >> beam.Map(_double_and_count)
  total = beam.pvalue.AsSingleton(doubled | "Sum" >> beam.CombineGlobally(sum))
  _ = doubled | "AddA" >> beam.Map(lambda n, s: n + s, s=total)
  _ = doubled | "AddB" >> beam.Map(lambda n, s: n - s, s=total)
  _ = doubled | "AsList" >> beam.Map(lambda n, ns: n, ns=beam.pvalue.AsList(doubled))
  leaves = build_dask_graph(p, {"npartitions": 4})
  del _DOUBLED[:]
  dask.compute(*leaves, scheduler="sync")
  assert sorted(_DOUBLED) == list(range(10))


# --- a real Dask cluster ----------------------------------------------------


class DaskCluster:
  """A `dask scheduler` and `dask worker` processes on 127.0.0.1."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.scheduler_file = os.path.join(workdir, "scheduler.json")
    self.processes: Dict[str, subprocess.Popen] = {}
    self.address: Optional[str] = None
    self._log = open(os.path.join(workdir, "cluster.log"), "ab")

  def _spawn(self, name: str, args: List[str]) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    self.processes[name] = subprocess.Popen(
        [DASK_CLI, *args], cwd=REPO, env=env, stdout=self._log,
        stderr=subprocess.STDOUT, start_new_session=True)

  def start(self, num_workers: int) -> None:
    # Both time out on their own if this test process dies without stopping them.
    self._spawn("scheduler", [
        "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
        "--scheduler-file", self.scheduler_file, "--idle-timeout", "600"])
    deadline = time.monotonic() + START_TIMEOUT
    while self.address is None:
      self._check_alive("scheduler", deadline)
      try:
        with open(self.scheduler_file) as f:
          self.address = json.load(f)["address"]
      except (OSError, ValueError, KeyError):
        time.sleep(0.1)
    for i in range(num_workers):
      self.add_worker(f"worker-{i}")
    self.wait_for_workers(num_workers)

  def add_worker(self, name: str) -> None:
    self._spawn(name, [
        "worker", self.address, "--name", name, "--nthreads", "1",
        "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
        "--local-directory", self.workdir, "--death-timeout", "60"])

  def client(self):
    from distributed import Client
    return Client(self.address, timeout=START_TIMEOUT)

  def workers(self) -> Dict[str, Dict]:
    """Worker name -> the scheduler's info on it (address, pid, ...)."""
    with self.client() as client:
      info = client.scheduler_info(n_workers=-1)["workers"]
    return {w["name"]: dict(w, address=address) for address, w in info.items()}

  def wait_for_workers(self, n: int) -> None:
    with self.client() as client:
      client.wait_for_workers(n, timeout=START_TIMEOUT)

  def kill(self, name: str) -> None:
    process = self.processes[name]
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)

  def _check_alive(self, name: str, deadline: float) -> None:
    if self.processes[name].poll() is not None:
      raise RuntimeError(f"dask {name} exited: see {self._log.name}")
    if time.monotonic() > deadline:
      raise TimeoutError(f"dask {name} did not start: see {self._log.name}")

  def stop(self) -> None:
    for process in self.processes.values():
      if process.poll() is None:
        process.terminate()
    deadline = time.monotonic() + 5
    for process in self.processes.values():
      try:
        process.wait(timeout=max(0.1, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    self._log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
  cluster = DaskCluster(str(tmp_path_factory.mktemp("dask")))
  try:
    cluster.start(num_workers=2)
    yield cluster
  finally:
    cluster.stop()


def dask_flags(cluster: DaskCluster) -> List[str]:
  # Four partitions: the four classes list, decode and write on both workers.
  return ["--runner", "DaskRunner", "--dask_client_address", cluster.address,
          "--dask_npartitions", "4"]


@pytest.mark.slow
def test_fixed_dask_runner_splits_tagged_outputs_and_side_inputs(cluster):
  """What Beam's own DaskRunner gets wrong: each tag's consumers see only it,
  and a side input is a value computed once, not a nested job; and groups
  shuffle through tasks, never through one worker's local files."""
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions
  from apache_beam.testing.util import assert_that, equal_to

  from exemplar.runners import resolve_runner

  def split(n):
    yield n if n % 2 == 0 else beam.pvalue.TaggedOutput("odd", n)

  options = PipelineOptions(dask_flags(cluster)[2:])
  with beam.Pipeline(runner=resolve_runner("DaskRunner"), options=options) as p:
    parts = (p | beam.Create(range(10))
             | "Split" >> beam.FlatMap(split).with_outputs("odd", main="even"))
    odd_sum = parts.odd | "SumOdd" >> beam.CombineGlobally(sum)
    shifted = parts.even | "AddOddSum" >> beam.Map(
        lambda n, s: n + s, s=beam.pvalue.AsSingleton(odd_sum))
    # Four partitions on two workers: the groups must come out whole.
    groups = (p | "Numbers" >> beam.Create(range(40))
              | "KeyByRest" >> beam.Map(lambda n: (n % 3, n))
              | "Group" >> beam.GroupByKey()
              | "Sort" >> beam.MapTuple(lambda k, ns: (k, sorted(ns))))
    assert_that(groups, equal_to(
        [(k, list(range(k, 40, 3))) for k in range(3)]), label="Groups")
    assert_that(parts.even, equal_to([0, 2, 4, 6, 8]), label="Even")
    assert_that(parts.odd, equal_to([1, 3, 5, 7, 9]), label="Odd")
    assert_that(shifted, equal_to([25, 27, 29, 31, 33]), label="Shifted")


@pytest.mark.slow
def test_dask_cluster_is_byte_identical(cluster, tree, reference, tmp_path):
  files = run_on(tree, str(tmp_path / "out"), dask_flags(cluster))
  assert_same_dataset(files, reference)


def _executing(dask_worker) -> List[str]:
  """Run on each worker: the keys of the tasks it is executing right now."""
  return [str(ts.key) for ts in dask_worker.state.executing]


class WorkerKiller(threading.Thread):
  """Kills a worker process by PID mid-run: once the first shard is in the
  staging folder, the first worker seen executing a DoFn bundle."""

  def __init__(self, cluster: DaskCluster, out: str, timeout: float):
    super().__init__(daemon=True)
    self.cluster = cluster
    self.staging = os.path.join(out, ".exemplar-staging")
    self.success = os.path.join(out, "_SUCCESS")
    self.deadline = time.monotonic() + timeout
    self.killed: Optional[str] = None
    self.task: Optional[str] = None
    self.finished_before_kill: Optional[bool] = None
    self.error: Optional[BaseException] = None

  def _shard_written(self) -> bool:
    try:
      # The run's own folder in the staging folder: .exemplar-staging/<run id>/
      return any(n.startswith("exemplar-train")
                 for _, _, names in os.walk(self.staging) for n in names)
    except OSError:
      return False

  def run(self) -> None:
    try:
      names = {info["address"]: name for name, info in self.cluster.workers().items()}
      with self.cluster.client() as client:
        while self.killed is None and time.monotonic() < self.deadline:
          if self._shard_written():
            for address, keys in client.run(_executing).items():
              busy = [k for k in keys if "run_dofn_on_partition" in k]
              if busy and address in names:
                self.finished_before_kill = os.path.exists(self.success)
                self.cluster.kill(names[address])
                self.killed, self.task = names[address], busy[0]
                return
          time.sleep(0.02)
    except BaseException as e:  # reported by the test
      self.error = e


@pytest.mark.slow
def test_dask_worker_killed_mid_run_output_is_unchanged(cluster, tree, reference,
                                                        tmp_path):
  if len(cluster.workers()) < 2:  # another test may have left one worker
    cluster.add_worker(f"worker-extra-{time.monotonic_ns()}")
    cluster.wait_for_workers(2)
  out = str(tmp_path / "out")
  killer = WorkerKiller(cluster, out, timeout=120)
  killer.start()
  files = run_on(tree, out, dask_flags(cluster))
  killer.join(timeout=10)
  assert killer.error is None
  assert killer.killed is not None, "no worker was executing a DoFn bundle"
  assert killer.finished_before_kill is False
  assert killer.killed not in cluster.workers()  # it really died mid-run
  assert len(cluster.workers()) == 1
  assert_same_dataset(files, reference)
