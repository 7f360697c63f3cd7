"""Stage 4's plan and its running: which files each decode task tries, in
what order, on which threads.

A `DecodeTask` is some ranks of one class and their candidates, best first
(`task_candidates` deals a class's seeded candidates out to its tasks;
transforms/writing.py makes the tasks). `TaskDecoder` runs one: it reads each
candidate (`read_file`, any Beam file system), decodes it with
transforms/decoding.py's `ImageDecoder` and stops at the task's `need`; when
every candidate failed it lists the class again for more of the same seeded
sequence. `in_record_order` (with `in_order` and `decode_pool`) runs a
shard's tasks on a thread pool, in record order, with bounded look-ahead, in
groups whose first picks are decoded by one TF call (`TaskDecoder.decode_many`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import os
import threading
import time
from typing import (Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence,
                    Tuple, Union)

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from exemplar.transforms import contact_sheet, listing, sampling
from exemplar.transforms.decoding import (DecodedImage, DecodeFailure, DecodeResult,
                                          ImageDecoder, first_line)

# Decoding threads per worker: two per core (at most 16). Each thread also
# spends time holding the GIL (reading, hashing, thumbnails) or waiting for
# TF's inter-op threads, so one per core left the cores ~25% idle: on 2 cores,
# 4 threads made `all` 9-14% faster than 2; 6 or 8 gained nothing more.
DECODE_THREADS = max(1, min(16, 2 * (os.cpu_count() or 1)))
# Files decoded by one TF call (`ImageDecoder.decode_batch`): each call costs
# ~0.17 ms of dispatch that calls from other threads wait for. 8 a call took
# `all`'s decode phase on 10,000 photos from 20.2-21.8 s to 16.9-17.5 s
# (benchmarks/stages/run_phases.py; README, Performance). An ad-hoc loop of
# calls on 4 threads over 2,000 photos (2026-11-30, not kept) gave 626
# images/s at one file a call, 734 at 4, 851 at 8, 889 at 16.
DECODE_BATCH = 8
# At most this many bytes of source files go into one `decode_batch` call
# (`TaskDecoder.decode_many`), and of stored pixels into one group
# (`batch_size`). A call still holds up to this much of each at once (one
# file did before), on every decoding thread.
DECODE_BATCH_BYTES = 8 << 20


class DecodeTask(NamedTuple):
  """Some ranks of one class and their candidates, best first; decode until
  `need` succeed.

  The task's ranks are first_rank, + stride, ... (`need` of them). Its
  candidates are the class's seeded positions of those ranks, then its spares:
  positions spare_start, + spare_stride, ... A task whose `seen` (files in the
  class) is above what its class sample held may draw more of the same
  sequence from a new listing; seen 0: never. Candidates are relative to
  `root` (the class's ClassSample.root; '' or a whole path: used as is).
  """
  class_name: str
  label: int
  candidates: List[str]  # relative paths, in sampling-priority order
  need: int
  first_rank: int
  seen: int = 0
  stride: int = 1
  spare_start: int = -1  # -1: right after the ranks (one task for the class)
  spare_stride: int = 1
  root: str = ""  # '' : the TaskDecoder's root
  split: str = "train"  # the stored split of its images
  rank_offset: int = 0  # a rank minus this is its rank within the split


def spare_start(task: DecodeTask) -> int:
  """The seeded position of a task's first spare."""
  if task.spare_start < 0:  # one task for the class: right after its ranks
    return task.first_rank + task.need * task.stride
  return task.spare_start


def task_candidates(class_candidates: Sequence[str], task: DecodeTask) -> List[str]:
  """A task's candidates among its class's seeded candidates: the positions of
  its ranks, then of its spares."""
  count = len(class_candidates)
  ranks = range(task.first_rank, task.first_rank + task.need * task.stride, task.stride)
  positions = [p for p in ranks if p < count]
  positions += range(spare_start(task), count, task.spare_stride)
  return [class_candidates[p] for p in positions]


def read_file(path: str) -> Union[bytes, str]:
  """The file's bytes, or a failure reason (a str) if it cannot be read."""
  try:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      return f.read()
  except Exception as e:  # noqa: BLE001 - any file system's read error is a recorded skip
    return f"unreadable: {first_line(str(e))}"


def decoded_image(class_name: str, label: int, rank: int, relative_path: str,
                  source_path: str, result: DecodeResult,
                  split: str = "train") -> DecodedImage:
  return DecodedImage(
      class_name=class_name, label=label, rank=rank,
      relative_path=relative_path, source_path=source_path,
      encoded=result.encoded, source_height=result.source_height,
      source_width=result.source_width, sha256=result.sha256,
      thumbnail=result.thumbnail, split=split)


def decode_pool() -> concurrent.futures.ThreadPoolExecutor:
  """Threads for decoding: TF's decode, resize and encode release the GIL, so
  a few threads use every core of an in-process run, with no worker
  processes to start and no images copied between them."""
  return concurrent.futures.ThreadPoolExecutor(
      DECODE_THREADS, thread_name_prefix="decode")


def decode_file(decoder: ImageDecoder, source_path: str, thumbnail_size: int = 0):
  """Reads and decodes one file: (DecodeResult or failure reason, msec)."""
  started = time.monotonic()
  raw = read_file(source_path)
  result = raw if isinstance(raw, str) else decoder.decode(raw, thumbnail_size)
  return result, int((time.monotonic() - started) * 1000)


def in_order(pool, work, items: Iterable, lookahead: int) -> Iterator:
  """Yields work(item) for each item, in order, running up to `lookahead`
  items ahead on `pool`'s threads: cores busy, memory bounded."""
  pending = collections.deque()
  items = iter(items)
  for item in itertools.islice(items, lookahead):
    pending.append(pool.submit(work, item))
  while pending:
    result = pending.popleft().result()
    for item in itertools.islice(items, 1):
      pending.append(pool.submit(work, item))
    yield result


# What TaskDecoder returns for a task, in order: ("decoded", msec,
# DecodedImage), ("failed", msec, DecodeFailure) or ("refill", 0, None).
TaskEvent = Tuple[str, int, object]


class TaskDecoder:
  """DecodeTask -> its events, in order. Plain Python, safe to call from
  several threads at once (the traced TF functions are).

  Walks a task's candidates in priority order and stops at `need` decoded
  images, so a broken pick is replaced by the task's next candidate (with one
  task per class: the class's next in seeded order) and the result stays
  deterministic.
  """

  def __init__(self, input_root: str, decoder: ImageDecoder, seed: int,
               thumbnail_ranks: int = 0,
               thumbnail_size: int = contact_sheet.DEFAULT_CELL_SIZE):
    self._root = listing.normalize_root(input_root)
    self._decoder = decoder
    self._seed = seed
    # Images ranked below `thumbnail_ranks` in their class carry a thumbnail.
    self._thumbnail_ranks = thumbnail_ranks
    self._thumbnail_size = thumbnail_size
    # {class: (candidates held, seeded candidates)} from re-listings, shared by
    # the class's tasks on this worker's threads.
    self._listed: Dict[str, Tuple[int, List[str]]] = {}
    self._lock = threading.Lock()  # guards _class_locks
    self._class_locks: Dict[str, threading.Lock] = {}

  def __call__(self, task: DecodeTask) -> List[TaskEvent]:
    """Decodes a whole task: its events, in order."""
    run = TaskRun(self, task)
    events: List[TaskEvent] = []
    while not run.done:
      events += run.next_image()
    return events

  def start(self, task: DecodeTask) -> "TaskRun":
    return TaskRun(self, task)

  def _source_path(self, task: DecodeTask, relative_path: str) -> str:
    return listing.join(task.root or self._root, relative_path)

  def _thumbnail(self, rank: int) -> int:
    return self._thumbnail_size if rank < self._thumbnail_ranks else 0

  def _decode(self, task: DecodeTask, relative_path: str, rank: int) -> TaskEvent:
    result, msec = decode_file(self._decoder, self._source_path(task, relative_path),
                               self._thumbnail(rank))
    return self._event(task, relative_path, rank, result, msec)

  def decode_many(self, picks: Sequence[Tuple[DecodeTask, str, int]]
                  ) -> List[Tuple[Union[DecodeResult, str], int]]:
    """(task, relative path, rank) of several files -> (DecodeResult or failure
    reason, msec) of each, in order: `decode_file` of each, with the decoding
    in as few TF calls as `ImageDecoder.decode_batch` and DECODE_BATCH_BYTES
    allow. msec: this method's whole time shared out (summing to it), not
    each file's own."""
    started = time.monotonic()
    results: List[Union[DecodeResult, str]] = []
    raws: List[bytes] = []  # read, not decoded yet
    sizes: List[int] = []  # their thumbnail sizes

    def flush() -> None:
      results.extend(self._decoder.decode_batch(raws, sizes))
      raws.clear()
      sizes.clear()

    for task, path, rank in picks:
      raw = read_file(self._source_path(task, path))
      if isinstance(raw, str):  # unreadable: its reason, in its place
        flush()
        results.append(raw)
        continue
      if raws and sum(map(len, raws)) + len(raw) > DECODE_BATCH_BYTES:
        flush()
      raws.append(raw)
      sizes.append(self._thumbnail(rank))
    flush()
    total = int((time.monotonic() - started) * 1000)
    count = len(results)
    return [(result, total * (n + 1) // count - total * n // count)
            for n, result in enumerate(results)]

  def _event(self, task: DecodeTask, relative_path: str, rank: int,
             result: Union[DecodeResult, str], msec: int) -> TaskEvent:
    source_path = self._source_path(task, relative_path)
    if isinstance(result, str):
      return ("failed", msec, DecodeFailure(
          task.class_name, relative_path, source_path, result))
    return ("decoded", msec, decoded_image(
        task.class_name, task.label, rank, relative_path, source_path, result,
        task.split))

  def _more_candidates(self, task: DecodeTask, candidates: List[str]) -> List[str]:
    """More of the task's seeded sequence, when every candidate it held failed.

    Lists the class again (one listing at a time per class on this worker;
    the class's other tasks reuse it when it is long enough) and takes twice
    as many of the task's candidates, the first ones being those already
    tried, so the picks stay deterministic.
    """
    if task.seen <= len(candidates):
      return candidates
    wanted = 2 * len(candidates) + task.need
    capacity = spare_start(task) + max(0, wanted - task.need) * task.spare_stride + 1
    with self._lock:
      class_lock = self._class_locks.setdefault(task.class_name, threading.Lock())
    with class_lock:  # the class's other tasks wait for this listing
      cached = self._listed.get(task.class_name)
      if cached is None or cached[0] < min(capacity, task.seen):
        # A little more than this task needs covers its sibling tasks too
        # (their spares start up to one spare_stride later).
        sample = sampling.sample_paths(
            listing.walk_class_folder(task.root or self._root, task.class_name), self._seed,
            max(capacity + task.spare_stride, cached[0] * 2 if cached else 0))
        cached = (len(sample.candidates), [path for _, path in sample.candidates])
        self._listed[task.class_name] = cached
    more = task_candidates(cached[1], task)
    if more[:len(candidates)] != candidates:  # the folder changed under us
      return candidates
    return more


class TaskRun:
  """One task's decoding, an image at a time: `next_image()` tries the task's
  candidates in order until one more image is stored (or none is left).
  Not thread-safe: `in_record_order` runs a task's steps one after another."""

  def __init__(self, decoder: TaskDecoder, task: DecodeTask):
    self._decoder = decoder
    self._task = task
    self._candidates = list(task.candidates)
    self._tried = 0
    self._stored = 0
    self._exhausted = False

  @property
  def done(self) -> bool:
    return self._exhausted or self._stored >= self._task.need

  def upcoming(self) -> Optional[Tuple[DecodeTask, str, int]]:
    """(task, candidate, rank) that `next_image` tries first, or None when
    the run is done or must list its class again first."""
    if self.done or self._tried >= len(self._candidates):
      return None
    return (self._task, self._candidates[self._tried], self._rank())

  def _rank(self) -> int:
    """The rank (within the split) of the image the run stores next."""
    task = self._task
    return task.first_rank + self._stored * task.stride - task.rank_offset

  def next_image(self, decoded: Optional[Tuple[str, Union[DecodeResult, str], int]] = None
                 ) -> List[TaskEvent]:
    """The events up to and including the next stored image (or up to the end
    of the candidates: the class is short). `decoded`: (candidate, result,
    msec) of the candidate `upcoming()` named, decoded already."""
    task, events = self._task, []
    while not self.done:
      if self._tried == len(self._candidates):
        more = self._decoder._more_candidates(task, self._candidates)
        if len(more) > len(self._candidates):
          events.append(("refill", 0, None))
        self._candidates = more
        if self._tried == len(self._candidates):
          self._exhausted = True  # the class has no more files
          break
      relative_path = self._candidates[self._tried]
      self._tried += 1
      rank = self._rank()
      if decoded is not None:
        if decoded[0] != relative_path:  # only ever `upcoming()`'s, tried first
          raise RuntimeError(f"decoded {decoded[0]!r} ahead, but the next "
                             f"candidate is {relative_path!r}")
        event = self._decoder._event(task, relative_path, rank, decoded[1], decoded[2])
      else:
        event = self._decoder._decode(task, relative_path, rank)
      decoded = None  # only ever the first candidate tried
      events.append(event)
      if event[0] == "decoded":
        self._stored += 1
        break
    return events


def batch_size(shape: Sequence[int]) -> int:
  """Files one group decodes together for stored images of `shape` (height,
  width, channels): DECODE_BATCH, fewer when their pixels would pass
  DECODE_BATCH_BYTES (a call holds all of its files' pixels at once)."""
  height, width, channels = shape
  return max(1, min(DECODE_BATCH, DECODE_BATCH_BYTES // max(1, height * width * channels)))


def in_record_order(pool, decoder: TaskDecoder, tasks: Sequence[DecodeTask],
                    lookahead: int, threads: int = DECODE_THREADS,
                    batch: Optional[int] = None) -> Iterator[List[TaskEvent]]:
  """Decodes a shard's tasks a stored image at a time, in record order: rank
  within the split, then label (the order of `tasks`, sorted by label).

  A step is one task's next stored image. Consecutive steps go to `pool`'s
  threads in groups of up to `batch` (default DECODE_BATCH: pass
  `batch_size(shape)` to bound a group's pixels), at most each of `threads`
  threads' share of the tasks at the group's first rank. Groups run
  max(threads + 1, ceil(lookahead / the largest group)) ahead: with groups
  of 8, up to 8 (threads + 1) steps, more than `lookahead`. A group decodes
  the first candidate of each task's first step in it together
  (`TaskDecoder.decode_many`), then runs its steps in order; a step whose
  pick fails goes on to the task's next candidates one by one, as without
  groups. A task's own steps run one after another (a failed pick shifts the
  task's later ones), each waiting for the one before. No deadlock: the pool
  takes groups in submission order, so a step's predecessor is always
  running, done, or earlier in the same group.

  `threads` is the pool's number of threads. Yields each step's events.

  Raises:
    Whatever a step raises (the groups already queued then decode nothing
    more: they only pass their turns on).
  """
  runs = [decoder.start(task) for task in tasks]
  turns = [0] * len(runs)
  condition = threading.Condition()
  steps = sorted((task.first_rank - task.rank_offset + j, i, j)
                 for i, task in enumerate(tasks) for j in range(task.need))
  # A group's steps run one after another, and a step waits for its task's
  # step before it, so a group holds at most each thread's share of the
  # tasks that have a step at its first rank: with a few long tasks (k = 500
  # of 2 classes, or the big classes of '10%'), larger groups would wait for
  # each other and run on one thread (found by helper-23).
  threads = max(1, threads)
  batch = DECODE_BATCH if batch is None else batch
  tasks_at_rank = collections.Counter(rank for rank, _, _ in steps)
  most = max(1, min(batch, len(steps) // (2 * threads)))
  groups, start = [], 0
  while start < len(steps):
    size = max(1, min(most, tasks_at_rank[steps[start][0]] // threads))
    groups.append(steps[start:start + size])
    start += size

  def wait_turn(i: int, j: int) -> None:
    with condition:
      condition.wait_for(lambda: turns[i] == j)

  def advance(i: int) -> None:
    with condition:
      turns[i] += 1
      condition.notify_all()

  failed = threading.Event()  # a group raised: the rest only pass their turns on

  def run_group(group) -> List[List[TaskEvent]]:
    inside = {(i, j) for _, i, j in group}
    events: List[List[TaskEvent]] = []
    ran = 0  # steps run (or failed) and passed on
    try:
      if failed.is_set():
        return events
      # The first candidate of each task's first step here (a later step's
      # depends on how this one goes), decoded together.
      firsts = []
      for _, i, j in group:
        if (i, j - 1) not in inside:
          wait_turn(i, j)
          upcoming = runs[i].upcoming()
          if upcoming is not None:
            firsts.append((i, upcoming))
      decoded = {}
      if len(firsts) > 1:
        results = decoder.decode_many([pick for _, pick in firsts])
        decoded = {i: (pick[1], result, msec)
                   for (i, pick), (result, msec) in zip(firsts, results)}
      for _, i, j in group:
        wait_turn(i, j)
        try:
          events.append(runs[i].next_image(decoded.pop(i, None)))
        finally:
          ran += 1
          advance(i)
      return events
    except BaseException:
      failed.set()
      raise
    finally:
      # After a failure, pass on the steps not run, each in its turn, so the
      # later groups waiting for them end (the error reaches the caller).
      for _, i, j in group[ran:]:
        wait_turn(i, j)
        advance(i)

  # `lookahead` counts steps; enough groups to keep every thread busy.
  for group_events in in_order(pool, run_group, groups,
                               max(threads + 1, -(-lookahead // most))):
    yield from group_events
