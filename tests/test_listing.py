"""transforms/listing.py on real trees, checked against Keras's own indexer."""

from __future__ import annotations

import itertools
import os
from typing import Dict, List, Set

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exemplar.transforms import listing
from exemplar.transforms.listing import ListingError
from tests.conftest import touch  # listing never decodes: any bytes will do


def listed(root: str, class_names=None) -> Dict[str, Set[str]]:
  """{class: relative paths} exactly as exemplar lists the tree."""
  classes = listing.resolve_classes(listing.list_class_folders(root), class_names)
  return {c: set(listing.walk_class_folder(root, c)) for c in classes}


def keras_indexed(root: str, class_names=None) -> Dict[str, Set[str]]:
  """{class: relative paths} as image_dataset_from_directory indexes the tree."""
  from keras.src.utils import dataset_utils, image_dataset_utils
  paths, labels, names = dataset_utils.index_directory(
      root, labels="inferred", formats=image_dataset_utils.ALLOWLIST_FORMATS,
      class_names=class_names, shuffle=False, follow_links=False, verbose=False)
  out = {name: set() for name in names}
  for path, label in zip(paths, labels):
    out[names[label]].add(os.path.relpath(path, root).replace(os.sep, "/"))
  return out


def without_hidden(index: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
  """Drops paths with a hidden component (exemplar skips them, Keras does not)."""
  return {c: {p for p in paths if not any(part.startswith(".") for part in p.split("/"))}
          for c, paths in index.items()}


VISIBLE = [
    "cat/a.jpg", "cat/b.JPG", "cat/c.jpeg", "cat/d.JPEG", "cat/e.png", "cat/f.Png",
    "cat/g.bmp", "cat/h.BMP", "cat/i.gif", "cat/j.GiF",
    "cat/sub/deeper/k.jpg", "cat/sub/l.png",
    "dog/with space.jpg", "dog/ünïcødé 猫.png", "dog/quote's \"x\".jpg",
    "dog/sub dir/m.jpeg",
    "ant/x.gif",
]
SKIPPED = [
    "cat/notes.txt", "cat/photo.jpg.bak", "cat/photo.tiff", "cat/photo.webp",
    "cat/jpg", "cat/noext", "dog/a.jpgx",
    "cat/.hidden.jpg", "cat/.sub/n.jpg", "cat/sub/.deep/o.png", "dog/.DS_Store",
    ".hiddenclass/p.jpg", "top_level_file.jpg",
]


@pytest.fixture
def mixed_tree(tmp_path) -> str:
  root = str(tmp_path / "tree")
  for rel in VISIBLE + SKIPPED:
    touch(root, rel)
  os.makedirs(os.path.join(root, "empty_class"))
  return root


def test_classes_are_sorted_visible_first_level_folders(mixed_tree):
  assert listing.list_class_folders(mixed_tree) == ["ant", "cat", "dog", "empty_class"]
  # A trailing separator on the root changes nothing.
  assert listing.list_class_folders(mixed_tree + "/") == ["ant", "cat", "dog", "empty_class"]


def test_sorting_is_plain_string_order(tmp_path):
  root = str(tmp_path / "tree")
  names = ["b", "B", "a10", "a2", "_x", "Z", "ä"]
  for name in names:
    touch(root, f"{name}/i.jpg")
  assert listing.list_class_folders(root) == sorted(names)
  assert listing.list_class_folders(root) == sorted(keras_indexed(root))


def test_files_follow_keras_extension_rules_nesting_and_hidden_rules(mixed_tree):
  got = listed(mixed_tree)
  expected = {"ant": set(), "cat": set(), "dog": set(), "empty_class": set()}
  for rel in VISIBLE:
    expected[rel.split("/", 1)[0]].add(rel)
  assert got == expected


def test_listing_equals_keras_index_on_the_same_tree(mixed_tree):
  keras = keras_indexed(mixed_tree)
  assert list(keras) == listing.list_class_folders(mixed_tree)
  # Keras indexes hidden files below a class folder; exemplar documents that it
  # skips them, so compare on the visible part and check the difference is
  # exactly the hidden entries.
  assert listed(mixed_tree) == without_hidden(keras)
  dropped = set().union(*keras.values()) - set().union(*listed(mixed_tree).values())
  assert dropped == {"cat/.hidden.jpg", "cat/.sub/n.jpg", "cat/sub/.deep/o.png"}


def test_is_image_name():
  for name in ["a.jpg", "A.JPEG", "b.Png", "c.bMp", "d.GIF", "with space.jpg"]:
    assert listing.is_image_name(name), name
  for name in [".a.jpg", "a.txt", "a.jpg.zip", "jpg", "a.tif", "a.webp", ""]:
    assert not listing.is_image_name(name), name


def test_symlinked_folder_below_a_class_is_not_followed(tmp_path):
  root = str(tmp_path / "tree")
  outside = str(tmp_path / "outside")
  touch(root, "cat/a.jpg")
  touch(outside, "b.jpg")
  os.symlink(outside, os.path.join(root, "cat", "link_to_outside"))
  assert listed(root) == {"cat": {"cat/a.jpg"}}
  assert listed(root) == keras_indexed(root)


def test_symlink_loop_does_not_hang(tmp_path):
  root = str(tmp_path / "tree")
  touch(root, "cat/a.jpg")
  touch(root, "cat/sub/b.png")
  os.symlink(os.path.join(root, "cat"), os.path.join(root, "cat", "sub", "loop"))
  os.symlink("..", os.path.join(root, "cat", "sub", "up"))
  # Bounded read: were the loop followed, this would yield ever longer paths.
  paths = list(itertools.islice(listing.walk_class_folder(root, "cat"), 100))
  assert sorted(paths) == ["cat/a.jpg", "cat/sub/b.png"]
  assert listed(root) == keras_indexed(root)


def test_folder_link_named_like_an_image_is_not_a_file(tmp_path):
  root = str(tmp_path / "tree")
  touch(root, "cat/a.jpg")
  os.symlink("..", os.path.join(root, "cat", "up.jpg"))
  assert listed(root) == keras_indexed(root) == {"cat": {"cat/a.jpg"}}


def test_dangling_file_link_is_listed_like_keras(tmp_path):
  """Keras indexes it (and fails reading it); exemplar lists it so the decode
  stage records it in errors.csv."""
  root = str(tmp_path / "tree")
  touch(root, "cat/a.jpg")
  os.symlink(str(tmp_path / "gone.jpg"), os.path.join(root, "cat", "dangling.jpg"))
  assert listed(root) == keras_indexed(root) == {"cat": {"cat/a.jpg", "cat/dangling.jpg"}}


def test_symlinked_file_is_listed_under_its_link_name(tmp_path):
  root = str(tmp_path / "tree")
  target = touch(str(tmp_path / "elsewhere"), "real.jpg")
  touch(root, "cat/a.jpg")
  os.symlink(target, os.path.join(root, "cat", "linked.jpg"))
  assert listed(root) == {"cat": {"cat/a.jpg", "cat/linked.jpg"}}
  assert listed(root) == keras_indexed(root)


def test_class_names_restricts_and_orders(mixed_tree):
  got = listed(mixed_tree, ["dog", "ant"])
  assert list(got) == ["dog", "ant"]
  assert got == without_hidden(keras_indexed(mixed_tree, ["dog", "ant"]))
  assert list(keras_indexed(mixed_tree, ["dog", "ant"])) == ["dog", "ant"]


def test_unknown_class_name_raises_listing_error(mixed_tree):
  found = listing.list_class_folders(mixed_tree)
  with pytest.raises(ListingError, match="nope"):
    listing.resolve_classes(found, ["cat", "nope"])
  # A hidden folder is not a class, even when named.
  with pytest.raises(ListingError, match="hiddenclass"):
    listing.resolve_classes(found, [".hiddenclass"])
  with pytest.raises(ListingError):
    listing.resolve_classes(found, ["cat", "cat"])


def test_missing_root_raises_listing_error(tmp_path):
  with pytest.raises(ListingError, match="does not exist"):
    listing.list_class_folders(str(tmp_path / "nowhere"))
  a_file = touch(str(tmp_path), "file.jpg")
  with pytest.raises(ListingError):
    listing.list_class_folders(a_file)


def test_root_without_class_folders_raises_listing_error(tmp_path):
  root = str(tmp_path / "flat")
  touch(root, "a.jpg")
  touch(root, ".hidden/b.jpg")
  with pytest.raises(ListingError, match="no class folders"):
    listing.list_class_folders(root)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ListingError, match="no class folders"):
    listing.list_class_folders(str(empty))


