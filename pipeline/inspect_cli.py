"""`exemplar-inspect OUTPUT_DIR`: describe, check and preview a written dataset.

    exemplar-inspect OUTPUT_DIR                     # the table: classes, shards, errors, config
    exemplar-inspect OUTPUT_DIR --verify            # re-read every record and image
    exemplar-inspect OUTPUT_DIR --contact_sheet sheet.png

`--verify` reads every shard's TFRecord framing itself (both masked CRC32C
checksums of every record), parses every tf.train.Example, decodes every image
and checks its size, channels and format against summary.json, and compares
the records with manifest.csv (per shard and per class: count, label, class
name, SHA-256) and with summary.json. `--contact_sheet` renders the stored
images with transforms/contact_sheet.py (pages sheet.png, sheet-002.png, ...).

All file access goes through Beam's FileSystems, so gs:// works. TensorFlow is
not imported: records are parsed with the small protobuf reader below.

Exit codes: 0 fine; 1 the dataset is damaged (verify found problems, or a
finished dataset's files cannot be read); 2 bad invocation, or the folder holds
no finished dataset (no _SUCCESS). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import heapq
import io
import json
import re
import struct
import sys
import textwrap
from typing import Callable, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

from apache_beam.io.filesystems import FileSystems

from exemplar.transforms import contact_sheet as sheets
from exemplar.transforms import commit, fileio
from exemplar.transforms.decoding import COLOR_MODES
from exemplar.transforms.names import (CLASS_NAMES_FILE, DATASET_NAME, ERRORS_FILE, FILES_RECORD,
                              MANIFEST_FILE, SUCCESS_MARKER, SUMMARY_JSON)

SHARD_NAME = re.compile(re.escape(DATASET_NAME) + r"-[^.]+\.tfrecord-\d{5}-of-\d{5}")
PIL_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG"}
MAX_PROBLEMS_SHOWN = 20


class UsageError(ValueError):
  """Bad flags, or a folder that is no finished dataset: exit code 2."""


class DatasetError(Exception):
  """A finished dataset whose files cannot be read: exit code 1."""


@dataclasses.dataclass(frozen=True)
class InspectArgs:
  output_dir: str
  verify: bool = False
  contact_sheet: Optional[str] = None
  max_rows: int = 50  # 0: every row
  max_per_class: int = sheets.DEFAULT_MAX_PER_CLASS
  max_cells: int = sheets.DEFAULT_MAX_CELLS
  cell_size: int = sheets.DEFAULT_CELL_SIZE


class _OneLineParser(argparse.ArgumentParser):
  def error(self, message):
    raise UsageError(message)


def _positive(name: str, minimum: int = 1):
  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}")
    if value < minimum:
      raise argparse.ArgumentTypeError(f"{name} must be at least {minimum}, got {value}")
    return value
  return parse


def parse_args(argv: Sequence[str]) -> InspectArgs:
  """Command line -> InspectArgs; raises UsageError. Touches no file."""
  parser = _OneLineParser(
      prog="exemplar-inspect",
      description="Describe, verify or preview an exemplar output folder.")
  parser.add_argument("output_dir", metavar="OUTPUT_DIR",
                      help="a folder written by exemplar (local or gs://...)")
  parser.add_argument("--verify", action="store_true",
                      help="re-read every record (CRCs) and image; compare with "
                           "manifest.csv and summary.json; exit 1 on any problem")
  parser.add_argument("--contact_sheet", metavar="PNG", default=None,
                      help="render the stored images to PNG (more pages: "
                           "NAME-002.png, ...)")
  parser.add_argument("--max_rows", type=_positive("--max_rows", 0), default=50,
                      help="rows shown per table (0: all; default 50)")
  parser.add_argument("--max_per_class", type=_positive("--max_per_class"),
                      default=sheets.DEFAULT_MAX_PER_CLASS,
                      help="contact sheet: images per class (default %(default)s)")
  parser.add_argument("--max_cells", type=_positive("--max_cells"),
                      default=sheets.DEFAULT_MAX_CELLS,
                      help="contact sheet: images in all (default %(default)s)")
  parser.add_argument("--cell_size", type=_positive("--cell_size", 16),
                      default=sheets.DEFAULT_CELL_SIZE,
                      help="contact sheet: image box in pixels (default %(default)s)")
  args = parser.parse_args(list(argv))
  if not args.output_dir.strip():
    raise UsageError("OUTPUT_DIR must not be empty")
  sheet = args.contact_sheet
  if sheet is not None and (not sheet.strip() or sheet.endswith("/")):
    raise UsageError(f"--contact_sheet needs a file name, got {sheet!r}")
  return InspectArgs(output_dir=_strip_slash(args.output_dir), verify=args.verify,
                     contact_sheet=sheet, max_rows=args.max_rows,
                     max_per_class=args.max_per_class, max_cells=args.max_cells,
                     cell_size=args.cell_size)


def _strip_slash(path: str) -> str:
  stripped = path.rstrip("/")
  return path if not stripped or stripped.endswith(":") else stripped


# --- reading the dataset's files ---------------------------------------------


def _path(output_dir: str, name: str) -> str:
  return FileSystems.join(output_dir, name)


def _read_text(path: str) -> str:
  try:
    with FileSystems.open(path) as f:
      return f.read().decode("utf-8")
  except Exception as e:  # noqa: BLE001 - any file system's error
    raise DatasetError(f"cannot read {path}: {_first_line(e)}") from e


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0][:300] if text else type(error).__name__


def _read_csv(path: str) -> List[Dict[str, str]]:
  return list(csv.DictReader(io.StringIO(_read_text(path))))


@dataclasses.dataclass
class Dataset:
  """What a finished output folder says about itself."""
  output_dir: str
  summary: Dict
  class_names: List[str]
  errors: List[Dict[str, str]]
  shards: List[Tuple[str, int]]  # (path, size in bytes), in shard order
  # Files beside it named like its shards that its summary does not list.
  unlisted_shards: List[str] = dataclasses.field(default_factory=list)
  # exemplar_files.json: {relative path: size in bytes}, None before records.
  own_files: Optional[Dict[str, int]] = None

  @property
  def config(self) -> Dict:
    return self.summary.get("config", {})


def open_dataset(output_dir: str) -> Dataset:
  """Reads the metadata; UsageError if unfinished, DatasetError if unreadable."""
  try:
    finished = FileSystems.exists(_path(output_dir, SUCCESS_MARKER))
  except Exception as e:  # noqa: BLE001 - e.g. an unknown scheme
    raise UsageError(f"{output_dir} cannot be read: {_first_line(e)}") from e
  if not finished:
    raise UsageError(f"{output_dir} is not a finished exemplar dataset "
                     f"(no {SUCCESS_MARKER})")
  text = _read_text(_path(output_dir, SUMMARY_JSON))
  try:
    summary = json.loads(text)
  except ValueError as e:
    raise DatasetError(f"{SUMMARY_JSON} is not valid JSON: {_first_line(e)}") from e
  class_names = _read_text(_path(output_dir, CLASS_NAMES_FILE)).splitlines()
  errors = _read_csv(_path(output_dir, ERRORS_FILE))
  shards = []
  for shard in summary.get("shards", []):
    path = _path(output_dir, shard["file"])
    try:
      shards.append((path, fileio.size(path)))
    except FileNotFoundError:
      pass  # named by the summary, missing: --verify reports it
  listed = {shard["file"] for shard in summary.get("shards", [])}
  unlisted = sorted(
      name for name in (FileSystems.split(p)[1] for p in fileio.files_under(output_dir)
                        if "/" not in p[len(output_dir.rstrip("/")) + 1:])
      if SHARD_NAME.fullmatch(name) and name not in listed)
  try:
    record = commit.read_record(output_dir)
  except commit.OutputError as e:
    raise DatasetError(_first_line(e)) from e
  return Dataset(output_dir, summary, class_names, errors, shards, unlisted,
                 None if record is None else record["files"])


# --- TFRecord framing and tf.train.Example, read directly --------------------


class CorruptRecord(Exception):
  def __init__(self, index: int, offset: int, reason: str):
    super().__init__(f"record {index} at byte {offset}: {reason}")
    self.index, self.offset, self.reason = index, offset, reason


def masked_crc32c(data: bytes) -> int:
  """TFRecord's checksum (crc32c, rotated and offset); Beam picks the fastest crc."""
  from apache_beam.io.tfrecordio import _TFRecordUtil
  return _TFRecordUtil._masked_crc32c(data)


