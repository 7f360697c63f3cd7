"""Decode-stage throughput: exemplar's decode-and-write step vs a plain loop.

    python benchmarks/stages/decode_stage.py ROOT --mode loop [--processes N] [--limit N]
    python benchmarks/stages/decode_stage.py ROOT --mode beam [--limit N] [Beam flags]

Every image of the tree goes through the same per-image work: read the file,
then `decoding.ImageDecoder.decode` (header check, TF decode + resize, encode,
sha256), exemplar's one definition of it.

loop: a plain Python loop over the files, split over N processes (default:
      all cores), each with its own decoder: the most the ops can do here.
beam: exemplar's `DecodeAndWriteShard` DoFn (the pipeline's decode stage: it
      also serializes the records and writes the shard files, which the loop
      does not) on decode tasks of 64 files of a class, grouped round-robin
      into 4 shards, on the runner the flags choose; a subclass stamps the
      start and end of each shard into Beam distribution metrics, and images
      are counted by exemplar's own images_decoded counter.

Both report `STAGE images=N seconds=S`: S runs from the first image started
to the last image finished on any process, so process start-up, imports and
building the decoder are outside it on both sides, and the first call's TF
tracing is inside it on both sides.
"""

import argparse
import multiprocessing
import os
import tempfile
import time
from typing import List, Tuple

from exemplar.transforms import decode_tasks, decoding, listing

CHUNK = 64  # files per decode task
SETTINGS = decoding.ImageSettings()  # exemplar's defaults: 256x256 bilinear png


def all_tasks(root: str, limit: int = 0) -> List[decode_tasks.DecodeTask]:
  """The decode tasks of `--samples_per_class all`, the first `limit` images."""
  tasks, images = [], 0
  for label, class_name in enumerate(listing.list_class_folders(root)):
    paths = sorted(listing.walk_class_folder(root, class_name))
    for start in range(0, len(paths), CHUNK):
      if limit and images >= limit:
        return tasks
      chunk = paths[start:start + CHUNK]
      tasks.append(decode_tasks.DecodeTask(class_name, label, chunk, len(chunk), start))
      images += len(chunk)
  return tasks


# --- plain loop -------------------------------------------------------------

_DECODER = None


def _init_worker():
  global _DECODER
  _DECODER = decoding.ImageDecoder(SETTINGS)


def _loop_chunk(args: Tuple[str, List[str]]) -> Tuple[int, float, float]:
  root, relative_paths = args
  started = time.time()
  done = 0
  for relative_path in relative_paths:
    raw = decode_tasks.read_file(os.path.join(root, relative_path))
    if not isinstance(raw, str) and not isinstance(_DECODER.decode(raw), str):
      done += 1
  return done, started, time.time()


def run_loop(root: str, processes: int, limit: int) -> Tuple[int, float]:
  chunks = [(root, t.candidates) for t in all_tasks(root, limit)]
  with multiprocessing.get_context("spawn").Pool(processes, _init_worker) as pool:
    # Wait until every worker has built its decoder (imports TF), so start-up
    # is outside the timed span as it is for the Beam workers.
    pool.map(time.sleep, [0.5] * processes, chunksize=1)
    results = pool.map(_loop_chunk, chunks, chunksize=1)
  images = sum(r[0] for r in results)
  return images, max(r[2] for r in results) - min(r[1] for r in results)


# --- Beam -------------------------------------------------------------------

def run_beam(root: str, limit: int, out_dir: str, beam_args) -> Tuple[int, float]:
  import apache_beam as beam
  from apache_beam.metrics import Metrics
  from apache_beam.metrics.metric import MetricsFilter
  from apache_beam.options.pipeline_options import PipelineOptions
  from exemplar import runners

  from exemplar.transforms import writing

  class TimedDecodeAndWriteShard(writing.DecodeAndWriteShard):
    """exemplar's decode-and-write step, with each shard's start and end
    recorded."""

    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      self._starts = Metrics.distribution("bench", "task_start_ms")
      self._ends = Metrics.distribution("bench", "task_end_ms")

    def process(self, element):
      self._starts.update(int(time.time() * 1000))
      yield from super().process(element)
      self._ends.update(int(time.time() * 1000))

  tasks = all_tasks(root, limit)
  num_shards = 4
  options = PipelineOptions(beam_args)
  runner = runners.resolve_runner(options.get_all_options().get("runner"))
  p = beam.Pipeline(runner=runner, options=options)
  _ = (
      p
      | "Tasks" >> beam.Create(
          # As the pipeline keys them: (split, shard index, shard count).
          [(("train", i % num_shards, num_shards), task) for i, task in enumerate(tasks)])
      | "GroupByShard" >> beam.GroupByKey()
      | "DecodeAndWriteShard" >> beam.ParDo(
          TimedDecodeAndWriteShard(root, out_dir, SETTINGS)).with_outputs(
              decoding.FAILURES_TAG, writing.SHEET_TAG, main="shards"))
  result = p.run()
  result.wait_until_finish()
  metrics = result.metrics()
  starts = metrics.query(MetricsFilter().with_name("task_start_ms"))["distributions"]
  ends = metrics.query(MetricsFilter().with_name("task_end_ms"))["distributions"]
  images = metrics.query(MetricsFilter().with_name("images_decoded"))["counters"]
  first = min(d.committed.min for d in starts)
  last = max(d.committed.max for d in ends)
  return sum(c.committed for c in images), (last - first) / 1000


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("root")
  parser.add_argument("--mode", choices=("loop", "beam"), required=True)
  parser.add_argument("--processes", type=int, default=os.cpu_count())
  parser.add_argument("--limit", type=int, default=0,
                      help="Decode only the first N images (whole tasks of 64).")
  args, beam_args = parser.parse_known_args()
  root = listing.normalize_root(args.root)
  if args.mode == "loop":
    images, seconds = run_loop(root, args.processes, args.limit)
  else:
    with tempfile.TemporaryDirectory(prefix="decode-stage-") as out_dir:
      images, seconds = run_beam(root, args.limit, out_dir, beam_args)
  print(f"STAGE images={images} seconds={seconds:.3f} "
        f"images_per_second={images / seconds:.1f}")