def test_make_plan_applies_class_names_and_reports_listing_errors(mixed_tree, tmp_path):
  from exemplar.main import make_plan
  from exemplar.options import parse_args
  config, _ = parse_args(["--input_dir", mixed_tree + "/", "--output_dir",
                          str(tmp_path / "out"), "--class_names", "dog,cat"])
  plan = make_plan(config)
  assert plan.class_names == ("dog", "cat")
  assert plan.input_dir == mixed_tree
  config, _ = parse_args(["--input_dir", mixed_tree, "--class_names", "cat,zebra"])
  with pytest.raises(ListingError, match="zebra"):
    make_plan(config)


def test_large_flat_class_is_listed_completely(tmp_path):
  root = str(tmp_path / "tree")
  expected: List[str] = []
  for i in range(1500):
    expected.append(touch(root, f"many/{i:05d}.jpg")[len(root) + 1:])
  assert sorted(listing.walk_class_folder(root, "many")) == sorted(expected)


# --- key ranges of a large gs:// class (the skip scan, on names in memory) ---

def _first_name_from(names):
  """first_name_from over a sorted list of names, as a GCS listing answers."""
  import bisect

  def first(start, include_start):
    i = (bisect.bisect_left if include_start else bisect.bisect_right)(names, start)
    return names[i] if i < len(names) else None
  return first


