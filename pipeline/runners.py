"""Which Beam runner a run uses.

The default is Beam's in-process FnApiRunner, named directly. Beam 2.77's
`DirectRunner` first tries the Prism runner, which downloads a binary; exemplar
must run offline and behave the same with or without internet, so the names a
user would give for "run it here" (none, DirectRunner, local) all mean the
FnApiRunner. `--direct_num_workers N --direct_running_mode multi_processing`
still spreads the work over N local processes.

`DaskRunner` (or `dask`) runs on a Dask cluster (`--dask_client_address
HOST:PORT` points at its scheduler; without it a LocalCluster is started). It
is Beam's own DaskRunner with the fixes in `FixedDaskRunner`. Every other name
is handed to Beam unchanged (DataflowRunner, PortableRunner, FlinkRunner,
SparkRunner, ...).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from apache_beam.runners.runner import PipelineRunner

from exemplar.transforms import beam_internals

LOCAL_RUNNER_NAMES = {"", "local", "direct", "directrunner", "fnapirunner"}
DASK_RUNNER_NAMES = {"dask", "daskrunner"}


def is_local(runner_name: Optional[str]) -> bool:
  return (runner_name or "").strip().lower() in LOCAL_RUNNER_NAMES


def is_dask(runner_name: Optional[str]) -> bool:
  return (runner_name or "").strip().lower() in DASK_RUNNER_NAMES


def resolve_runner(runner_name: Optional[str]) -> Union[PipelineRunner, str]:
  """A runner instance for local and Dask runs, else the name for Beam."""
  name = (runner_name or "").strip()
  if is_local(name):
    return beam_internals.fn_api_runner()
  if is_dask(name):
    return FixedDaskRunner()
  return name


def apply_offline_defaults(options) -> None:
  """Fills in runner options so a run here never downloads anything.

  `--runner PortableRunner --job_endpoint embed` without an
  `--environment_type` starts its SDK workers in Beam's Docker image
  (`docker run apache/beam_python3.x_sdk`, an image pull); LOOPBACK runs them
  in this process instead, with exemplar's own installation. An explicit
  `--environment_type` is kept.
  """
  from apache_beam.options.pipeline_options import PortableOptions, StandardOptions
  portable = options.view_as(PortableOptions)
  runner = (options.view_as(StandardOptions).runner or "").strip().lower()
  if (runner == "portablerunner" and portable.job_endpoint == "embed"
      and not portable.environment_type):
    portable.environment_type = "LOOPBACK"


# --- Dask -------------------------------------------------------------------
#
# Beam 2.77's DaskRunner translates each Beam transform into a dask.bag step,
# but three things in that translation break real pipelines (all measured on
# a `dask scheduler` + two `dask worker` processes):
#   1. A ParDo with tagged outputs puts every output in one bag, so each
#      consumer of one tag also gets the other tags' elements (exemplar's
#      failures side input received the decoded images).
#   2. A side input is computed inside the consuming task by a nested
#      `list(bag)`: the whole upstream graph runs again once per side input,
#      out of the scheduler's sight (a sink's set-up and writes run several
#      times; Beam's WriteToText fails at finalize because of it).
#   3. Only the last transform visited is computed; other leaves never run.
# (And a GroupByKey must shuffle through tasks, never dask.bag's disk shuffle,
# whose files belong to one worker process: see build_dask_graph.)
# `FixedDaskRunner` keeps Beam's translation of Create, GroupByKey and Flatten
# and replaces the ParDo step and the wiring: every output PCollection gets a
# bag of its own elements, side inputs are ordinary graph dependencies
# (computed once, retried by the scheduler like any task when a worker dies),
# and every leaf is computed. The Beam internals it uses are
# transforms/beam_internals.py's (dask is an optional extra: ImportError
# without it).


def _flatten_lists(parts) -> List[Any]:
  return [element for part in parts for element in part]


def _value_of(pair: Tuple[Optional[str], Any]) -> Any:
  return pair[1]


class _HasTag:
  """A picklable predicate: does a (tag, value) pair carry `tag`?"""

  def __init__(self, tag: Optional[str]):
    self.tag = tag

  def __call__(self, pair) -> bool:
    return pair[0] == self.tag


def run_dofn_on_partition(elements, do_fn, label: str, window_fn,
                          args: Sequence, kwargs: Dict,
                          side_specs: Sequence, *side_values) -> List[Tuple]:
  """One Dask partition = one Beam bundle: runs `do_fn` over `elements`.

  Returns (tag, value) pairs, tag None for the main output. Everything is
  built here, in the task, so no state is shared between partitions.
  """
  results: List[Tuple] = []
  side_inputs = [
      beam_internals.side_input_map(
          view_class, view_options,
          [beam_internals.dask_windowed_value(v, None) for v in values])
      for (view_class, view_options), values in zip(side_specs, side_values)]
  beam_internals.run_dofn_bundle(
      do_fn, label, window_fn, side_inputs, args, kwargs,
      (beam_internals.dask_windowed_value(element, window_fn) for element in elements),
      lambda tag, value: results.append((tag, value)))
  return results


def _side_value(bag):
  """A side input's whole value, [every element of `bag`], as a Delayed: one
  task in the job's graph, shared by every consumer.

  Not the `Item` that `bag.reduction` returns: dask.bag's map_partitions
  hands an Item argument to `dask.delayed.unpack_collections`, which wraps
  it in `ProhibitReuse` (dask 2025+): every key of the side input's upstream
  graph gets a fresh uuid suffix, so each side input runs a private copy of
  the whole pipeline above it (listing, sampling, the shard writers with
  their file writes). The copies need not agree (each draws its own
  `Reshuffle` keys): on a two-worker cluster each shard writer ran 4 times
  per job, and in about a third of jobs a copy missing whole classes wrote
  the shard files last, while another copy's rows made manifest.csv. A
  Delayed is unpacked to a plain reference to its key, never renamed.
  """
  return bag.reduction(list, _flatten_lists).to_delayed(optimize_graph=False)


@dataclasses.dataclass
class _BagBuilder:
  """Pipeline visitor: one dask bag per PCollection."""
  bag_kwargs: Dict
  bags: Dict[Any, Any] = dataclasses.field(default_factory=dict)
  consumed: set = dataclasses.field(default_factory=set)

  def visit(self, node) -> None:
    from apache_beam import ParDo, pvalue
    inputs = [pc for pc in node.inputs if not isinstance(pc, pvalue.PBegin)]
    self.consumed.update(id(pc) for pc in inputs)
    self.consumed.update(id(si.pvalue) for si in node.side_inputs)
    input_bags = [self.bags[id(pc)] for pc in inputs if id(pc) in self.bags]
    if node.transform.__class__ is ParDo:
      self._par_do(node, input_bags[0])
      return
    bag = beam_internals.dask_translate(node, input_bags, self.bag_kwargs)
    for output in node.outputs.values():
      self.bags[id(output)] = bag

  def _par_do(self, node, input_bag) -> None:
    transform = node.transform
    # Side inputs stand as ArgumentPlaceholders in args and kwargs, filled in
    # order from node.side_inputs by the DoFn invoker.
    args, kwargs = transform.args, transform.kwargs
    main_input = next(iter(node.main_inputs.values()))
    window_fn = getattr(getattr(main_input, "windowing", None), "windowfn", None)
    side_specs, side_values = [], []
    for si in node.side_inputs:
      side_specs.append((type(si), beam_internals.side_input_view_options(si)))
      side_values.append(_side_value(self.bags[id(si.pvalue)]))
    tagged = input_bag.map_partitions(
        run_dofn_on_partition, transform.fn, node.full_label, window_fn,
        list(args), dict(kwargs), side_specs, *side_values)
    outputs = node.outputs
    for tag, output in outputs.items():
      bag = tagged if len(outputs) == 1 else tagged.filter(_HasTag(tag))
      self.bags[id(output)] = bag.map(_value_of)

  def leaves(self) -> List[Any]:
    """The bags of PCollections nothing consumes (the pipeline's ends)."""
    seen, leaves = set(), []
    for key, bag in self.bags.items():
      if key not in self.consumed and bag is not None and bag.name not in seen:
        seen.add(bag.name)
        leaves.append(bag)
    return leaves


def _make_runner_class():
  dask_runner_class, dask_options_class, dask_result_class = (
      beam_internals.dask_runner_classes())
  from apache_beam.pipeline import PipelineVisitor

  class _Visitor(PipelineVisitor):
    def __init__(self, builder: _BagBuilder):
      self.builder = builder

    def visit_transform(self, node) -> None:
      self.builder.visit(node)

  @dataclasses.dataclass
  class ClosingResult(dask_result_class):
    """Closes the Dask client (and a LocalCluster it started) when done."""

    def wait_until_finish(self, duration=None) -> str:
      try:
        return super().wait_until_finish(duration)
      finally:
        self.client.close()

  def build_dask_graph(pipeline, bag_kwargs: Dict) -> List[Any]:
    """The pipeline as dask bags: those of its leaves, ready to compute."""
    import dask
    # GroupByKey shuffles through tasks: with no client active while the graph
    # is built, dask.bag picks its disk shuffle, whose partd files belong to
    # one worker process, and groups get lost across workers.
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
      pipeline.replace_all(beam_internals.dask_overrides())
      builder = _BagBuilder(bag_kwargs)
      pipeline.visit(_Visitor(builder))
      return builder.leaves()

  class _FixedDaskRunner(dask_runner_class):
    """Beam's DaskRunner with the fixes described above."""

    def run_pipeline(self, pipeline, options):
      import dask
      import dask.distributed as ddist
      dask_options = options.view_as(dask_options_class).get_all_options(
          drop_default=True, current_only=True)
      bag_kwargs = beam_internals.dask_bag_kwargs(dask_options)
      client = ddist.Client(**dask_options)
      try:
        leaves = build_dask_graph(pipeline, bag_kwargs)
        futures = client.compute(list(dask.optimize(*leaves)))
      except BaseException:
        client.close()
        raise
      return ClosingResult(client, futures)

  return _FixedDaskRunner, build_dask_graph


_DASK = None


def _dask_parts():
  global _DASK
  if _DASK is None:
    _DASK = _make_runner_class()
  return _DASK


def FixedDaskRunner() -> PipelineRunner:  # noqa: N802 - a class factory
  """A new instance of the fixed DaskRunner (imports dask on first use)."""
  return _dask_parts()[0]()


def build_dask_graph(pipeline, bag_kwargs: Optional[Dict] = None) -> List[Any]:
  """What FixedDaskRunner computes for `pipeline`: its leaves as dask bags."""
  return _dask_parts()[1](pipeline, dict(bag_kwargs or {}))
