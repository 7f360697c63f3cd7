"""Progress lines from inside the stages, at a sane rate.

Beam counters (exemplar/files_listed, images_decoded, ...) are what Dataflow's
console shows; they reach the driver only when a local runner finishes. So
each worker process also logs its running totals, at most once per
`INTERVAL_SECONDS` per process, which gives live progress on any runner's logs
without a line per image.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Dict

INTERVAL_SECONDS = 10.0

_LOGGER = logging.getLogger("exemplar.progress")
_lock = threading.Lock()
_totals: Dict[str, int] = {}
_last_log = [time.monotonic()]


def tick(what: str, count: int = 1) -> None:
  """Adds to this process's running total of `what`; logs if one is due."""
  with _lock:
    _totals[what] = _totals.get(what, 0) + count
    now = time.monotonic()
    if now - _last_log[0] < INTERVAL_SECONDS:
      return
    _last_log[0] = now
    line = ", ".join(f"{name}: {value}" for name, value in sorted(_totals.items()))
  _LOGGER.info("progress (this worker): %s", line)
