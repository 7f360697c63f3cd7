"""Progress from inside the stages: bars on a terminal, else rate-limited lines.

Beam counters (exemplar/files_listed, images_decoded, ...) are what Dataflow's
console shows; they reach the driver only when a local runner finishes. So
each worker process also keeps running totals of each stage, and the stages
say what their totals will be once they know (`set_total`: classes to list,
images planned, shards to write). A process whose driver asked for bars
(`show_bars`: the CLI on a terminal, with an in-process runner) shows a tqdm
bar per stage, with its total and time left; any other process logs its
totals at most once per `INTERVAL_SECONDS` ("images decoded: 662 of 1000"),
which gives live progress on any runner's logs without a line per image.

The totals belong to one run: a transform makes a `Progress` when it is
applied (in `expand`) and hands it to its DoFns' constructors. Pickled, a
Progress is its run id, so the copies of it a worker unpickles add to the
same totals, and a second pipeline run in the same process (two library
runs, or the CLI's `main` called twice) starts from zero instead of carrying
on from the first run's counts. Only the display is per process: whether to
draw bars, and on which stream.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from typing import Dict, Optional, TextIO, Tuple

INTERVAL_SECONDS = 10.0
# Run states kept per process for copies of a Progress still to be unpickled
# (oldest dropped first); a live Progress holds its own state regardless.
MAX_RUNS = 64

_LOGGER = logging.getLogger("exemplar.progress")
_lock = threading.Lock()


class _RunState:
  """One run's totals in this process."""

  def __init__(self):
    self.totals: Dict[str, int] = {}
    self.expected: Dict[str, int] = {}
    self.last_log = time.monotonic()


# run id -> its state in this process (a live Progress holds its own).
_runs: "collections.OrderedDict[str, _RunState]" = collections.OrderedDict()
# The display, per process: the stream bars are drawn on (None: no bars) and
# the bars, by (run id, what).
_bar_file: list = [None]
_bars: Dict[Tuple[str, str], object] = {}


def _state_of(run_id: str) -> _RunState:
  with _lock:
    state = _runs.get(run_id)
    if state is None:
      state = _runs[run_id] = _RunState()
      while len(_runs) > MAX_RUNS:
        _runs.popitem(last=False)
    return state


class Progress:
  """One run's progress: running totals of each stage, in each process.

  Make one per run (a transform makes its own in `expand`) and pass it to the
  DoFns that count; every copy of it in a process (Beam pickles DoFns) adds
  to the same totals, and no other run's copies do.
  """

  def __init__(self, run_id: Optional[str] = None):
    self.run_id = run_id or uuid.uuid4().hex
    self._state = _state_of(self.run_id)

  def __reduce__(self):
    return Progress, (self.run_id,)

  def __repr__(self) -> str:
    return f"Progress({self.run_id!r})"

  def set_total(self, what: str, total: int) -> None:
    """The total `what` will reach (the same value from every caller)."""
    state = self._state
    with _lock:
      if state.expected.get(what) == total:
        return
      state.expected[what] = total
      bar = _bars.get((self.run_id, what))
      if bar is not None:
        bar.total = total
        bar.refresh()

  def tick(self, what: str, count: int = 1) -> None:
    """Adds to this process's running total of `what`; draws or logs it."""
    state = self._state
    with _lock:
      state.totals[what] = state.totals.get(what, 0) + count
      if _bar_file[0] is not None:
        self._bar(what).update(count)
        return
      now = time.monotonic()
      if now - state.last_log < INTERVAL_SECONDS:
        return
      state.last_log = now
      line = ", ".join(
          f"{name}: {value}"
          + (f" of {state.expected[name]}" if name in state.expected else "")
          for name, value in sorted(state.totals.items()))
    _LOGGER.info("progress (this worker): %s", line)

  def _bar(self, what: str):
    bar = _bars.get((self.run_id, what))
    if bar is None:
      from tqdm import tqdm
      bar = tqdm(total=self._state.expected.get(what), desc=what, unit="",
                 position=len(_bars), file=_bar_file[0], dynamic_ncols=True,
                 leave=True, mininterval=0.2)
      _bars[(self.run_id, what)] = bar
    return bar


def show_bars(stream: Optional[TextIO]) -> None:
  """Draw bars on `stream` in this process from now on (None: stop, closing
  them). Called by the CLI only."""
  with _lock:
    if stream is None:
      for bar in _bars.values():
        bar.close()
      _bars.clear()
    _bar_file[0] = stream
