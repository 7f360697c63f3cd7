"""changes.csv and the per-class change summary: what changed between an
old and a new manifest (pure; no pipeline runs)."""

from __future__ import annotations

import csv
import io
from typing import Dict, List

from exemplar.transforms.changes import (
    CHANGE_COLUMNS, change_lines, changes_csv, compare_manifests, read_manifest_rows)

MANIFEST = ["class_name", "label", "rank", "relative_path", "source_path", "sha256",
            "source_height", "source_width", "shard", "split"]
TRAIN = "exemplar-train.tfrecord-00000-of-00002"
TRAIN_1 = "exemplar-train.tfrecord-00001-of-00002"
TEST = "exemplar-test.tfrecord-00000-of-00001"


def row(class_name: str, name: str, rank: int = 0, sha: str = "aa", shard: str = TRAIN,
        split: str = "train", label: int = 0) -> Dict[str, str]:
  path = f"{class_name}/{name}"
  return {"class_name": class_name, "label": str(label), "rank": str(rank),
          "relative_path": path, "source_path": "/data/" + path, "sha256": sha,
          "source_height": "10", "source_width": "20", "shard": shard, "split": split}


def manifest_text(rows: List[Dict[str, str]], columns=MANIFEST) -> str:
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(columns)
  writer.writerows([[r[c] for c in columns] for r in rows])
  return buffer.getvalue()


def by_path(rows: List[List[str]]) -> Dict[str, Dict[str, str]]:
  return {r[2]: dict(zip(CHANGE_COLUMNS, r)) for r in rows}


def test_every_kind_of_change():
  old = [row("cat", "a.jpg", 0), row("cat", "b.jpg", 1), row("cat", "c.jpg", 2),
         row("cat", "d.jpg", 3), row("cat", "e.jpg", 4), row("cat", "f.jpg", 5)]
  new = [row("cat", "a.jpg", 0),                                   # unchanged
         row("cat", "b.jpg", 0, split="test", shard=TEST),         # moved_split
         row("cat", "c.jpg", 2, shard=TRAIN_1),                    # moved_shard
         row("cat", "d.jpg", 3, sha="bb"),                         # rewritten
         row("cat", "e.jpg", 9),                                   # rank only
         row("cat", "g.jpg", 6, sha="cc")]                         # added; f removed
  rows, summary = compare_manifests(old, new)
  assert [r[0] for r in rows] == ["added", "moved_shard", "moved_split", "removed",
                                  "rewritten"]
  changes = by_path(rows)
  assert changes["cat/g.jpg"] == {
      "change": "added", "class_name": "cat", "relative_path": "cat/g.jpg",
      "source_path": "/data/cat/g.jpg", "old_split": "", "new_split": "train",
      "old_shard": "", "new_shard": TRAIN, "old_rank": "", "new_rank": "6", "sha256": "cc"}
  assert changes["cat/f.jpg"] == {
      "change": "removed", "class_name": "cat", "relative_path": "cat/f.jpg",
      "source_path": "/data/cat/f.jpg", "old_split": "train", "new_split": "",
      "old_shard": TRAIN, "new_shard": "", "old_rank": "5", "new_rank": "", "sha256": "aa"}
  moved = changes["cat/b.jpg"]
  assert (moved["old_split"], moved["new_split"], moved["old_shard"], moved["new_shard"],
          moved["old_rank"], moved["new_rank"]) == ("train", "test", TRAIN, TEST, "1", "0")
  assert (changes["cat/c.jpg"]["old_shard"], changes["cat/c.jpg"]["new_shard"]) == (
      TRAIN, TRAIN_1)
  assert changes["cat/d.jpg"]["sha256"] == "bb"
  assert "cat/e.jpg" not in changes and "cat/a.jpg" not in changes
  assert summary == {
      "compared_to": None, "added": 1, "removed": 1, "moved_split": 1, "moved_shard": 1,
      "rewritten": 1, "rank_changed": 2, "unchanged": 2,
      "per_class": {"cat": {"added": 1, "removed": 1, "moved_split": 1,
                            "moved_shard": 1, "rewritten": 1}}}


def test_a_moved_and_rewritten_image_is_one_moved_row_and_counts_as_rewritten():
  old = [row("cat", "a.jpg"), row("cat", "b.jpg", 1)]
  new = [row("cat", "a.jpg", split="test", shard=TEST, sha="bb"),
         row("cat", "b.jpg", 1, shard=TRAIN_1, sha="cc")]
  rows, summary = compare_manifests(old, new)
  assert [(r[0], r[2]) for r in rows] == [("moved_shard", "cat/b.jpg"),
                                          ("moved_split", "cat/a.jpg")]
  assert (summary["moved_split"], summary["moved_shard"], summary["rewritten"],
          summary["unchanged"]) == (1, 1, 2, 0)
  assert summary["per_class"]["cat"]["rewritten"] == 2
  assert change_lines(summary) == [
      "changes since the last dataset: 0 added, 0 removed, 1 moved to another shard, "
      "1 to another split, 2 rewritten (source bytes changed)",
      "  cat: +0 -0 (1 moved split, 1 moved shard, 2 rewritten)"]