def _read_exactly(f, n: int) -> bytes:
  chunks, remaining = [], n
  while remaining:
    chunk = f.read(remaining)
    if not chunk:
      break
    chunks.append(chunk)
    remaining -= len(chunk)
  return b"".join(chunks)


def read_records(path: str, size: Optional[int] = None) -> Iterator[bytes]:
  """The records of one TFRecord file, each checked against both its CRCs.

  Raises CorruptRecord at the first damaged or truncated record (what follows
  cannot be framed reliably).
  """
  with FileSystems.open(path) as f:
    index, offset = 0, 0
    while True:
      header = _read_exactly(f, 12)
      if not header:
        return
      if len(header) < 12:
        raise CorruptRecord(index, offset, "truncated record header")
      length, length_crc = struct.unpack("<QI", header)
      if masked_crc32c(header[:8]) != length_crc:
        raise CorruptRecord(index, offset, "length CRC mismatch (corrupted)")
      if size is not None and offset + 16 + length > size:
        raise CorruptRecord(index, offset, f"truncated: record of {length} bytes "
                            f"runs past the end of the file ({size} bytes)")
      body = _read_exactly(f, length + 4)
      if len(body) < length + 4:
        raise CorruptRecord(index, offset, "truncated record")
      data, (data_crc,) = body[:length], struct.unpack("<I", body[length:])
      if masked_crc32c(data) != data_crc:
        raise CorruptRecord(index, offset, "data CRC mismatch (corrupted)")
      yield data
      index += 1
      offset += 16 + length


