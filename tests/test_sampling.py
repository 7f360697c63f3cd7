"""transforms/sampling.py: uniform, seeded, and independent of order and splits."""

from __future__ import annotations

import collections
import itertools
import random
from typing import List

import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from exemplar.transforms.sampling import (PartialSample, SeededSampleFn, capacity_for,
                                 hash_key, merge_samples, priority, sample_paths)

NUM_CLASSES = 2000
FILES_PER_CLASS = 10
P_THRESHOLD = 1e-3


def class_files(c: int, n: int = FILES_PER_CLASS) -> List[str]:
  return [f"class_{c:05d}/sub/img_{i:03d}.jpg" for i in range(n)]


def picked_indices(seed: int, k: int, num_classes: int = NUM_CLASSES):
  """For each class, the indices (in listing order) of the k files picked."""
  out = []
  for c in range(num_classes):
    files = class_files(c)
    sample = sample_paths(files, seed, k)
    out.append(tuple(sorted(files.index(path) for _, path in sample.candidates)))
  return out


def test_k1_picks_are_uniform_over_positions():
  counts = collections.Counter(i for (i,) in picked_indices(seed=0, k=1))
  observed = [counts[i] for i in range(FILES_PER_CLASS)]
  assert sum(observed) == NUM_CLASSES
  assert stats.chisquare(observed).pvalue > P_THRESHOLD, observed


@pytest.mark.parametrize("seed", [1, -7, 2**100])
def test_k1_uniform_for_other_seeds(seed):
  counts = collections.Counter(i for (i,) in picked_indices(seed=seed, k=1))
  observed = [counts[i] for i in range(FILES_PER_CLASS)]
  assert stats.chisquare(observed).pvalue > P_THRESHOLD, observed


def test_k3_is_without_replacement_and_uniform():
  picks = picked_indices(seed=3, k=3, num_classes=6000)
  assert all(len(set(p)) == 3 for p in picks)
  # Each position is picked with probability 3/10 ...
  counts = collections.Counter(i for p in picks for i in p)
  observed = [counts[i] for i in range(FILES_PER_CLASS)]
  assert stats.chisquare(observed).pvalue > P_THRESHOLD, observed
  # ... and every one of the C(10, 3) = 120 subsets is equally likely.
  subsets = list(itertools.combinations(range(FILES_PER_CLASS), 3))
  by_subset = collections.Counter(picks)
  assert set(by_subset) <= set(subsets)
  assert stats.chisquare([by_subset[s] for s in subsets]).pvalue > P_THRESHOLD


def test_candidates_are_the_lowest_priorities_in_order():
  files = class_files(0, 50)
  key = hash_key(11)
  expected = sorted((priority(key, f), f) for f in files)[:7]
  sample = sample_paths(files, 11, 7)
  assert sample == PartialSample(50, expected)
  assert [p for p, _ in sample.candidates] == sorted(p for p, _ in sample.candidates)


def test_different_seeds_give_different_picks():
  a = picked_indices(seed=0, k=1)
  b = picked_indices(seed=1, k=1)
  # Independent draws agree on ~1/10 of the classes.
  same = sum(x == y for x, y in zip(a, b))
  assert 0.06 * NUM_CLASSES < same < 0.14 * NUM_CLASSES, same
  assert sample_paths(class_files(0, 1000), 0, 5) != sample_paths(class_files(0, 1000), 1, 5)


def test_seed_is_a_key_not_a_salt():
  # Seeds that print alike must not collide.
  seeds = [0, 1, -1, 10, 100, 2**64, -(2**64), 2**127 - 1, -(2**127)]
  keys = [hash_key(s) for s in seeds]
  assert len(set(keys)) == len(seeds)
  files = class_files(5, 200)
  picks = {tuple(sample_paths(files, s, 3).candidates) for s in seeds}
  assert len(picks) == len(seeds)


def test_k_larger_than_the_class_returns_every_file():
  files = class_files(0, 5)
  sample = sample_paths(files, 0, 8)
  assert sample.seen == 5
  assert sorted(path for _, path in sample.candidates) == sorted(files)
  assert sample_paths([], 0, 3) == PartialSample(0, [])


