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
from typing import Iterable, List, NamedTuple, Optional, Tuple

import apache_beam as beam

from exemplar.transforms.splits import DEFAULT_SPLIT

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
_PRUNE_LIMIT = 1 << 20


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
  limit = 2 * capacity + 64 if capacity < _PRUNE_LIMIT else None
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


# --- the sample's public form -------------------------------------------------


class Pick(NamedTuple):
  """One image of a class's seeded sample.

  `rank` is its position in the class's seeded order (0 first). Ranks at or
  beyond the class's `samples_per_class` are spares: they replace picks that
  fail to decode, in rank order.
  """
  rank: int
  relative_path: str  # the sampling key: the path below the root ('cat/x.jpg'),
                      # or the whole path/URI for a file outside any root
  path: str           # the source file: absolute path or URI
  split: str = ""     # fraction splits: the split its hash puts it in (then
                      # `rank` is its rank there); '' : by rank (count splits)


class ClassSample(NamedTuple):
  """One class's seeded sample: what `SampleImageFolder` and `SampleImages`
  emit, one element per class, and what `WriteDataset` takes.

  `samples_per_class` is the number of picks wanted (k), or None for every
  file ('all': no spares). `picks` holds up to k + spares picks, best first.
  `root` is the folder relative paths are below ('' when every path is
  whole); `relistable` says whether the class can be listed again at
  `root/class_name` for more candidates when every spare fails (a class
  folder: yes; a list file: no). `problems` are (relative folder, reason)
  pairs for sub-folders that could not be listed.

  `splits` are (split, images planned) in split order; () : one 'train'
  split of `wanted` images. Count splits cut the picks' rank order in turn
  (the first split gets ranks 0 to n-1, ...); with `split_by_hash` (fraction
  splits) each pick's `split` names its split and its `rank` its place
  there, and a split's picks beyond its planned count are its spares.
  `targets` are (split, images asked for): a class below one is short.
  """
  class_name: str
  root: str
  files_seen: int
  samples_per_class: Optional[int]
  picks: Tuple[Pick, ...]
  relistable: bool = False
  problems: Tuple[Tuple[str, str], ...] = ()
  splits: Tuple[Tuple[str, int], ...] = ()
  split_by_hash: bool = False
  targets: Tuple[Tuple[str, int], ...] = ()

  @property
  def wanted(self) -> int:
    """How many images the class should yield."""
    if self.splits:
      return sum(n for _, n in self.splits)
    if self.samples_per_class is None:
      return self.files_seen
    return min(self.samples_per_class, self.files_seen)


def sample_splits(sample: ClassSample) -> Tuple[Tuple[str, int], ...]:
  """(split, images planned) of a class, in split order."""
  return sample.splits or ((DEFAULT_SPLIT, sample.wanted),)


def sample_targets(sample: ClassSample) -> Tuple[Tuple[str, int], ...]:
  """(split, images asked for) of a class: below one, the class is short."""
  if sample.targets:
    return sample.targets
  asked = sample.files_seen if sample.samples_per_class is None else sample.samples_per_class
  return ((DEFAULT_SPLIT, asked),)


class SeededPathSampleFn(beam.CombineFn):
  """Relative paths of one class, one per element -> their seeded
  bottom-`capacity` PartialSample (the same as `sample_paths` of them all).

  Paths are hashed in batches: the accumulator keeps a pending list and folds
  it into the sample once it holds 2 x capacity + 64 paths, so memory stays
  O(capacity) and each path costs one hash.
  """

  def __init__(self, seed: int, capacity: int):
    if capacity < 1:
      raise ValueError(f"capacity must be >= 1, got {capacity}")
    self._seed = seed
    self._capacity = capacity

  def create_accumulator(self) -> Tuple[PartialSample, List[str]]:
    return PartialSample(0, []), []

  def _fold(self, accumulator) -> Tuple[PartialSample, List[str]]:
    sample, pending = accumulator
    if pending:
      sample = merge_samples(
          [sample, sample_paths(pending, self._seed, self._capacity)], self._capacity)
    return sample, []

  def add_input(self, accumulator, relative_path: str):
    sample, pending = accumulator
    pending.append(relative_path)
    if len(pending) >= 2 * min(self._capacity, _PRUNE_LIMIT) + 64:
      return self._fold((sample, pending))
    return sample, pending

  def merge_accumulators(self, accumulators):
    folded = [self._fold((PartialSample(*a[0]), list(a[1]))) for a in accumulators]
    return merge_samples((s for s, _ in folded), self._capacity), []

  def extract_output(self, accumulator) -> PartialSample:
    sample, _ = self._fold((PartialSample(*accumulator[0]), list(accumulator[1])))
    return sample