def _varint(buffer: bytes, position: int) -> Tuple[int, int]:
  result, shift = 0, 0
  while True:
    if position >= len(buffer) or shift > 63:
      raise ValueError("bad varint")
    byte = buffer[position]
    result |= (byte & 0x7F) << shift
    position += 1
    if not byte & 0x80:
      return result, position
    shift += 7


def _fields(buffer: bytes) -> Iterator[Tuple[int, int, object]]:
  """(field number, wire type, value) of a serialized protobuf message."""
  position = 0
  while position < len(buffer):
    key, position = _varint(buffer, position)
    number, wire = key >> 3, key & 7
    if wire == 0:
      value, position = _varint(buffer, position)
    elif wire == 1:
      value, position = buffer[position:position + 8], position + 8
    elif wire == 2:
      length, position = _varint(buffer, position)
      value, position = buffer[position:position + length], position + length
    elif wire == 5:
      value, position = buffer[position:position + 4], position + 4
    else:
      raise ValueError(f"unsupported wire type {wire}")
    if position > len(buffer):
      raise ValueError("truncated field")
    yield number, wire, value


def _signed64(value: int) -> int:
  return value - (1 << 64) if value >= 1 << 63 else value


def parse_example(data: bytes) -> Dict[str, list]:
  """A serialized tf.train.Example -> {key: [values]} (bytes, int or float).

  Raises ValueError for bytes that are not an Example.
  """
  features: Dict[str, list] = {}
  for number, wire, value in _fields(data):
    if number != 1 or wire != 2:
      continue
    for entry_number, entry_wire, entry in _fields(value):  # map<string, Feature>
      if entry_number != 1 or entry_wire != 2:
        continue
      key, feature = "", b""
      for n, w, v in _fields(entry):
        if n == 1 and w == 2:
          key = v.decode("utf-8")
        elif n == 2 and w == 2:
          feature = v
      features[key] = _feature_values(feature)
  return features


