"""`exemplar-inspect --verify`: check every record of a finished dataset.

`scan` reads every record of every shard (pipeline/records.py: both CRCs of
each); `Verifier.check` parses each tf.train.Example, decodes its image and
checks its size, channels and format against summary.json, its label against
class_names.txt and its row in manifest.csv (shard, label, SHA-256, stored
once); `Verifier.finish` compares the counts with manifest.csv (per shard and
per class), summary.json and the files record. Problems are collected as one
line each, in `Verifier.problems`.
"""

from __future__ import annotations

import io
from typing import Callable, Dict, List, Optional

from apache_beam.io.filesystems import FileSystems

from exemplar.dataset_files import Dataset, DatasetError, first_line, path
from exemplar.records import CorruptRecord, StoredImage, read_example, read_records
from exemplar.transforms import fileio
from exemplar.transforms.decoding import COLOR_MODES
from exemplar.transforms.names import CLASS_NAMES_FILE, FILES_RECORD, MANIFEST_FILE, SUMMARY_JSON

PIL_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG"}


class Verifier:
  """Collects problems while the records stream past; see `finish`."""

  def __init__(self, dataset: Dataset, manifest: List[Dict[str, str]]):
    config = dataset.config
    self._dataset = dataset
    height, width = config.get("image_size") or (None, None)
    self._size = (width, height)
    self._channels = COLOR_MODES.get(config.get("color_mode"))
    self._format = PIL_FORMATS.get(config.get("image_format"))
    self._manifest = {row["relative_path"]: row for row in manifest}
    self._manifest_rows = manifest
    self._seen: Dict[str, str] = {}  # relative path -> shard read from
    self._records: Dict[str, int] = {}  # shard name -> records read
    self._broken_shards: set = set()
    self.problems: List[str] = []
    self.images = 0

  def problem(self, text: str) -> None:
    self.problems.append(text)

  def shard_broken(self, shard: str, error: Exception) -> None:
    self._broken_shards.add(shard)
    self.problem(f"{shard}: {error}")

  def check(self, shard: str, index: int, data: bytes) -> Optional[StoredImage]:
    self._records[shard] = self._records.get(shard, 0) + 1
    where = f"{shard}: record {index}"
    try:
      image = read_example(data)
    except (ValueError, UnicodeDecodeError) as e:
      self.problem(f"{where}: not a valid exemplar tf.train.Example ({e})")
      return None
    names = self._dataset.class_names
    if not 0 <= image.label < len(names):
      self.problem(f"{where}: label {image.label} outside 0..{len(names) - 1}")
    elif names[image.label] != image.class_name:
      self.problem(f"{where}: label {image.label} is {names[image.label]!r} in "
                   f"{CLASS_NAMES_FILE}, record says {image.class_name!r}")
    row = self._manifest.get(image.relative_path)
    if row is None:
      self.problem(f"{where}: {image.relative_path} is not in {MANIFEST_FILE}")
    else:
      if row.get("shard") != shard:
        self.problem(f"{where}: {image.relative_path} belongs to shard "
                     f"{row.get('shard')} in {MANIFEST_FILE}")
      if str(row.get("label")) != str(image.label) or row.get("sha256") != image.sha256:
        self.problem(f"{where}: {image.relative_path}: label or sha256 differ "
                     f"from {MANIFEST_FILE}")
    if image.relative_path in self._seen:
      self.problem(f"{where}: {image.relative_path} stored twice "
                   f"(also in {self._seen[image.relative_path]})")
    self._seen[image.relative_path] = shard
    self._check_image(where, image.image)
    return image

  def _check_image(self, where: str, encoded: bytes) -> None:
    from PIL import Image
    try:
      with Image.open(io.BytesIO(encoded)) as pil:
        pil.load()
        size, mode, fmt = pil.size, pil.mode, pil.format
    except Exception as e:  # noqa: BLE001 - any decoder error
      self.problem(f"{where}: image cannot be decoded ({first_line(e)})")
      return
    self.images += 1
    if None not in self._size and size != tuple(self._size):
      self.problem(f"{where}: image is {size[1]}x{size[0]}, summary.json says "
                   f"{self._size[1]}x{self._size[0]}")
    if self._channels and PIL_CHANNELS.get(mode) != self._channels:
      self.problem(f"{where}: image has mode {mode}, expected "
                   f"{self._channels} channel(s)")
    if self._format and fmt != self._format:
      self.problem(f"{where}: image is {fmt}, summary.json says {self._format}")

  def finish(self) -> None:
    """The counts: records vs manifest.csv per shard and per class, vs summary."""
    expected: Dict[str, int] = {}
    for row in self._manifest_rows:
      expected[row.get("shard", "")] = expected.get(row.get("shard", ""), 0) + 1
    present = {FileSystems.split(path)[1] for path, _ in self._dataset.shards}
    for shard in sorted(set(expected) | set(self._records) | present):
      if shard in self._broken_shards:
        continue
      if shard not in present:
        self.problem(f"{shard}: listed in {MANIFEST_FILE} but missing")
        continue
      got, want = self._records.get(shard, 0), expected.get(shard, 0)
      if got != want:
        self.problem(f"{shard}: {got} records, {MANIFEST_FILE} lists {want}")
    summary = self._dataset.summary
    listed = {entry.get("file") for entry in summary.get("shards", [])}
    # With a files record the dataset is exactly what it lists: a file beside
    # it that merely looks like a shard is someone else's, not a problem.
    for shard in (self._dataset.unlisted_shards
                  if self._dataset.own_files is None else []):
      self.problem(f"{shard}: not listed in {SUMMARY_JSON} (left by another run?)")
    for relative, size in sorted((self._dataset.own_files or {}).items()):
      try:
        actual = fileio.size(path(self._dataset.output_dir, relative))
      except FileNotFoundError:
        self.problem(f"{relative}: listed in {FILES_RECORD} but missing")
        continue
      if actual != size:
        self.problem(f"{relative}: {actual} bytes, {FILES_RECORD} says {size}")
    for shard in sorted(listed - present):
      self.problem(f"{shard}: listed in {SUMMARY_JSON} but missing")
    if summary.get("num_examples") != len(self._manifest_rows):
      self.problem(f"{SUMMARY_JSON} says {summary.get('num_examples')} examples, "
                   f"{MANIFEST_FILE} lists {len(self._manifest_rows)}")
    per_class: Dict[str, int] = {}
    for row in self._manifest_rows:
      per_class[row.get("class_name", "")] = per_class.get(row.get("class_name", ""), 0) + 1
    for entry in summary.get("per_class", []):
      name = entry.get("class_name")
      if entry.get("sampled") != per_class.get(name, 0):
        self.problem(f"class {name!r}: {SUMMARY_JSON} says {entry.get('sampled')} "
                     f"examples, {MANIFEST_FILE} lists {per_class.get(name, 0)}")


def scan(dataset: Dataset, on_record: Callable[[str, int, bytes], None],
         on_broken: Callable[[str, Exception], None]) -> int:
  """Reads every record of every shard; returns the number read."""
  count = 0
  for shard_path, size in dataset.shards:
    shard = FileSystems.split(shard_path)[1]
    index = 0
    try:
      for index, data in enumerate(read_records(shard_path, size)):
        on_record(shard, index, data)
        count += 1
    except CorruptRecord as e:
      on_broken(shard, e)
    except Exception as e:  # noqa: BLE001 - an unreadable file
      on_broken(shard, DatasetError(f"cannot read: {first_line(e)}"))
  return count
