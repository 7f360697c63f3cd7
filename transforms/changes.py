"""What changed between two datasets, from their manifests.

When a run replaces a finished dataset (or is given --compare_to DIR), the old
and the new manifest.csv are compared image by image and written as
changes.csv, one row per changed image:
  change         added | removed | moved_split | moved_shard | rewritten
  class_name, relative_path
                 the image's key: an image is the same image in both datasets
                 when its class and relative path are the same
  source_path    the new dataset's (the old one's for a removed image)
  old_split, new_split, old_shard, new_shard, old_rank, new_rank
                 '' on the side where the image is absent
  sha256         the new dataset's (the old one's for a removed image)
An image in both datasets gets one row, of the first kind that applies:
moved_split (its split differs; its shard then differs too), moved_shard (same
split, another shard file), rewritten (same place, but the source file's bytes
changed: another sha256). A rank change alone is no row.

The summary counts every image once in added, removed, moved_split,
moved_shard or unchanged (an image in both with no row, whatever its rank);
`rewritten` and `rank_changed` count every image in both datasets whose sha256
or rank differs, whatever its row (so a moved and rewritten image counts in
moved_* and in rewritten). Manifests older than stored splits have no split
column: their images are in 'train'. Everything here is pure.
"""

from __future__ import annotations

import csv
import io
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from exemplar.transforms.names import SPLIT

CHANGE_COLUMNS = ["change", "class_name", "relative_path", "source_path", "old_split",
                  "new_split", "old_shard", "new_shard", "old_rank", "new_rank", "sha256"]
# The kinds of change, in the order people read them.
KINDS = ("added", "removed", "moved_split", "moved_shard", "rewritten")

Key = Tuple[str, str, int]  # (class_name, relative_path, occurrence)


def read_manifest_rows(text: str) -> List[Dict[str, str]]:
  """manifest.csv's text -> [{column: value}] in record order, every value a
  str; an absent or empty split is 'train' (manifests before stored splits)."""
  if text.startswith("\ufeff"):
    text = text[1:]
  rows = []
  for row in csv.DictReader(io.StringIO(text, newline="")):
    row = {column: value or "" for column, value in row.items() if column is not None}
    row["split"] = row.get("split") or SPLIT
    rows.append(row)
  return rows


def _keyed(rows: Sequence[Mapping[str, str]]) -> Dict[Key, Mapping[str, str]]:
  """{(class, relative path, n): row}; n tells apart the n-th repeat of a key
  (a well-formed manifest has none), so no row is lost."""
  keyed: Dict[Key, Mapping[str, str]] = {}
  seen: Dict[Tuple[str, str], int] = {}
  for row in rows:
    image = (row.get("class_name") or "", row.get("relative_path") or "")
    n = seen.get(image, 0)
    seen[image] = n + 1
    keyed[image + (n,)] = row
  return keyed


def _split(row: Mapping[str, str]) -> str:
  return row.get("split") or SPLIT


def _change_of(old: Mapping[str, str], new: Mapping[str, str]) -> Optional[str]:
  """The row kind of an image in both datasets, or None (unchanged)."""
  if _split(old) != _split(new):
    return "moved_split"
  if (old.get("shard") or "") != (new.get("shard") or ""):
    return "moved_shard"
  if _rewritten(old, new):
    return "rewritten"
  return None


def _rewritten(old: Mapping[str, str], new: Mapping[str, str]) -> bool:
  """Whether the source's bytes changed (unknown, so no, when a side has no
  sha256)."""
  old_sha, new_sha = old.get("sha256") or "", new.get("sha256") or ""
  return bool(old_sha and new_sha and old_sha != new_sha)


def compare_manifests(old_rows: Sequence[Mapping[str, str]],
                      new_rows: Sequence[Mapping[str, str]]
                      ) -> Tuple[List[List[str]], Dict]:
  """Two manifests' rows ({column: str}, as csv.DictReader or
  read_manifest_rows gives them) -> (changes.csv rows in CHANGE_COLUMNS order,
  sorted by (class_name, change, relative_path), the summary). The summary's
  compared_to is None: the caller fills it in."""
  old, new = _keyed(old_rows), _keyed(new_rows)
  counts = {kind: 0 for kind in KINDS + ("rank_changed", "unchanged")}
  per_class: Dict[str, Dict[str, int]] = {}
  rows: List[List[str]] = []

  def count(kind: str, class_name: str) -> None:
    counts[kind] += 1
    per_class.setdefault(class_name, {k: 0 for k in KINDS})[kind] += 1

  for key in sorted(set(old) | set(new)):
    before, after = old.get(key), new.get(key)
    class_name, relative_path, _ = key
    if before is None:
      change = "added"
    elif after is None:
      change = "removed"
    else:
      change = _change_of(before, after)
      if _rewritten(before, after):
        count("rewritten", class_name)
      if (before.get("rank") or "") != (after.get("rank") or ""):
        counts["rank_changed"] += 1
    if change is None:
      counts["unchanged"] += 1
      continue
    if change != "rewritten":  # counted above, with every rewrite
      count(change, class_name)
    latest = after if after is not None else before
    side = lambda row, column: "" if row is None else (row.get(column) or "")  # noqa: E731
    rows.append([change, class_name, relative_path, side(latest, "source_path"),
                 _split(before) if before is not None else "",
                 _split(after) if after is not None else "",
                 side(before, "shard"), side(after, "shard"),
                 side(before, "rank"), side(after, "rank"), side(latest, "sha256")])
  rows.sort(key=lambda row: (row[1], row[0], row[2]))
  summary: Dict = {"compared_to": None}
  summary.update(counts)
  summary["per_class"] = {name: per_class[name] for name in sorted(per_class)}
  return rows, summary


def changes_csv(rows: Sequence[Sequence[str]]) -> str:
  """compare_manifests' rows -> the text of changes.csv, with its header."""
  from exemplar.transforms.fileio import csv_text
  return csv_text(CHANGE_COLUMNS, rows)


def _moves(counts: Mapping[str, int]) -> str:
  """' (2 moved shard, 1 rewritten)' for the nonzero moves, or ''."""
  parts = [f"{counts.get(kind, 0)} {label}" for kind, label in (
      ("moved_split", "moved split"), ("moved_shard", "moved shard"),
      ("rewritten", "rewritten")) if counts.get(kind, 0)]
  return f" ({', '.join(parts)})" if parts else ""


def change_lines(summary: Mapping, limit: int = 10, *,
                 since: str = "the last dataset") -> List[str]:
  """compare_manifests' summary -> short lines for the end of a run's output:
  the totals, then one line per changed class (the first `limit`)."""
  if not any(summary.get(kind, 0) for kind in KINDS):
    return [f"no changes since {since}"]
  line = (f"changes since {since}: {summary.get('added', 0)} added, "
          f"{summary.get('removed', 0)} removed, "
          f"{summary.get('moved_shard', 0)} moved to another shard, "
          f"{summary.get('moved_split', 0)} to another split")
  if summary.get("rewritten", 0):
    line += f", {summary['rewritten']} rewritten (source bytes changed)"
  lines = [line]
  per_class = summary.get("per_class", {})
  for name in list(per_class)[:max(limit, 0)]:
    counts = per_class[name]
    lines.append(f"  {name}: +{counts.get('added', 0)} -{counts.get('removed', 0)}"
                 + _moves(counts))
  hidden = len(per_class) - max(limit, 0)
  if hidden > 0:
    lines.append(f"  ... and {hidden} more classes (see changes.csv)")
  return lines
