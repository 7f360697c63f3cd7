"""Which Beam runner a run uses.

The default is Beam's in-process FnApiRunner, named directly. Beam 2.77's
`DirectRunner` first tries the Prism runner, which downloads a binary; exemplar
must run offline and behave the same with or without internet, so the names a
user would give for "run it here" (none, DirectRunner, local) all mean the
FnApiRunner. `--direct_num_workers N --direct_running_mode multi_processing`
still spreads the work over N local processes.

`DaskRunner` is Beam's own runner for Dask (`--dask_client_address` points it
at a scheduler). Every other name is handed to Beam unchanged (DataflowRunner,
PortableRunner, FlinkRunner, SparkRunner, ...).
"""

from __future__ import annotations

from typing import Optional, Union

from apache_beam.runners.runner import PipelineRunner

LOCAL_RUNNER_NAMES = {"", "local", "direct", "directrunner", "fnapirunner"}


def is_local(runner_name: Optional[str]) -> bool:
  return (runner_name or "").strip().lower() in LOCAL_RUNNER_NAMES


def resolve_runner(runner_name: Optional[str]) -> Union[PipelineRunner, str]:
  """A runner instance for local and Dask runs, else the name for Beam."""
  name = (runner_name or "").strip()
  if is_local(name):
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    return FnApiRunner()
  if name.lower() in ("daskrunner", "dask"):
    from apache_beam.runners.dask.dask_runner import DaskRunner
    return DaskRunner()
  return name