def test_an_old_manifest_without_a_split_column_is_train():
  old_rows = [row("cat", "a.jpg"), row("cat", "b.jpg", 1)]
  old_text = manifest_text(old_rows, MANIFEST[:-1])
  old = read_manifest_rows(old_text)
  assert [r["split"] for r in old] == ["train", "train"]
  new = read_manifest_rows(manifest_text(
      [row("cat", "a.jpg"), row("cat", "b.jpg", 0, split="test", shard=TEST)]))
  rows, summary = compare_manifests(old, new)
  assert [(r[0], r[2], r[4], r[5]) for r in rows] == [
      ("moved_split", "cat/b.jpg", "train", "test")]
  assert summary["unchanged"] == 1
  # rows straight from csv.DictReader (no split key at all) work the same
  raw = list(csv.DictReader(io.StringIO(old_text)))
  assert compare_manifests(raw, new)[0] == rows


def test_read_manifest_rows_keeps_every_value_a_string():
  text = "\ufeff" + manifest_text([row("cat", "a.jpg", split="")])
  (parsed,) = read_manifest_rows(text)
  assert parsed["class_name"] == "cat" and parsed["split"] == "train"
  assert all(isinstance(v, str) for v in parsed.values())
  assert read_manifest_rows("") == []
  assert read_manifest_rows(",".join(MANIFEST) + "\n") == []


def test_the_order_is_deterministic_whatever_the_input_order():
  old = [row(c, f"{n}.jpg", n) for c in ("zebra", "ant", "cat") for n in range(4)]
  new = [row(c, f"{n}.jpg", n, sha="bb" if n == 1 else "aa") for c in ("cat", "ant", "dog")
         for n in range(2, 6)]
  rows, summary = compare_manifests(old, new)
  again, summary_again = compare_manifests(list(reversed(old)), list(reversed(new)))
  assert rows == again and summary == summary_again
  assert rows == sorted(rows, key=lambda r: (r[1], r[0], r[2]))
  assert [r[1] for r in rows][:1] == ["ant"] and rows[-1][1] == "zebra"
  assert list(summary["per_class"]) == ["ant", "cat", "dog", "zebra"]
  assert changes_csv(rows) == changes_csv(again)


def test_everything_is_added_against_an_empty_old_dataset():
  new = [row("cat", "a.jpg"), row("dog", "b.jpg", label=1)]
  rows, summary = compare_manifests([], new)
  assert [(r[0], r[1]) for r in rows] == [("added", "cat"), ("added", "dog")]
  assert (summary["added"], summary["removed"], summary["unchanged"]) == (2, 0, 0)
  assert change_lines(summary) == [
      "changes since the last dataset: 2 added, 0 removed, 0 moved to another shard, "
      "0 to another split",
      "  cat: +1 -0", "  dog: +1 -0"]


def test_identical_manifests_change_nothing():
  rows_in = [row("cat", "a.jpg"), row("dog", "b.jpg", label=1)]
  rows, summary = compare_manifests(rows_in, [dict(r) for r in rows_in])
  assert rows == []
  assert summary["per_class"] == {} and summary["unchanged"] == 2
  assert all(summary[k] == 0 for k in ("added", "removed", "moved_split", "moved_shard",
                                       "rewritten", "rank_changed"))
  assert change_lines(summary) == ["no changes since the last dataset"]
  assert change_lines(summary, since="/old/out") == ["no changes since /old/out"]
  assert changes_csv(rows) == ",".join(CHANGE_COLUMNS) + "\n"
  assert compare_manifests([], []) == ([], {
      "compared_to": None, "added": 0, "removed": 0, "moved_split": 0, "moved_shard": 0,
      "rewritten": 0, "rank_changed": 0, "unchanged": 0, "per_class": {}})


def test_a_class_removed_entirely_and_a_new_class():
  old = [row("cat", "a.jpg"), row("cat", "b.jpg", 1), row("dog", "c.jpg", label=1)]
  new = [row("dog", "c.jpg"), row("emu", "d.jpg", label=1)]
  rows, summary = compare_manifests(old, new)
  assert [(r[0], r[2]) for r in rows] == [
      ("removed", "cat/a.jpg"), ("removed", "cat/b.jpg"), ("added", "emu/d.jpg")]
  assert summary["per_class"] == {
      "cat": {"added": 0, "removed": 2, "moved_split": 0, "moved_shard": 0, "rewritten": 0},
      "emu": {"added": 1, "removed": 0, "moved_split": 0, "moved_shard": 0, "rewritten": 0}}
  assert change_lines(summary)[1:] == ["  cat: +0 -2", "  emu: +1 -0"]


def test_change_lines_shows_at_most_limit_classes():
  new = [row(f"c{n:02d}", "a.jpg") for n in range(13)]
  _, summary = compare_manifests([], new)
  lines = change_lines(summary)
  assert len(lines) == 1 + 10 + 1
  assert lines[-1] == "  ... and 3 more classes (see changes.csv)"
  assert change_lines(summary, limit=0)[1:] == ["  ... and 13 more classes (see changes.csv)"]


def test_odd_names_round_trip_through_changes_csv():
  names = ['a,b', 'say "hi"', "café ☕", " lead", "x;y'z", "日本"]
  old = [row(name, f'{name} "1",.jpg') for name in names]
  new = [row(name, f'{name} "1",.jpg', shard=TRAIN_1) for name in names[:3]]
  new += [row(name, "new, \"2\".png", sha="bb") for name in names]
  rows, _ = compare_manifests(old, new)
  text = changes_csv(rows)
  parsed = list(csv.reader(io.StringIO(text, newline="")))
  assert parsed[0] == CHANGE_COLUMNS
  assert parsed[1:] == rows
  assert {r[1] for r in rows} == set(names)
  # and the manifests themselves read back intact
  assert read_manifest_rows(manifest_text(old)) == old
