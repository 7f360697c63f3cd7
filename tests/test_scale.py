"""Listing and sampling at scale: the fast paths give the same answer, in
bounded memory.

transforms/local_scan.py hands a folder's paths on in chunks of LOCAL_CHUNK, and
transforms/sampling.py prunes its pool of candidates by sorting once it holds
2 x capacity + 64 of them and compares digests as bytes. These tests cross
those boundaries on purpose and check the results against the plain
definitions (every file once; the `capacity` lowest keyed-hash priorities).
"""

from __future__ import annotations

import os
import sys
import tracemalloc

import pytest

from exemplar.transforms import listing, sampling

pytestmark = pytest.mark.slow  # large trees: seconds each


def touch(root: str, relative: str) -> None:
  path = os.path.join(root, relative)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  open(path, "wb").close()


def reference_sample(paths, seed: int, capacity: int) -> sampling.PartialSample:
  """The definition: the `capacity` lowest (priority, path) pairs."""
  key = sampling.hash_key(seed)
  paths = list(paths)
  return sampling.PartialSample(
      len(paths), sorted((sampling.priority(key, p), p) for p in paths)[:capacity])


def test_folders_larger_than_a_chunk_list_every_file_once(tmp_path):
  root = str(tmp_path / "tree")
  flat = listing.LOCAL_CHUNK + 7  # one full chunk, then a short one
  expected = {f"cat/{i:05d}.jpg" for i in range(flat)}
  expected |= {f"cat/sub/{i:05d}.png" for i in range(listing.LOCAL_CHUNK)}  # exactly one
  expected |= {"cat/sub/deeper/x.GIF"}
  for relative in expected:
    touch(root, relative)
  touch(root, "cat/notes.txt")
  touch(root, "cat/.hidden.jpg")
  listed = list(listing.walk_class_folder(root, "cat"))
  assert len(listed) == len(expected)
  assert set(listed) == expected


@pytest.mark.parametrize("capacity", [1, 5, 37, 200, sys.maxsize])
def test_sample_equals_the_definition_across_pruning(capacity):
  # 3,000 paths: the pool is pruned many times for small capacities, never
  # for sys.maxsize ('all').
  paths = [f"class/{i % 7}/img_{i:05d}.jpg" for i in range(3000)]
  for seed in (0, 1, -5, 2**100):
    assert sampling.sample_paths(iter(paths), seed, capacity) == reference_sample(
        paths, seed, capacity)


def test_sample_of_nothing_and_of_fewer_files_than_capacity():
  assert sampling.sample_paths(iter([]), 3, 5) == sampling.PartialSample(0, [])
  three = ["c/a.jpg", "c/b.jpg", "c/c.jpg"]
  assert sampling.sample_paths(three, 3, 5) == reference_sample(three, 3, 5)


def test_listing_and_sampling_a_big_class_keeps_memory_flat(tmp_path):
  """A class of 20,000 files is sampled with Python allocations far below the
  ~1.5 MB its list of paths alone would take: paths stream through in chunks
  and only the candidates are kept."""
  root = str(tmp_path / "tree")
  folder = os.path.join(root, "big")
  os.makedirs(folder)
  for i in range(20000):
    open(os.path.join(folder, f"n{i:06d}.JPEG"), "wb").close()
  tracemalloc.start()
  try:
    sample = sampling.sample_paths(listing.walk_class_folder(root, "big"), 0, 5)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert sample.seen == 20000
  assert len(sample.candidates) == 5
  all_paths = sorted(listing.walk_class_folder(root, "big"))
  assert sample == reference_sample(all_paths, 0, 5)
  assert peak < 1_000_000, f"peak Python allocation {peak} bytes"
