"""The listing+sampling stage alone, timed from inside one process.

    python benchmarks/stages/listing_stage.py ROOT [--mode function|beam] [Beam flags]

function: `sampling.sample_paths(listing.walk_class_folder(root, c), ...)` for
          every class in a plain loop: the pure per-file cost of the stage.
beam:     exemplar's own `SampleImageFolder` transform (class folders ->
          Reshuffle -> list and sample each where it lies -> merge partial
          samples per class) in a Beam pipeline, on the runner the flags
          choose (default: the in-process FnApiRunner, as `exemplar`).

Prints `STAGE files=N seconds=S pipeline_seconds=P`. For function, S is the
loop. For beam, S runs from the first class listing started to the last one
finished on any worker (a subclass of exemplar's ListAndSampleClassFn stamps
them into Beam distribution metrics), so runner and worker start-up are
outside it; P is the whole pipeline run, start-up included.
"""

import argparse
import time
from typing import Tuple

from exemplar.transforms import listing, sampling

SEED = 0
CAPACITY = sampling.capacity_for(1, 4)  # k=1 and exemplar's default 4 spares


def run_function(root: str) -> int:
  files = 0
  for class_name in listing.list_class_folders(root):
    sample = sampling.sample_paths(
        listing.walk_class_folder(root, class_name), SEED, CAPACITY)
    files += sample.seen
  return files


def run_beam(root: str, beam_args) -> Tuple[int, float]:
  """-> (files, seconds from the first listing started to the last ended)."""
  import apache_beam as beam
  from apache_beam.metrics import Metrics
  from apache_beam.metrics.metric import MetricsFilter
  from apache_beam.options.pipeline_options import PipelineOptions
  from exemplar import runners
  from exemplar.transforms import sample_images

  class TimedListAndSampleClass(sample_images.ListAndSampleClassFn):
    """exemplar's ListAndSampleClassFn, with each listing's start and end recorded."""

    def __init__(self, *args):
      super().__init__(*args)
      self._starts = Metrics.distribution("bench", "list_start_ms")
      self._ends = Metrics.distribution("bench", "list_end_ms")
      self._seen = Metrics.counter("bench", "files")

    def process(self, element):
      self._starts.update(int(time.time() * 1000))
      for output in super().process(element):
        if not isinstance(output, beam.pvalue.TaggedOutput):
          self._seen.inc(output[1].seen)
        yield output
      self._ends.update(int(time.time() * 1000))

  options = PipelineOptions(beam_args)
  runner = runners.resolve_runner(options.get_all_options().get("runner"))
  classes = listing.list_class_folders(root)
  p = beam.Pipeline(runner=runner, options=options)
  # SampleImageFolder, step for step, with the timed DoFn.
  listed = (
      p
      | "ClassFolders" >> beam.Create(list(classes))
      | "SpreadClassFolders" >> beam.Reshuffle()
      | "ListAndSample" >> beam.ParDo(TimedListAndSampleClass(root, SEED, CAPACITY))
      .with_outputs(sample_images.PROBLEMS_TAG, sample_images.RANGES_TAG, main="samples"))
  _ = listed.samples | "MergeSamples" >> beam.CombinePerKey(sampling.SeededSampleFn(CAPACITY))
  result = p.run()
  result.wait_until_finish()
  metrics = result.metrics()
  query = lambda name, kind: metrics.query(MetricsFilter().with_name(name))[kind]  # noqa: E731
  first = min(d.committed.min for d in query("list_start_ms", "distributions"))
  last = max(d.committed.max for d in query("list_end_ms", "distributions"))
  return sum(c.committed for c in query("files", "counters")), (last - first) / 1000


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("root")
  parser.add_argument("--mode", choices=("function", "beam"), default="function")
  args, beam_args = parser.parse_known_args()
  root = listing.normalize_root(args.root)
  started = time.perf_counter()
  if args.mode == "function":
    files = run_function(root)
    seconds = time.perf_counter() - started
  else:
    files, seconds = run_beam(root, beam_args)
  print(f"STAGE files={files} seconds={seconds:.3f} "
        f"pipeline_seconds={time.perf_counter() - started:.3f}")
