"""Lists and samples a local tree in a child process while the launcher
imports TensorFlow.

    prelisting = prelist.start(root, class_names, seed, capacity)
    prelist.import_job_libraries()    # TF + TFT, on this core
    listed = prelisting.result()      # [SampledClass] in class order, or None

Why: a k=1 run spends its first seconds importing Beam, TensorFlow and TFT
on one core, then lists the tree on one core (~1.5 s for 1.3M files, on 2
cores). The listing needs neither library, so the child does it on the other
core while the launcher imports; the job then starts from its samples
(`SampleImageFolder(prelisted=...)`) instead of listing again.

The child is a fresh `python -P` (-P: the working folder, which may hold the
user's own `exemplar` or `transforms`, is not put on sys.path) that imports
this very `exemplar` (the folder it was found in goes first on its path) and
runs `_child`; it names the files it ran, which must be this process's, and
it stops when its launcher is gone. It imports neither Beam nor TensorFlow: only the walker of
transforms/local_scan.py and the sampler of transforms/bottom_k.py, the very
functions the job's ListAndSampleClassFn runs on local disk, so its samples,
file counts and problems are the job's. Its request (root, classes, seed,
capacity) goes in on stdin as JSON; its answer comes back on stdout as a
pickle (a trusted channel: our own child), with the warnings it logged, which
the launcher logs again under the same logger names.

Anything wrong with the child (it cannot start, exits non-zero, answers
something else) makes `result()` return None and log why at INFO: the job
then lists the tree itself, as it always could.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import pickle
import subprocess
import sys
import time
from typing import List, Optional, Sequence, Tuple

from exemplar.transforms import bottom_k, local_scan

_LOGGER = logging.getLogger(__name__)
# A fresh interpreter puts its working folder first on sys.path; -P (Python
# 3.11+) leaves it off, and on 3.10 the child starts in _HOME, not the user's
# folder, so the user's own modules cannot shadow exemplar's.
_SAFE_PATH = ["-P"] if sys.version_info >= (3, 11) else []
# A launcher in UTF-8 mode decodes file names as UTF-8 whatever the locale;
# the child must too, or its sampling keys would differ.
_SAME_MODE = ["-X", "utf8"] if sys.flags.utf8_mode else []
_HOME = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# -P leaves the working folder off sys.path, so starting the child in _HOME
# pins nothing: a fresh interpreter imports whichever `exemplar` it finds
# first (an installed one, where this process runs a vendored copy or
# `python -m` from a folder holding one). The child puts _HOME first itself
# (only when it is not on the path already, as site-packages is: first, it
# would put installed backports ahead of the standard library), and says
# which files it ran (`_code_files`), which must be this process's.
_BOOTSTRAP = ("import sys\n"
              "if sys.argv[1] not in sys.path: sys.path.insert(0, sys.argv[1])\n"
              "from exemplar.prelist import _child; sys.exit(_child())")


def _code_files() -> List[str]:
  """The files of the code the listing runs, links resolved: the child's
  must be this process's, or its samples could differ from the job's."""
  return [os.path.realpath(m.__file__) for m in (sys.modules[__name__], bottom_k, local_scan)]


class Prelisting:
  """A running listing child; `result()` waits for it."""

  def __init__(self, proc: Optional[subprocess.Popen], classes: Sequence[str],
               failure: str = ""):
    self._proc = proc
    self._classes = tuple(classes)
    self._failure = failure

  def result(self) -> Optional[List[bottom_k.SampledClass]]:
    """The classes' samples in the order asked, or None (logged) when the
    child failed; then the job lists as usual."""
    if self._proc is None:
      return self._fallback(self._failure)
    try:
      out, err = self._proc.communicate()
    finally:
      self.close()
    if self._proc.returncode != 0:
      last = (err or b"").decode("utf-8", "replace").strip().splitlines()[-1:]
      return self._fallback(f"exit {self._proc.returncode}: {''.join(last)}")
    try:
      answer = pickle.loads(out)
      listed = [bottom_k.SampledClass(*row) for row in answer["classes"]]
      warnings = answer["warnings"]
      code = answer["code"]
    except Exception as e:  # noqa: BLE001 - any garbage: list in the job
      return self._fallback(f"unreadable answer ({type(e).__name__})")
    if code != _code_files():
      return self._fallback(f"it ran another exemplar ({code[0]})")
    if tuple(c.class_name for c in listed) != self._classes:
      return self._fallback("it answered for other classes")
    for name, level, message in warnings:
      logging.getLogger(name).log(level, "%s", message)
    return listed

  def close(self) -> None:
    """Ends the child if it still runs and reaps it (idempotent): a launcher
    that raises between `start()` and `result()` leaves no child blocked on
    a full stdout pipe."""
    if self._proc is not None:
      if self._proc.poll() is None:
        self._proc.kill()
      self._proc.wait()

  def __enter__(self) -> "Prelisting":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _fallback(self, why: str) -> None:
    _LOGGER.info("Listing in the job instead of beside the imports (%s)", why)
    return None


def start(root: str, class_names: Sequence[str], seed: int, capacity: int,
          threads: int = 1) -> Prelisting:
  """Starts listing and sampling `class_names` below the local folder `root`,
  each class's bottom-`capacity` sample under `seed`, in a child process.
  A relative `root` is taken from this process's working folder (the child
  runs in another). The child lists `threads` class folders at a time (the
  job's own worker count: on a network mount listing waits on round trips,
  which the job's workers overlap)."""
  request = json.dumps({"root": os.path.abspath(root), "classes": list(class_names),
                        "seed": str(seed), "capacity": capacity,
                        "threads": max(1, int(threads))}).encode("utf-8")
  try:
    proc = subprocess.Popen([sys.executable, *_SAFE_PATH, *_SAME_MODE, "-c", _BOOTSTRAP, _HOME],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=_HOME)
  except OSError as e:
    return Prelisting(None, class_names, f"could not start it: {e}")
  try:
    # The child reads its whole request first: a long class list only waits
    # for it to start.
    proc.stdin.write(request)
    proc.stdin.close()
  except OSError:
    pass  # it exited early: result() reports its exit status and stderr
  proc.stdin = None  # sent: communicate() has nothing more to write
  return Prelisting(proc, class_names)


def import_job_libraries() -> None:
  """Imports what the in-process job's first stages import anyway
  (TensorFlow for decoding, TFT for the transform graph): done here, it
  overlaps the child's listing."""
  import tensorflow  # noqa: F401
  import tensorflow_transform  # noqa: F401


def list_and_sample(root: str, class_name: str, seed: int,
                    capacity: int) -> bottom_k.SampledClass:
  """One class folder, listed and sampled as ListAndSampleClassFn does it on
  local disk (a pure function of the tree)."""
  started = time.monotonic()
  problems: List[Tuple[str, str]] = []
  sample = bottom_k.sample_paths(
      local_scan.walk_local(os.path.join(root, class_name), class_name, problems),
      seed, capacity)
  return bottom_k.SampledClass(
      class_name, sample.seen, sample.candidates, problems,
      int((time.monotonic() - started) * 1000))


class _Collect(logging.Handler):
  """Keeps the child's log records, to be logged again by the launcher."""

  def __init__(self):
    super().__init__(logging.INFO)
    self.records: List[Tuple[str, int, str]] = []

  def emit(self, record: logging.LogRecord) -> None:
    self.records.append((record.name, record.levelno, record.getMessage()))


def _child() -> int:
  request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
  collect = _Collect()
  logging.getLogger().addHandler(collect)
  logging.getLogger().setLevel(logging.INFO)
  root, seed, capacity = request["root"], int(request["seed"]), request["capacity"]
  threads = min(request.get("threads", 1), max(1, len(request["classes"])))
  parent = os.getppid()

  def one(name: str):
    if os.getppid() != parent:
      # The launcher is gone (killed, terminated): nobody will read the
      # answer, so stop walking the tree now, not after all of it.
      os._exit(3)
    return tuple(list_and_sample(root, name, seed, capacity))

  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    classes = list(pool.map(one, request["classes"]))  # in the order asked
  sys.stdout.buffer.write(pickle.dumps({"classes": classes, "warnings": collect.records,
                                        "code": _code_files()},
                                       protocol=pickle.HIGHEST_PROTOCOL))
  return 0
