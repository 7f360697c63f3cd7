"""Stage 3: a seeded, deterministic per-class reservoir sample, in Beam.

The sampler itself is pure and Beam-free (transforms/bottom_k.py); this module
holds its CombineFns and the sample's public form (`Pick`, `ClassSample`).

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

from typing import Iterable, List, NamedTuple, Optional, Tuple

import apache_beam as beam

# The sampler itself is Beam-free (transforms/bottom_k.py); these names are
# part of this module's interface too.
from exemplar.transforms.bottom_k import (  # noqa: F401
    PRUNE_LIMIT, Candidate, PartialSample, capacity_for, hash_key, merge_samples,
    priority, sample_paths)
from exemplar.transforms.splits import DEFAULT_SPLIT

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
    if len(pending) >= 2 * min(self._capacity, PRUNE_LIMIT) + 64:
      return self._fold((sample, pending))
    return sample, pending

  def merge_accumulators(self, accumulators):
    folded = [self._fold((PartialSample(*a[0]), list(a[1]))) for a in accumulators]
    return merge_samples((s for s, _ in folded), self._capacity), []

  def extract_output(self, accumulator) -> PartialSample:
    sample, _ = self._fold((PartialSample(*accumulator[0]), list(accumulator[1])))
    return sample
