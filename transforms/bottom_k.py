"""The seeded bottom-k sampler as pure functions: no Beam, no TensorFlow.

    sample_paths(relative_paths, seed, capacity) -> PartialSample
    merge_samples([PartialSample, ...], capacity) -> PartialSample

A file's priority is a keyed 128-bit BLAKE2b hash of its path relative to the
input root, keyed by the seed; a class's sample is its `capacity` files of
lowest priority. transforms/sampling.py explains why and wraps these in
Beam's CombineFn. They live apart so that a process that has not imported
Beam (exemplar.prelist's listing child) samples exactly as the job does.
"""

from __future__ import annotations

import hashlib
import heapq
from typing import Iterable, List, NamedTuple, Tuple

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


# Above any 16-byte digest: no threshold yet.
_NO_THRESHOLD = b"\xff" * 17
# Capacities from here on keep every candidate and sort once at the end (the
# input is then at most about as large as the sample anyway, e.g. 'all').
PRUNE_LIMIT = 1 << 20


def sample_paths(relative_paths: Iterable[str], seed: int,
                 capacity: int) -> PartialSample:
  """The bottom-`capacity` sample of some paths of one class (a pure function).

  Memory is O(capacity) whatever the input size. This loop runs once per file
  of the tree, so it is written for speed (it dominates listing time): the
  keyed hasher is made once and copied per path (cheaper than a keyed
  constructor), digests are compared as bytes (16-byte big-endian digests
  order as their integers do) and only converted for the final candidates, and
  the pool is pruned by sorting in C once it holds 2 x capacity + 64 entries,
  after which a path only costs its hash and one comparison with the
  threshold. Same result as `sorted((priority(key, p), p) for p in
  relative_paths)[:capacity]`.
  """
  if capacity < 1:
    return PartialSample(sum(1 for _ in relative_paths), [])
  copy = hashlib.blake2b(digest_size=16, key=hash_key(seed)).copy
  limit = 2 * capacity + 64 if capacity < PRUNE_LIMIT else None
  pool: List[Tuple[bytes, str]] = []
  append = pool.append
  threshold = _NO_THRESHOLD
  seen = 0
  for seen, path in enumerate(relative_paths, 1):
    hasher = copy()
    hasher.update(path.encode("utf-8"))
    digest = hasher.digest()
    if digest < threshold:
      append((digest, path))
      if limit is not None and len(pool) >= limit:
        pool.sort()
        del pool[capacity:]
        threshold = pool[-1][0]
  pool.sort()
  del pool[capacity:]
  return PartialSample(
      seen, [(int.from_bytes(digest, "big"), path) for digest, path in pool])


def merge_samples(samples: Iterable[PartialSample], capacity: int) -> PartialSample:
  """Merges partial samples of one class; associative and commutative."""
  seen = 0
  pools = []
  for sample in samples:
    seen += sample.seen
    pools.append(sample.candidates)
  merged = heapq.nsmallest(capacity, heapq.merge(*pools))
  return PartialSample(seen, list(merged))


class SampledClass(NamedTuple):
  """One class folder listed and sampled in one pass outside the job
  (exemplar.prelist), as `SampleImageFolder(prelisted=...)` takes it.
  `candidates` are its bottom-k sample, ascending by priority; `problems`
  the (relative folder, reason) pairs of what could not be listed;
  `listing_msec` the pass's wall time."""
  class_name: str
  seen: int
  candidates: List[Candidate]
  problems: List[Tuple[str, str]]
  listing_msec: int