def _in_range(name, key_range):
  after_start = name >= key_range.start if key_range.include_start else name > key_range.start
  return after_start and (not key_range.end or name < key_range.end)


@settings(max_examples=150, deadline=None)
@given(suffixes=st.lists(st.text(alphabet="ab0é_.\U0001F600", min_size=0, max_size=6),
                         min_size=1, max_size=60, unique=True),
       after_index=st.integers(0, 59), parts=st.integers(1, 8),
       max_probes=st.integers(1, 60))
def test_key_ranges_cover_every_name_after_the_cut_exactly_once(
    suffixes, after_index, parts, max_probes):
  prefix = "root/cls/"
  names = sorted(prefix + s for s in suffixes)
  after = names[min(after_index, len(names) - 1)]
  ranges, probes = listing.split_key_space(
      _first_name_from(names), "cls", prefix, after, parts, max_probes)
  assert probes <= max_probes + 1
  for name in names:
    hits = sum(_in_range(name, r) for r in ranges)
    assert hits == (1 if name > after else 0), (name, ranges)
  assert all(not r.end or r.start < r.end for r in ranges)  # no empty range


def test_key_ranges_of_numbered_names_are_even():
  prefix = "images/cat/"
  names = sorted(f"{prefix}img_{i:07d}.jpg" for i in range(0, 200_000, 7))
  after = names[999]  # the first 1,000 names were listed before the cut
  ranges, probes = listing.split_key_space(
      _first_name_from(names), "cat", prefix, after, parts=16, max_probes=120)
  sizes = [sum(_in_range(n, r) for n in names) for r in ranges]
  assert sum(sizes) == len(names) - 1000
  assert len(ranges) >= 16 and max(sizes) <= 2 * (sum(sizes) / len(ranges))
  assert probes <= 121