def _feature_values(feature: bytes) -> list:
  values: list = []
  for kind, wire, payload in _fields(feature):
    if wire != 2:
      continue
    for n, w, v in _fields(payload):
      if n != 1:
        continue
      if kind == 1 and w == 2:  # BytesList
        values.append(bytes(v))
      elif kind == 3 and w == 2:  # Int64List, packed
        position = 0
        while position < len(v):
          number, position = _varint(v, position)
          values.append(_signed64(number))
      elif kind == 3 and w == 0:
        values.append(_signed64(v))
      elif kind == 2 and w == 2:  # FloatList, packed
        values.extend(struct.unpack(f"<{len(v) // 4}f", v))
      elif kind == 2 and w == 5:
        values.append(struct.unpack("<f", v)[0])
  return values


def _single(features: Dict[str, list], key: str):
  values = features.get(key)
  if not values or len(values) != 1:
    raise ValueError(f"feature {key!r} missing or not a single value")
  return values[0]


@dataclasses.dataclass(frozen=True)
class StoredImage:
  label: int
  class_name: str
  relative_path: str
  sha256: str
  image: bytes


def read_example(data: bytes) -> StoredImage:
  features = parse_example(data)
  return StoredImage(
      label=int(_single(features, "label")),
      class_name=_single(features, "image/class_name").decode("utf-8"),
      relative_path=_single(features, "image/relative_path").decode("utf-8"),
      sha256=_single(features, "image/sha256").decode("ascii"),
      image=_single(features, "image"))


# --- the table ---------------------------------------------------------------


def _cut(text: str, width: int) -> str:
  text = sheets.printable(str(text))
  return text if len(text) <= width else text[:width - 1] + "\u2026"


def _limited(rows: Sequence, max_rows: int) -> Tuple[Sequence, int]:
  if max_rows and len(rows) > max_rows:
    return rows[:max_rows], len(rows) - max_rows
  return rows, 0


def describe(dataset: Dataset, max_rows: int = 50) -> str:
  """The overview table of a dataset, as text."""
  s, c = dataset.summary, dataset.config
  height, width = (c.get("image_size") or ["?", "?"])[:2]
  total_bytes = sum(size for _, size in dataset.shards)
  lines = [
      f"exemplar dataset  {dataset.output_dir}",
      "",
      f"  classes            {s.get('num_classes', len(dataset.class_names))}",
      f"  examples           {s.get('num_examples', '?')}  "
      f"({s.get('files_seen', '?')} files seen, {s.get('num_failed', 0)} failed"
      f", {len(s.get('classes_short', []))} classes short)",
      f"  samples per class  {s.get('samples_per_class', c.get('samples_per_class'))}",
      f"  seed               {c.get('seed')}",
      f"  image              {height} x {width}, {c.get('color_mode')}, "
      f"{c.get('image_format')} ({c.get('interpolation')}"
      f"{', crop to aspect ratio' if c.get('crop_to_aspect_ratio') else ''})",
      f"  shards             {len(dataset.shards)}  ({total_bytes:,} bytes)",
      f"  errors             {len(dataset.errors)}  ({ERRORS_FILE})",
  ]
  settings = ", ".join(f"{key}={json.dumps(value, ensure_ascii=False)}"
                       for key, value in sorted(c.items()) if key != "class_names")
  lines += textwrap.wrap(settings, width=100, initial_indent="  config             ",
                         subsequent_indent=" " * 21, break_on_hyphens=False)
  if c.get("class_names"):
    lines.append(f"  class_names        {len(c['class_names'])} given")
  versions = s.get("versions") or {}
  if versions:
    lines.append("  versions           " + ", ".join(
        f"{name} {version}" for name, version in sorted(versions.items())))

  per_class = s.get("per_class") or [
      {"label": i, "class_name": name} for i, name in enumerate(dataset.class_names)]
  shown, hidden = _limited(per_class, max_rows)
  lines += ["", f"  {'label':>5}  {'class':<32} {'seen':>8} {'examples':>8} {'failed':>7}"]
  for entry in shown:
    lines.append(
        f"  {entry.get('label', '?'):>5}  {_cut(entry.get('class_name', ''), 32):<32} "
        f"{entry.get('files_seen', '?'):>8} {entry.get('sampled', '?'):>8} "
        f"{entry.get('failed', '?'):>7}")
  if hidden:
    lines.append(f"  ... and {hidden} more classes (--max_rows 0 shows all)")

  examples_per_shard = {entry["file"]: entry.get("examples", "?")
                        for entry in s.get("shards", [])}
  shown, hidden = _limited(dataset.shards, max_rows)
  lines += ["", f"  {'shard':<44} {'examples':>8} {'bytes':>13}"]
  for path, size in shown:
    name = FileSystems.split(path)[1]
    lines.append(f"  {name:<44} {examples_per_shard.get(name, '?'):>8} {size:>13,}")
  if hidden:
    lines.append(f"  ... and {hidden} more shards")

  if dataset.errors:
    shown, hidden = _limited(dataset.errors, max_rows)
    lines += ["", f"  errors ({ERRORS_FILE})"]
    for row in shown:
      lines.append(f"  {_cut(row.get('relative_path', ''), 48):<48}  "
                   f"{_cut(row.get('reason', ''), 70)}")
    if hidden:
      lines.append(f"  ... and {hidden} more errors")
  return "\n".join(lines) + "\n"


