"""Stage 3: a seeded, deterministic per-class reservoir sample.

Each file gets a priority: a keyed 128-bit BLAKE2b hash of its path relative to
the input root, keyed by the seed. A class's sample of size k is its k files of
lowest priority ("bottom-k" or priority reservoir sampling). Because priorities
are independent uniform draws for distinct paths, every k-subset is equally
likely, and because they depend only on (seed, relative path):
  * the picks do not depend on listing order, bundle splits, worker count,
    retries or runner;
  * a copy of the tree elsewhere (local disk, gs://) gives the same picks.

`SeededSampleFn` is a CombineFn whose accumulator holds at most `capacity`
candidates, so Beam combines partial samples before the shuffle and no class
ever has more than O(k) paths in memory. Candidates beyond k are spares: the
decode stage takes the next one when a picked image cannot be decoded.
Beam's `Sample.FixedSizePerKey` draws from an unseeded global RNG and cannot
give any of this.
"""

from __future__ import annotations

import hashlib
import heapq
from typing import Iterable, List, NamedTuple, Tuple

import apache_beam as beam

# (priority, relative_path). Priorities are 128-bit, so two distinct paths tie
# with probability ~2**-128; ordering by the pair keeps even that deterministic.
Candidate = Tuple[int, str]


def hash_key(seed: int) -> bytes:
  """The BLAKE2b key for a seed (any int that fits in 128 bits)."""
  return seed.to_bytes(16, "big", signed=True)


def priority(key: bytes, relative_path: str) -> int:
  """A file's sampling priority: uniform on [0, 2**128), fixed by the key."""
  digest = hashlib.blake2b(
      relative_path.encode("utf-8"), digest_size=16, key=key).digest()
  return int.from_bytes(digest, "big")


class PartialSample(NamedTuple):
  """A class's sample so far: files seen and the lowest-priority candidates."""
  seen: int
  candidates: List[Candidate]  # ascending by priority, len <= capacity


def capacity_for(samples_per_class: int, spares: int) -> int:
  return samples_per_class + spares


def sample_paths(relative_paths: Iterable[str], seed: int,
                 capacity: int) -> PartialSample:
  """The bottom-`capacity` sample of some paths of one class (a pure function).

  Keeps a bounded max-heap, so memory is O(capacity) whatever the input size.
  """
  heap: List[Tuple[int, str]] = []  # (-priority, path): max-heap on priority
  seen = 0
  key = hash_key(seed)
  for path in relative_paths:
    seen += 1
    p = priority(key, path)
    if len(heap) < capacity:
      heapq.heappush(heap, (-p, path))
    elif -p > heap[0][0]:
      heapq.heapreplace(heap, (-p, path))
  return PartialSample(
      seen, sorted((-neg, rp) for neg, rp in heap))


def merge_samples(samples: Iterable[PartialSample], capacity: int) -> PartialSample:
  """Merges partial samples of one class; associative and commutative."""
  seen = 0
  pools = []
  for sample in samples:
    seen += sample.seen
    pools.append(sample.candidates)
  merged = heapq.nsmallest(capacity, heapq.merge(*pools))
  return PartialSample(seen, list(merged))


class SeededSampleFn(beam.CombineFn):
  """Merges `PartialSample`s of a class into its seeded bottom-k sample.

  Inputs are partial samples (the listing stage samples where it lists, so
  per-file elements never cross a Beam boundary); output is a PartialSample
  with up to `capacity` candidates in priority order.
  """

  def __init__(self, capacity: int):
    if capacity < 1:
      raise ValueError(f"capacity must be >= 1, got {capacity}")
    self._capacity = capacity

  def create_accumulator(self) -> PartialSample:
    return PartialSample(0, [])

  def add_input(self, accumulator: PartialSample,
                element: PartialSample) -> PartialSample:
    return merge_samples([accumulator, PartialSample(*element)], self._capacity)

  def merge_accumulators(self, accumulators: Iterable[PartialSample]) -> PartialSample:
    return merge_samples(
        (PartialSample(*a) for a in accumulators), self._capacity)

  def extract_output(self, accumulator: PartialSample) -> PartialSample:
    return PartialSample(*accumulator)
