"""Baseline: the obvious Beam pipeline, one element per file.

    python benchmarks/baselines/naive_beam.py ROOT

fileio.MatchFiles -> Map to (class, path) -> Sample.FixedSizePerKey(1), on
Beam's in-process FnApiRunner: every file becomes an element that crosses the
shuffle, and Beam's sample is not seeded. It only samples (no decode), so it
is a lower bound on a naive whole job.
"""

import sys
import time

_STARTED = time.perf_counter()

import apache_beam as beam  # noqa: E402
from apache_beam.io import fileio  # noqa: E402
from apache_beam.runners.portability.fn_api_runner import FnApiRunner  # noqa: E402


def class_and_path(metadata, root):
  relative = metadata.path[len(root) + 1:]
  return relative.split("/", 1)[0], metadata.path


if __name__ == "__main__":
  root = sys.argv[1].rstrip("/")
  imported = time.perf_counter()
  with beam.Pipeline(runner=FnApiRunner()) as p:
    _ = (
        p
        | "Match" >> fileio.MatchFiles(root + "/*/*")
        | "ClassAndPath" >> beam.Map(class_and_path, root=root)
        | "SampleOne" >> beam.combiners.Sample.FixedSizePerKey(1)
        | "Count" >> beam.combiners.Count.Globally()
        | "Print" >> beam.Map(lambda n: print(f"classes sampled: {n}")))
  done = time.perf_counter()
  print(f"STAGE import_seconds={imported - _STARTED:.3f} "
        f"work_seconds={done - imported:.3f}")
