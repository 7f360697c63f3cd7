"""What the `exemplar` command prints: exemplar's own lines and real problems.

The CLI (never the library) calls `quiet()` unless --verbose: it keeps out
  * TensorFlow's C++ start-up lines ("oneDNN custom operations are on",
    "Could not find cuda drivers", "failed call to cuInit", absl's
    "All log messages before absl::InitializeLog()"), and its C++ log lines
    (I0000/W0000/E0000 ...) printed while the job runs;
  * libjpeg's own messages for a broken JPEG ("Corrupt JPEG data: ...",
    "Improper call to JPEG library in state 201"): the file is in errors.csv;
  * tf.function retracing warnings, Dask's INFO lines and Beam's
    partition-size notes.
These C-level lines are written straight to file descriptor 2, so fd 2 is
pointed at a pipe whose reader thread passes every other line on to the real
stderr, unchanged. Beam's "Created job with id" line on Dataflow is kept.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from typing import Optional, TextIO

# C-level lines dropped from stderr (checked against each whole line).
_DROPPED_LINE = re.compile(
    rb"^(?:[IWE]\d{4} [\d:. ]+\s+\d+ \S+:\d+\] .*"  # TF's C++ (absl) log lines
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called.*"
    rb"|To enable the following instructions: .*"
    rb"|Corrupt JPEG data: .*|Premature end of JPEG file.*"
    rb"|Improper call to JPEG library in state \d+.*|Invalid SOS parameters.*"
    rb"|Not a JPEG file: .*|Unsupported marker type .*|Bogus marker length.*"
    rb"|Warning: unknown JFIF revision number .*"
    rb")\r?$")

# Python log records dropped (their message starts with one of these).
_DROPPED_RECORDS = (
    "The new default partition size is",
)
_DROPPED_FRAGMENTS = ("triggered tf.function retracing",)


class _DropNoise(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    try:
      message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record: keep it
      return True
    return not (message.startswith(_DROPPED_RECORDS)
                or any(f in message for f in _DROPPED_FRAGMENTS))


class StderrFilter:
  """Points fd 2 at a pipe; a thread passes the lines worth showing on to
  the original stderr. `original` is a text stream on that stderr (for the
  progress bars). `close()` restores fd 2."""

  def __init__(self):
    sys.stderr.flush()
    self._saved = os.dup(2)
    self.original: TextIO = os.fdopen(os.dup(self._saved), "w", buffering=1,
                                      encoding="utf-8", errors="replace")
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    self._read_end = read_end
    self._thread = threading.Thread(target=self._pump, name="exemplar-stderr",
                                    daemon=True)
    self._thread.start()

  def _pump(self) -> None:
    pending = b""
    while True:
      chunk = os.read(self._read_end, 65536)
      if not chunk:
        break
      pending += chunk
      *lines, pending = pending.split(b"\n")
      kept = [line + b"\n" for line in lines if not _DROPPED_LINE.match(line)]
      if pending.startswith(b"\r"):  # a bar's redraw: no newline will come
        kept.append(pending)
        pending = b""
      if kept:
        os.write(self._saved, b"".join(kept))
    if pending and not _DROPPED_LINE.match(pending):
      os.write(self._saved, pending)

  def close(self) -> None:
    sys.stderr.flush()
    os.dup2(self._saved, 2)  # the pipe's last writer closes: the thread ends
    self._thread.join(timeout=5)
    os.close(self._read_end)
    self.original.close()
    os.close(self._saved)


def quiet() -> Optional[StderrFilter]:
  """Keeps the noise above out of this process's stderr (the CLI's choice;
  never called by the library). Returns the filter, to close at exit."""
  noise = _DropNoise()
  for name in ("absl", "tensorflow", "apache_beam", "distributed", "dask", ""):
    logger = logging.getLogger(name)
    logger.addFilter(noise)
    for handler in logger.handlers:
      handler.addFilter(noise)
  for name in ("distributed", "dask", "bokeh", "tornado"):
    logging.getLogger(name).setLevel(logging.WARNING)
  try:
    return StderrFilter()
  except OSError:  # no fd 2 to redirect (a closed stderr): nothing to filter
    return None