# --- one pass over the records: verify and/or gather the contact sheet -------


class SheetGatherer:
  """Keeps the first `max_per_class` images per class and the first
  `max_cells` overall (label, rank order) as thumbnails: bounded memory."""

  def __init__(self, ranks: Dict[str, int], max_per_class: int, max_cells: int,
               cell_size: int):
    self._ranks = ranks
    self._max_per_class = max_per_class
    self._max_cells = max_cells
    self._cell_size = cell_size
    self._heap: List[Tuple[Tuple[int, int], int, sheets.SheetCell]] = []
    self._fallback: Dict[int, int] = {}
    self.total = 0

  def add(self, image: StoredImage) -> None:
    self.total += 1
    rank = self._ranks.get(image.relative_path)
    if rank is None:  # not in the manifest: its order of appearance
      rank = self._fallback.get(image.label, 0)
      self._fallback[image.label] = rank + 1
    if rank >= self._max_per_class:
      return
    key = (image.label, rank)
    if len(self._heap) == self._max_cells and (-key[0], -key[1]) <= self._heap[0][0]:
      return  # later than every cell kept
    cell = sheets.SheetCell(
        image.class_name, image.label, rank,
        sheets.thumbnail_jpeg(image.image, self._cell_size))
    item = ((-key[0], -key[1]), self.total, cell)  # a max-heap on (label, rank)
    if len(self._heap) < self._max_cells:
      heapq.heappush(self._heap, item)
    else:
      heapq.heapreplace(self._heap, item)

  def cells(self) -> List[sheets.SheetCell]:
    return sorted((cell for _, _, cell in self._heap), key=sheets.cell_order)


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
      self.problem(f"{where}: image cannot be decoded ({_first_line(e)})")
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
    for shard in self._dataset.unlisted_shards:
      self.problem(f"{shard}: not listed in {SUMMARY_JSON} (left by another run?)")
    for relative, size in sorted((self._dataset.own_files or {}).items()):
      path = _path(self._dataset.output_dir, relative)
      try:
        actual = fileio.size(path)
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
  for path, size in dataset.shards:
    shard = FileSystems.split(path)[1]
    index = 0
    try:
      for index, data in enumerate(read_records(path, size)):
        on_record(shard, index, data)
        count += 1
    except CorruptRecord as e:
      on_broken(shard, e)
    except Exception as e:  # noqa: BLE001 - an unreadable file
      on_broken(shard, DatasetError(f"cannot read: {_first_line(e)}"))
  return count