def test_capacity_for_adds_spares():
  assert capacity_for(3, 4) == 7
  assert capacity_for(1, 0) == 1


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 40), capacity=st.integers(1, 12), seed=st.integers(-2**64, 2**64),
       shuffle_seed=st.integers(0, 2**32))
def test_sample_does_not_depend_on_input_order(n, capacity, seed, shuffle_seed):
  files = class_files(1, n)
  shuffled = list(files)
  random.Random(shuffle_seed).shuffle(shuffled)
  assert sample_paths(shuffled, seed, capacity) == sample_paths(files, seed, capacity)
  assert sample_paths(iter(shuffled), seed, capacity) == sample_paths(files, seed, capacity)


def random_partition(items, rng: random.Random, parts: int):
  """Splits items (in random order) into `parts` possibly-empty lists."""
  items = list(items)
  rng.shuffle(items)
  cuts = sorted(rng.randint(0, len(items)) for _ in range(parts - 1))
  bounds = [0] + cuts + [len(items)]
  return [items[a:b] for a, b in zip(bounds, bounds[1:])]


@settings(max_examples=80, deadline=None)
@given(n=st.integers(0, 60), capacity=st.integers(1, 10), seed=st.integers(-1000, 1000),
       parts=st.integers(1, 8), split_seed=st.integers(0, 2**32))
def test_merged_partial_samples_equal_the_whole_sample(n, capacity, seed, parts, split_seed):
  files = class_files(2, n)
  whole = sample_paths(files, seed, capacity)
  rng = random.Random(split_seed)
  partials = [sample_paths(part, seed, capacity)
              for part in random_partition(files, rng, parts)]
  rng.shuffle(partials)
  assert merge_samples(partials, capacity) == whole
  # Merging is associative: merge a random prefix first, then the rest.
  cut = rng.randint(0, len(partials))
  nested = merge_samples(
      [merge_samples(partials[:cut], capacity)] + partials[cut:], capacity)
  assert nested == whole


@settings(max_examples=80, deadline=None)
@given(n=st.integers(0, 60), capacity=st.integers(1, 10), seed=st.integers(-1000, 1000),
       parts=st.integers(1, 10), accumulators=st.integers(1, 4),
       split_seed=st.integers(0, 2**32))
def test_seeded_sample_fn_equals_the_whole_sample(n, capacity, seed, parts, accumulators,
                                                  split_seed):
  """Drives the CombineFn as a runner would: partial samples added to several
  accumulators (as on different workers), merged in any order."""
  files = class_files(3, n)
  whole = sample_paths(files, seed, capacity)
  rng = random.Random(split_seed)
  fn = SeededSampleFn(capacity)
  accs = [fn.create_accumulator() for _ in range(accumulators)]
  for part in random_partition(files, rng, parts):
    i = rng.randrange(accumulators)
    # Beam may hand the element over as a plain tuple after a coder round trip.
    element = tuple(sample_paths(part, seed, capacity))
    accs[i] = fn.add_input(accs[i], element)
  rng.shuffle(accs)
  merged = fn.merge_accumulators(accs)
  # Merging an already-merged accumulator with fresh ones changes nothing.
  merged = fn.merge_accumulators([fn.create_accumulator(), merged, fn.create_accumulator()])
  out = fn.extract_output(merged)
  assert isinstance(out, PartialSample)
  assert out == whole


def test_seeded_sample_fn_rejects_zero_capacity():
  with pytest.raises(ValueError):
    SeededSampleFn(0)


def test_non_ascii_paths_are_sampled_deterministically():
  files = ["ünï/猫 1.jpg", "ünï/猫 2.jpg", "ünï/quote's.png", "ünï/a b.gif"]
  first = sample_paths(files, 5, 2)
  assert first == sample_paths(list(reversed(files)), 5, 2)
  assert first.seen == 4 and len(first.candidates) == 2
