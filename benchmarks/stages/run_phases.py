"""Where one whole `exemplar` run's time goes, phase by phase.

    python benchmarks/stages/run_phases.py EXEMPLAR_FLAGS...
    e.g. python benchmarks/stages/run_phases.py --input_dir /tmp/exemplar-bench-trees/photos-100x100-v1 \\
             --output_dir /tmp/phases --samples_per_class all

Runs the `exemplar` command in this process (its `console_main`, so every
setting the command makes is made) with a clock on a few of its steps, and
prints one line:

    STAGE imports=S build=S to_decode=S decode=S decode_cpu=S sheet=S after=S total=S

imports   start -> the job's libraries imported (Beam, TF, TFT, exemplar)
build     the Beam pipeline built
to_decode the runner starting: stages before the first shard (listing,
          sampling, TFT's graph, ...)
decode    first shard started -> last shard written (every shard's decode,
          encode and write); decode_cpu: the process's CPU seconds in it
sheet     the contact sheet drawn and written
after     the rest, to the exit (finalize: manifest, metadata, report, commit)

The clocks wrap exemplar's own functions and methods by name (a rename here
fails loudly); they add a few microseconds per shard, nothing per image.
"""

import functools
import os
import sys
import time

_STARTED = time.perf_counter()

from exemplar import main as exemplar_main, prelist  # noqa: E402
from exemplar.transforms import contact_sheet, writing  # noqa: E402

_MARKS = {}  # name -> [(start, end, cpu at start, cpu at end)]


def _cpu() -> float:
  times = os.times()
  return times.user + times.system


def _clocked(owner, name: str, key: str) -> None:
  function = getattr(owner, name)

  @functools.wraps(function)
  def clocked(*args, **kwargs):
    start, cpu = time.perf_counter(), _cpu()
    try:
      result = function(*args, **kwargs)
      if hasattr(result, "__next__"):  # a DoFn's process: drain it inside the clock
        result = list(result)
      return result
    finally:
      _MARKS.setdefault(key, []).append((start, time.perf_counter(), cpu, _cpu()))

  setattr(owner, name, clocked)


def main() -> int:
  _clocked(prelist, "import_job_libraries", "imports")
  _clocked(exemplar_main.assemble, "build", "build")
  _clocked(writing.DecodeAndWriteShard, "process", "decode")
  _clocked(contact_sheet.RenderAndWriteSheet, "process", "sheet")
  sys.argv = ["exemplar"] + sys.argv[1:]
  code = exemplar_main.console_main()
  end = time.perf_counter()
  if code or not _MARKS.get("decode"):
    print(f"exemplar exited with {code}" if code else "no shard was written")
    return code or 1
  imports = max(e for _, e, _, _ in _MARKS["imports"])
  build_start, build_end, _, _ = _MARKS["build"][0]
  decode = _MARKS["decode"]
  first, last = decode[0][0], decode[-1][1]
  sheet = sum(e - s for s, e, _, _ in _MARKS.get("sheet", []))
  print(f"STAGE imports={imports - _STARTED:.2f} build={build_end - build_start:.2f} "
        f"to_decode={first - build_end:.2f} decode={last - first:.2f} "
        f"decode_cpu={decode[-1][3] - decode[0][2]:.2f} shards={len(decode)} "
        f"sheet={sheet:.2f} after={end - last - sheet:.2f} total={end - _STARTED:.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