def run(args: InspectArgs, out: Optional[TextIO] = None,
        err: Optional[TextIO] = None) -> int:
  """Runs the command; returns the exit code. Raises UsageError/DatasetError."""
  out = out or sys.stdout
  err = err or sys.stderr
  dataset = open_dataset(args.output_dir)
  out.write(describe(dataset, args.max_rows))
  if not (args.verify or args.contact_sheet):
    return 0
  manifest = _read_csv(_path(dataset.output_dir, MANIFEST_FILE))
  verifier = Verifier(dataset, manifest) if args.verify else None
  gatherer = None
  if args.contact_sheet:
    ranks = {row["relative_path"]: int(row["rank"]) for row in manifest
             if row.get("rank", "").isdigit()}
    gatherer = SheetGatherer(ranks, args.max_per_class, args.max_cells, args.cell_size)
  broken: List[str] = []

  def on_record(shard: str, index: int, data: bytes) -> None:
    image = verifier.check(shard, index, data) if verifier else None
    if gatherer is None:
      return
    if image is None and verifier is None:
      try:
        image = read_example(data)
      except (ValueError, UnicodeDecodeError) as e:
        broken.append(f"{shard}: record {index}: {e}")
        return
    if image is not None:
      gatherer.add(image)

  def on_broken(shard: str, error: Exception) -> None:
    if verifier:
      verifier.shard_broken(shard, error)
    else:
      broken.append(f"{shard}: {error}")

  records = scan(dataset, on_record, on_broken)
  code = 0
  if gatherer is not None:
    code = max(code, _write_sheet(args, dataset, gatherer, out))
  for line in broken:
    err.write(f"exemplar-inspect: {line}\n")
  if broken:
    code = 1
  if verifier is not None:
    verifier.finish()
    code = max(code, _report_verify(verifier, dataset, records, out))
  return code


def _write_sheet(args: InspectArgs, dataset: Dataset, gatherer: SheetGatherer,
                 out: TextIO) -> int:
  cells = gatherer.cells()
  note = sheets.cap_note(len(cells), gatherer.total, args.max_per_class,
                                args.max_cells)
  config = dataset.config
  pages = sheets.render_contact_sheet(
      cells, cell_size=args.cell_size, note=note,
      title=sheets.sheet_title(
          dataset.output_dir, config.get("seed"),
          dataset.summary.get("samples_per_class", config.get("samples_per_class"))))
  directory, name = FileSystems.split(args.contact_sheet)
  paths = sheets.write_pages(directory or ".", pages, first=name)
  out.write(f"\ncontact sheet: {len(cells)} images on {len(paths)} page(s): "
            f"{paths[0]}" + (f" ... {FileSystems.split(paths[-1])[1]}" if len(paths) > 1 else "")
            + "\n")
  return 0


def _report_verify(verifier: Verifier, dataset: Dataset, records: int, out: TextIO) -> int:
  problems = verifier.problems
  out.write(f"\nverify: read {records} records from {len(dataset.shards)} shard(s), "
            f"decoded {verifier.images} images\n")
  if not problems:
    out.write("verify: OK (record CRCs, images, manifest.csv and summary.json agree)\n")
    return 0
  out.write(f"verify: FAILED, {len(problems)} problem(s):\n")
  for line in problems[:MAX_PROBLEMS_SHOWN]:
    out.write(f"  {line}\n")
  if len(problems) > MAX_PROBLEMS_SHOWN:
    out.write(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more\n")
  return 1


def main(argv: Optional[List[str]] = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  try:
    args = parse_args(argv)
    return run(args)
  except UsageError as e:
    print(f"exemplar-inspect: error: {e}", file=sys.stderr)
    return 2
  except DatasetError as e:
    print(f"exemplar-inspect: error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
