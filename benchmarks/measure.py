"""Runs a command as a whole process and measures it.

Wall time is from spawn to exit. Memory is polled over the process and all
its descendants (Beam's multi-process workers, exemplar's listing child):
  * peak RSS, every 50 ms: the largest sum of their resident set sizes
    (/proc/PID/statm, ~0.01 ms a read). An upper bound: pages two processes
    share (TensorFlow's libraries, mapped by every worker) count once per
    process. Never lower than the kernel's own peak for the single largest
    process (ru_maxrss from wait4), which is also kept and cannot miss a
    short spike.
  * peak footprint, every 1 s: the largest (sum of private pages + the
    largest shared part of any one of them), from /proc/PID/smaps_rollup:
    shared library pages counted once. Equal to RSS for a single process.
    Not read more often because the kernel walks the whole address space for
    it (~13 ms for a process that imported TensorFlow) while holding the
    process's memory-map lock: read every 50 ms, as it once was, it took a
    quarter of a core and stalled the measured program's own page faults
    (exemplar k=1: 12.2-14.3 s polled against 10.2-10.8 s unpolled; the
    one-core bare script was hardly touched), so multi-core programs were
    measured slower than they ran.
Lines the program prints as `STAGE key=value ...` are parsed into a dict, so
a benchmark program can report the time of one stage from inside.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
import time
from typing import Dict, List, Optional, Sequence

import psutil

POLL_SECONDS = 0.05
FOOTPRINT_EVERY = 20  # polls: once a second


@dataclasses.dataclass
class Measurement:
  argv: List[str]
  seconds: float
  peak_rss_bytes: int  # largest sum over the process tree, polled
  peak_footprint_bytes: int  # largest sum of private + largest shared part
  max_single_rss_bytes: int  # kernel's peak of the largest single process
  returncode: int
  stage: Dict[str, str]
  stdout: str
  stderr: str

  @property
  def ok(self) -> bool:
    return self.returncode == 0

  def stage_float(self, key: str) -> Optional[float]:
    value = self.stage.get(key)
    return None if value is None else float(value)


def _tree(process: psutil.Process) -> List[psutil.Process]:
  try:
    return [process] + process.children(recursive=True)
  except psutil.Error:
    return []


def _tree_rss(process: psutil.Process) -> int:
  """The sum of RSS over the process tree (statm: cheap)."""
  rss = 0
  for proc in _tree(process):
    try:
      rss += proc.memory_info().rss
    except psutil.Error:
      continue
  return rss


def _tree_footprint(process: psutil.Process) -> int:
  """Sum of private + largest shared over the process tree (smaps_rollup:
  costly, see the module docstring)."""
  private = shared = 0
  for proc in _tree(process):
    try:
      info = proc.memory_full_info()  # smaps_rollup: rss, uss (private) ...
    except psutil.Error:
      continue
    private += info.uss
    shared = max(shared, info.rss - info.uss)
  return private + shared


def parse_stage(stdout: str) -> Dict[str, str]:
  values: Dict[str, str] = {}
  for line in stdout.splitlines():
    if line.startswith("STAGE "):
      for item in line[len("STAGE "):].split():
        key, _, value = item.partition("=")
        values[key] = value
  return values


def run(argv: Sequence[str], env: Optional[Dict[str, str]] = None,
        cwd: Optional[str] = None, timeout: Optional[float] = None) -> Measurement:
  """Runs `argv` to completion; returns its wall time and peak memory."""
  full_env = dict(os.environ)
  full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if env:
    full_env.update(env)
  started = time.perf_counter()
  proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=full_env, cwd=cwd)
  ps = psutil.Process(proc.pid)
  peak = [0, 0]
  output: Dict[str, bytes] = {}
  done = threading.Event()

  def poll():
    polls = 0
    while not done.is_set():
      peak[0] = max(peak[0], _tree_rss(ps))
      if polls % FOOTPRINT_EVERY == 0:
        peak[1] = max(peak[1], _tree_footprint(ps))
      polls += 1
      done.wait(POLL_SECONDS)

  def drain(name, stream):
    output[name] = stream.read()

  threads = [threading.Thread(target=poll, daemon=True),
             threading.Thread(target=drain, args=("out", proc.stdout), daemon=True),
             threading.Thread(target=drain, args=("err", proc.stderr), daemon=True)]
  for thread in threads:
    thread.start()
  timer = threading.Timer(timeout, proc.kill) if timeout else None
  if timer:
    timer.start()
  # wait4 gives this child's own rusage: ru_maxrss is the peak of the largest
  # single process of its tree (the child or a descendant it waited for).
  _, status, usage = os.wait4(proc.pid, 0)
  seconds = time.perf_counter() - started
  proc.returncode = os.waitstatus_to_exitcode(status)
  if timer:
    timer.cancel()
  done.set()
  for thread in threads:
    thread.join()
  single = usage.ru_maxrss * 1024
  return Measurement(list(argv), seconds, max(peak[0], single),
                     max(peak[1], single), single,
                     proc.returncode, parse_stage(output["out"].decode(errors="replace")),
                     output["out"].decode(errors="replace"),
                     output["err"].decode(errors="replace"))
