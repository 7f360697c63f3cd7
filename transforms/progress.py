"""Progress from inside the stages: bars on a terminal, else rate-limited lines.

Beam counters (exemplar/files_listed, images_decoded, ...) are what Dataflow's
console shows; they reach the driver only when a local runner finishes. So
each worker process also keeps its running totals of each stage, and the
stages say what their totals will be once they know (`set_total`: classes
to list, images planned, shards to write). A process whose driver asked for
bars (`show_bars`: the CLI on a terminal, with an in-process runner) shows a
tqdm bar per stage, with its total and time left; any other process logs its
totals at most once per `INTERVAL_SECONDS` ("images decoded: 662 of 1000"),
which gives live progress on any runner's logs without a line per image.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Dict, Optional, TextIO

INTERVAL_SECONDS = 10.0

_LOGGER = logging.getLogger("exemplar.progress")
_lock = threading.Lock()
_totals: Dict[str, int] = {}
_expected: Dict[str, int] = {}
_last_log = [time.monotonic()]
_bars: Dict[str, object] = {}
_bar_file: list = [None]  # the stream bars are drawn on; None: no bars


def show_bars(stream: Optional[TextIO]) -> None:
  """Draw bars on `stream` in this process from now on (None: stop, closing
  them). Called by the CLI only."""
  with _lock:
    if stream is None:
      for bar in _bars.values():
        bar.close()
      _bars.clear()
    _bar_file[0] = stream


def set_total(what: str, total: int) -> None:
  """The total `what` will reach (the same value from every caller)."""
  with _lock:
    if _expected.get(what) == total:
      return
    _expected[what] = total
    bar = _bars.get(what)
    if bar is not None:
      bar.total = total
      bar.refresh()


def tick(what: str, count: int = 1) -> None:
  """Adds to this process's running total of `what`; draws or logs it."""
  with _lock:
    _totals[what] = _totals.get(what, 0) + count
    if _bar_file[0] is not None:
      _bar(what).update(count)
      return
    now = time.monotonic()
    if now - _last_log[0] < INTERVAL_SECONDS:
      return
    _last_log[0] = now
    line = ", ".join(
        f"{name}: {value}" + (f" of {_expected[name]}" if name in _expected else "")
        for name, value in sorted(_totals.items()))
  _LOGGER.info("progress (this worker): %s", line)


def _bar(what: str):
  bar = _bars.get(what)
  if bar is None:
    from tqdm import tqdm
    bar = tqdm(total=_expected.get(what), desc=what, unit="", position=len(_bars),
               file=_bar_file[0], dynamic_ncols=True, leave=True, mininterval=0.2)
    _bars[what] = bar
  return bar
