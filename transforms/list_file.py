"""List-file input: the images of a dataset named in a CSV or JSON Lines file.

Many image datasets on Cloud Storage are not `<class>/<images>` folders but a
list file naming each image and its label. `ReadImageList` reads one, split
across workers like any Beam text source, into `ListedImage`s and
`DecodeFailure` rows for errors.csv.

Formats (chosen by the file's extension, `.csv` or `.jsonl` / `.json` /
`.ndjson`, optionally compressed: `.csv.gz`; or by `format=`):

  CSV, one record per line:
    path,label                    with or without a header row: a first line
                                  naming a path column (path, file_name,
                                  image, filename, ...) and a label column
                                  (label, class, category, ...), e.g. Hugging
                                  Face ImageFolder's metadata.csv
                                  `file_name,label`; columns are then found by
                                  name, others ignored, an `ml_use` column kept
    [ML_USE,]GCS_FILE_PATH,LABEL  Vertex AI / AutoML Vision single-label import
                                  CSV (no header); ML_USE one of training,
                                  validation, test, unassigned (any case;
                                  AutoML Vision's TRAIN reads as training)
  JSON Lines, one object per line:
    {"imageGcsUri": ..., "classificationAnnotation": {"displayName": ...},
     "dataItemResourceLabels": {"aiplatform.googleapis.com/ml_use": ...}}
                                  Vertex AI's image classification single-label
                                  import format (a `classificationAnnotations`
                                  list of exactly one annotation is read too)
    {"path": ..., "label": ...}   or any of the path / label names a CSV
                                  header may use (`file_name` as in Hugging
                                  Face's metadata.jsonl), optional "ml_use"

Rules:
  * A relative path is relative to the list file's folder (local or gs://;
    '.' and '..' segments are resolved, never above a bucket); absolute paths
    and URIs are kept as written, so images may lie under other roots or
    buckets. Paths are literal: never matched as globs, never listed.
  * Only Keras's image extensions count (`listing.is_image_name` on the file
    name); other rows are recorded as skipped, with the reason.
  * Duplicate rows (same path, same label) count once (the first row's
    ML_USE is kept); a path listed under two labels is an error naming both,
    and neither is used.
  * A row that does not parse is an error with its 1-based line number.
    Unquoted CSV fields lose surrounding white space, quoted ones are kept
    exactly; a quoted field may hold commas but not a line break (each line
    is parsed on its own, which is what lets the file be split): such a
    record is reported as errors on its lines.
  * ML_USE is kept on each `ListedImage` (lower case) and not otherwise used.

Line numbers across splits: the source yields each line with the start offset
of the split (bundle) that read it and its index within that split, and one
`_SplitEnd(start, lines)` per split when it stops. The splits partition the
file, so a line's number is 1 + the lines of every split starting before its
own + its index; the per-split counts meet in one small side input, and only
failures are numbered. This costs no extra read of the file and stays right
under dynamic splitting (a split's residual is read as a split of its own).
"""

from __future__ import annotations

import csv
import json
import os
import re
from typing import (Dict, Iterable, Iterator, List, NamedTuple, Optional,
                    Sequence, Tuple, Union)

import apache_beam as beam
from apache_beam.io import filebasedsource
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.display import DisplayDataItem

from exemplar.transforms import fileio, listing
from exemplar.transforms.decoding import FAILURES_TAG, DecodeFailure, first_line

FORMATS = ("csv", "jsonl")
_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}

ML_USES = ("training", "validation", "test", "unassigned")
# AutoML Vision's (pre-Vertex) import CSV wrote TRAIN for training.
_ML_USE_ALIASES = {"train": "training"}
VERTEX_ML_USE_KEY = "aiplatform.googleapis.com/ml_use"

# Column names (of a CSV header; keys of a plain JSON object), compared in
# lower case with spaces and '-' read as '_'. None of them has an image
# extension, so a header can never be mistaken for a usable row.
PATH_COLUMNS = ("path", "file_name", "filename", "image", "image_path", "file",
                "filepath", "file_path", "image_file", "image_uri", "uri",
                "gcs_file_path", "imagegcsuri")
LABEL_COLUMNS = ("label", "class", "class_name", "classname", "category",
                 "label_name", "display_name", "displayname")
ML_USE_COLUMNS = ("ml_use",)

# A longer line is recorded as an error and not held in memory.
MAX_LINE_BYTES = 1 << 20

_BOM = b"\xef\xbb\xbf"
_URI = re.compile(r"^[a-zA-Z][-a-zA-Z0-9+.]*://")
# One item of a CSV record (after csv.reader has accepted the record): optional
# spaces, then a quoted item (group 1) or an unquoted one, then ',' or the end.
_CSV_ITEM = re.compile(r' *(?:"((?:[^"]|"")*)"|[^,]*)(?:,|\Z)', re.S)

PROBLEMS_TAG = "problems"
LINE_COUNTS_TAG = "line_counts"

Position = Tuple[int, int]  # (start offset of the split that read the line, index in it)


class ListFileError(listing.ListingError):
  """The list file cannot be read as one: missing, a folder, empty, an
  unknown format, or a header without a label column."""


class ListedImage(NamedTuple):
  """One image named by a list file."""
  class_name: str
  path: str           # absolute local path or full URI
  relative_path: str  # relative to the list file's folder when under it, else `path`
  ml_use: Optional[str]  # training / validation / test / unassigned, or None


class ListRow(NamedTuple):
  """A parsed row, as written (the path not yet resolved)."""
  path: str
  label: str
  ml_use: Optional[str] = None


class RowError(NamedTuple):
  """Why a row cannot be used; `path` and `label` when they are known."""
  reason: str
  path: Optional[str] = None
  label: Optional[str] = None


class CsvHeader(NamedTuple):
  """Column positions of a CSV list's header row."""
  width: int
  path: int
  label: int
  ml_use: Optional[int] = None


# --- pure per-row functions ---------------------------------------------------


def list_format(list_path: str, format: Optional[str] = None) -> str:  # noqa: A002
  """'csv' or 'jsonl': `format` when given, else from the file's extension
  (after a compression suffix such as '.gz'). Raises ListFileError."""
  if format is not None:
    chosen = str(format).strip().lower()
    chosen = "jsonl" if chosen == "json" else chosen
    if chosen not in FORMATS:
      raise ListFileError(f"list file format must be 'csv' or 'jsonl', got {format!r}")
    return chosen
  name = _base_name(list_path).lower()
  if CompressionTypes.detect_compression_type(name) != CompressionTypes.UNCOMPRESSED:
    name = os.path.splitext(name)[0]
  extension = os.path.splitext(name)[1]
  if extension not in _EXTENSIONS:
    raise ListFileError(
        f"cannot tell the format of list file {list_path!r} from its extension: "
        "name it .csv or .jsonl, or give the format ('csv' or 'jsonl')")
  return _EXTENSIONS[extension]


def _column_name(field: str) -> str:
  return field.strip().lower().replace(" ", "_").replace("-", "_")


def csv_header(first_line: str) -> Optional[CsvHeader]:
  """The header of a CSV list, from its first line, or None if that line is
  a record. A header names a path column and a label column (the first of
  each, left to right; an `ml_use` column is optional). A first line naming a
  path column but no label column, none of whose fields is an image name,
  raises ListFileError: a header without labels (Hugging Face's
  `file_name,caption`) cannot be read as classes."""
  try:
    fields = _csv_fields(first_line)
  except csv.Error:
    return None
  names = [_column_name(f) for f in fields]

  def first(columns: Sequence[str]) -> Optional[int]:
    return next((i for i, n in enumerate(names) if n in columns), None)

  path, label, ml_use = first(PATH_COLUMNS), first(LABEL_COLUMNS), first(ML_USE_COLUMNS)
  if path is None:
    return None
  if label is not None:
    return CsvHeader(len(fields), path, label, ml_use)
  if not any(listing.is_image_name(_base_name(f)) for f in fields):
    raise ListFileError(
        f"header {first_line.strip()[:200]!r} names no label column "
        f"(one of: {', '.join(LABEL_COLUMNS)})")
  return None


def _csv_fields(line: str) -> List[str]:
  """The fields of one CSV line: unquoted ones stripped, quoted ones exact.
  Raises csv.Error."""
  rows = list(csv.reader([line], skipinitialspace=True, strict=True))
  fields = rows[0] if rows else []
  quoted = [m.group(1) is not None for m in _CSV_ITEM.finditer(line)]
  return [f if is_quoted else f.strip() for f, is_quoted in zip(fields, quoted)]


def normalize_ml_use(value) -> Optional[str]:
  """An ML_USE value in lower case ('TRAIN' -> 'training'); None for an empty
  one. Raises ValueError for anything else."""
  if value is None:
    return None
  if not isinstance(value, str):
    raise ValueError(f"ML_USE must be a string, got {value!r}")
  lowered = value.strip().lower()
  if not lowered:
    return None
  lowered = _ML_USE_ALIASES.get(lowered, lowered)
  if lowered not in ML_USES:
    raise ValueError(f"unknown ML_USE {value!r}: expected one of {', '.join(ML_USES)}")
  return lowered


def _is_ml_use(field: str) -> bool:
  lowered = field.strip().lower()
  return _ML_USE_ALIASES.get(lowered, lowered) in ML_USES


def parse_csv_line(line: str, header: Optional[CsvHeader] = None
                   ) -> Union[ListRow, RowError, None]:
  """One line of a CSV list -> ListRow, RowError, or None for a blank line.

  Without a header a record is `path,label`, or Vertex AI's
  `[ML_USE,]GCS_FILE_PATH[,LABEL]` (an ML_USE value never has an image
  extension, so it cannot be mistaken for a path). A record without a label
  is an error: exemplar needs a class for every image.
  """
  if not line.strip():
    return None
  try:
    fields = _csv_fields(line)
  except csv.Error as e:
    if "unexpected end of data" in str(e):
      return RowError("a quoted field is not closed on its line (a line break "
                      "inside a quoted field is not supported)")
    return RowError(f"not a CSV record: {e}")
  if header is not None:
    if len(fields) != header.width:
      return RowError(f"expected {header.width} fields as in the header, got {len(fields)}")
    path, label = fields[header.path], fields[header.label]
    try:
      ml_use = normalize_ml_use(fields[header.ml_use]) if header.ml_use is not None else None
    except ValueError as e:
      return RowError(str(e), path or None, label or None)
    return _checked_row(path, label, ml_use)
  count = len(fields)
  if count == 1:
    return _checked_row(fields[0], "", None)
  if count == 2:
    if _is_ml_use(fields[0]):  # Vertex AI: ML_USE,GCS_FILE_PATH, unlabeled
      return _checked_row(fields[1], "", normalize_ml_use(fields[0]))
    return _checked_row(fields[0], fields[1], None)
  if count == 3 and (_is_ml_use(fields[0]) or not fields[0]):
    return _checked_row(fields[1], fields[2], normalize_ml_use(fields[0]))
  hint = (f" ({fields[0][:50]!r} is not an ML_USE: {', '.join(ML_USES)})"
          if count == 3 else " (one label per image)" if count > 3 else "")
  return RowError(f"expected path,label or ML_USE,path,label, got {count} fields{hint}")


def parse_jsonl_line(line: str) -> Union[ListRow, RowError, None]:
  """One line of a JSON Lines list -> ListRow, RowError, or None for a blank
  line. Vertex AI's form (`imageGcsUri`) or a plain object with a path key
  and a label key (`PATH_COLUMNS`, `LABEL_COLUMNS`) and optional `ml_use`."""
  if not line.strip():
    return None
  try:
    record = json.loads(line)
  except ValueError as e:
    return RowError(f"not valid JSON: {e}")
  if not isinstance(record, dict):
    return RowError(f"expected a JSON object, got {type(record).__name__}")
  if "imageGcsUri" in record:
    return _vertex_row(record)
  keys = {_column_name(k): k for k in reversed(list(record)) if isinstance(k, str)}
  path_key = next((keys[c] for c in PATH_COLUMNS if c in keys), None)
  if path_key is None:
    return RowError('no path: expected an "imageGcsUri" or "path" key '
                    f'(or one of {", ".join(PATH_COLUMNS[1:])})')
  path = record[path_key]
  if not isinstance(path, str):
    return RowError(f'"{path_key}" must be a string, got {json.dumps(path)[:50]}')
  label_key = next((keys[c] for c in LABEL_COLUMNS if c in keys), None)
  label = _json_label(record.get(label_key) if label_key else None)
  if isinstance(label, RowError):
    return label._replace(path=path or None)
  ml_key = next((keys[c] for c in ML_USE_COLUMNS if c in keys), None)
  try:
    ml_use = normalize_ml_use(record[ml_key]) if ml_key else None
  except ValueError as e:
    return RowError(str(e), path or None, label or None)
  return _checked_row(path, label, ml_use)


def _vertex_row(record: dict) -> Union[ListRow, RowError]:
  """Vertex AI's ImageClassificationSingleLabel import object."""
  path = record["imageGcsUri"]
  if not isinstance(path, str):
    return RowError(f'"imageGcsUri" must be a string, got {json.dumps(path)[:50]}')
  annotation = record.get("classificationAnnotation")
  if annotation is None and "classificationAnnotations" in record:
    annotations = record["classificationAnnotations"]
    if not isinstance(annotations, list) or len(annotations) != 1:
      count = len(annotations) if isinstance(annotations, list) else "invalid"
      return RowError(f"classificationAnnotations holds {count} annotations: "
                      "exemplar needs exactly one label per image", path or None)
    annotation = annotations[0]
  if annotation is not None and not isinstance(annotation, dict):
    return RowError("classificationAnnotation must be an object", path or None)
  label = _json_label((annotation or {}).get("displayName"))
  if isinstance(label, RowError):
    return label._replace(path=path or None)
  labels = record.get("dataItemResourceLabels") or {}
  if not isinstance(labels, dict):
    return RowError("dataItemResourceLabels must be an object", path or None, label)
  try:
    ml_use = normalize_ml_use(labels.get(VERTEX_ML_USE_KEY))
  except ValueError as e:
    return RowError(str(e), path or None, label)
  return _checked_row(path, label, ml_use)


def _json_label(value) -> Union[str, RowError]:
  """A JSON label: a string, or an integer (Hugging Face's class ids) as its
  decimal string; "" when absent (reported by `_checked_row`)."""
  if value is None:
    return ""
  if isinstance(value, bool) or not isinstance(value, (str, int)):
    return RowError(f"a label must be a string, got {json.dumps(value)[:50]}")
  return str(value)


def _checked_row(path: str, label: str, ml_use: Optional[str]) -> Union[ListRow, RowError]:
  if not path:
    return RowError("empty path", None, label or None)
  if not label:
    return RowError("no label (exemplar needs one label per image)", path)
  problem = listing.class_name_problem(label)
  if problem:
    return RowError(f"label {label!r} {problem}", path)
  return ListRow(path, label, ml_use)


def _is_uri(path: str) -> bool:
  return bool(_URI.match(path))


def _base_name(path: str) -> str:
  return path.rsplit("/", 1)[-1] if _is_uri(path) else os.path.basename(path)


def list_folder(list_path: str) -> str:
  """The folder relative paths in a list are resolved against: the list
  file's own (absolute locally; 'gs://bucket' for a list at a bucket's root)."""
  if _is_uri(list_path):
    return list_path.rsplit("/", 1)[0]
  return os.path.dirname(os.path.abspath(list_path))


def locate(path: str, folder: str) -> Tuple[str, str]:
  """(absolute path or URI, relative key) of a path as written in a list
  whose folder is `folder`. URIs are kept; local paths are normalized (their
  '.', '..' and doubled separators resolved as the OS would); a relative
  path under a URI folder has its '.' and '..' segments resolved and is
  otherwise literal. The key is the path relative to `folder` when it lies
  below it, else the full path. Raises ValueError for a relative path that
  climbs above its bucket."""
  if _is_uri(path):
    absolute = path
  elif os.path.isabs(path) or not _is_uri(folder):
    absolute = os.path.normpath(os.path.join(folder, path))
  else:
    absolute = _join_uri(folder, path)
  if _is_uri(absolute):
    prefix = folder.rstrip("/") + "/"
    if _is_uri(folder) and absolute.startswith(prefix) and len(absolute) > len(prefix):
      return absolute, absolute[len(prefix):]
    return absolute, absolute
  if not _is_uri(folder):
    prefix = folder.rstrip(os.sep) + os.sep
    if absolute.startswith(prefix) and len(absolute) > len(prefix):
      return absolute, absolute[len(prefix):].replace(os.sep, "/")
  return absolute, absolute


def _join_uri(folder: str, relative: str) -> str:
  """`relative` below a URI folder, with '.' and '..' segments resolved
  (RFC 3986's remove_dot_segments); the bucket is never left."""
  scheme, _, rest = folder.partition("://")
  parts = rest.rstrip("/").split("/")  # [bucket, folder, ...]
  for segment in relative.split("/"):
    if segment == ".":
      continue
    if segment == "..":
      if len(parts) <= 1:
        raise ValueError(f"{relative!r} climbs above the bucket of {folder!r}")
      parts.pop()
      continue
    parts.append(segment)
  return f"{scheme}://{'/'.join(parts)}"


def to_listed_image(row: ListRow, folder: str) -> Union[ListedImage, RowError]:
  """A parsed row -> its ListedImage, or RowError for a path that climbs out
  of its bucket or whose file name is not one of Keras's image names."""
  try:
    path, relative_path = locate(row.path, folder)
  except ValueError as e:
    return RowError(str(e), row.path, row.label)
  name = _base_name(path)
  if not listing.is_image_name(name):
    if name.startswith("."):
      reason = "skipped: a hidden file name (starts with '.')"
    else:
      reason = ("skipped: not an image name (Keras's extensions: "
                f"{' '.join(listing.IMAGE_EXTENSIONS)})")
    return RowError(reason, relative_path, row.label)
  return ListedImage(row.label, path, relative_path, row.ml_use)


class _Listing(NamedTuple):
  """A usable row: its image and where it was listed."""
  image: ListedImage
  position: Position


class _Problem(NamedTuple):
  """A failure waiting for its line numbers: `parts` are strings and
  Positions, each Position written as 'line N'."""
  class_name: str
  relative_path: Optional[str]  # None: 'line N' of `position`
  position: Position
  parts: tuple


def merge_listings(listings: Iterable[_Listing]) -> Union[ListedImage, _Problem]:
  """The rows of one path -> its ListedImage (duplicates count once; the
  first row's ML_USE is kept), or a _Problem naming every label (with the
  first line of each) when it is listed under more than one."""
  ordered = sorted(listings, key=lambda listing_: listing_.position)
  first_of_label: Dict[str, _Listing] = {}
  for entry in ordered:
    first_of_label.setdefault(entry.image.class_name, entry)
  first = ordered[0]
  if len(first_of_label) == 1:
    return first.image
  shown = list(first_of_label.items())[:10]
  parts: list = [f"listed under {len(first_of_label)} labels: "]
  for i, (label, entry) in enumerate(shown):
    parts += [", " if i else "", f"{label!r} (", entry.position, ")"]
  if len(first_of_label) > len(shown):
    parts.append(", ...")
  parts.append("; not used")
  return _Problem("", first.image.relative_path, first.position, tuple(parts))


def first_line_numbers(line_counts: Iterable[Tuple[int, int]]) -> Dict[int, int]:
  """{split start offset: 1-based number of its first line}, from every
  split's (start offset, lines read). The splits partition the file, so the
  lines before a split are those of the splits that start before it."""
  numbers, before = {}, 0
  for start, lines in sorted(line_counts):
    numbers[start] = before + 1
    before += lines
  return numbers


def to_failure(problem: _Problem, list_path: str,
               first_lines: Dict[int, int]) -> DecodeFailure:
  """A _Problem -> its errors.csv row, with line numbers."""
  def line(position: Position) -> str:
    start, index = position
    return f"line {first_lines[start] + index}"

  reason = "".join(p if isinstance(p, str) else line(p) for p in problem.parts)
  return DecodeFailure(problem.class_name,
                       problem.relative_path or line(problem.position),
                       list_path, reason)


# --- the source: lines with their split and index ------------------------------


class _Line(NamedTuple):
  start: int             # start offset of the split that read it
  index: int             # its index among that split's lines
  data: Optional[bytes]  # without its line break; None: longer than MAX_LINE_BYTES


class _SplitEnd(NamedTuple):
  start: int
  lines: int  # lines the split read


def _lines_from(file, position: int, chunk: int = 1 << 16
                ) -> Iterator[Tuple[int, Optional[bytes]]]:
  """(byte offset, line without '\\n' or '\\r\\n') from `position` to the end;
  a line longer than MAX_LINE_BYTES comes as (offset, None), unread."""
  buffer, offset, too_long = b"", position, False
  while True:
    data = file.read(chunk)
    if not data:
      break
    buffer += data
    start = 0
    while True:
      end = buffer.find(b"\n", start)
      if end < 0:
        break
      if too_long:
        too_long = False
      else:
        line = buffer[start:end]
        yield offset + start, (line[:-1] if line.endswith(b"\r") else line)
      start = end + 1
    offset += start
    buffer = buffer[start:]
    if len(buffer) > MAX_LINE_BYTES and not too_long:
      yield offset, None
      too_long = True
    if too_long:  # drop the over-long line's bytes as they come
      offset += len(buffer)
      buffer = b""
  if buffer and not too_long:
    yield offset, (buffer[:-1] if buffer.endswith(b"\r") else buffer)


class _ListFileSource(filebasedsource.FileBasedSource):
  """A list file's lines as `_Line`s, then one `_SplitEnd` per split.

  The path is handed to FileBasedSource as a pattern that matches only itself
  (`fileio.escape_glob`): a list file named 'list[1].csv' is read, not
  matched. (Beam resolves such an escaped pattern by listing the folder, so
  only a name holding '*', '?' or '[' costs a listing; any other is one
  metadata call.) `bundle_size`, when given, replaces the runner's desired
  bundle size for the initial split (Beam asks for >= 1 MB).
  """

  def __init__(self, list_path: str, bundle_size: Optional[int] = None):
    super().__init__(fileio.escape_glob(list_path),
                     compression_type=CompressionTypes.AUTO, validate=False)
    self._bundle_size = bundle_size

  def split(self, desired_bundle_size=None, start_position=None, stop_position=None):
    return super().split(self._bundle_size or desired_bundle_size,
                         start_position, stop_position)

  def read_records(self, file_name, range_tracker) -> Iterator[Union[_Line, _SplitEnd]]:
    start = range_tracker.start_position()
    index = 0
    with self.open_file(file_name) as file:
      if start > 0:
        # The line running through `start - 1` belongs to the split before:
        # this one begins at the first line starting at or after `start`.
        file.seek(start - 1)
        lines = _lines_from(file, start - 1)
        next(lines, None)
      else:
        lines = _lines_from(file, 0)
      for offset, data in lines:
        if not range_tracker.try_claim(offset):
          break
        yield _Line(start, index, data)
        index += 1
    yield _SplitEnd(start, index)


# --- the transform --------------------------------------------------------------


@beam.typehints.with_input_types(Union[_Line, _SplitEnd])
@beam.typehints.with_output_types(Tuple[str, _Listing])
class ParseRowFn(beam.DoFn):
  """_Line -> (absolute path, _Listing) for a usable row; _Problem (tagged
  'problems') for one that is not; _SplitEnd -> (start, lines) (tagged
  'line_counts')."""

  def __init__(self, format_name: str, folder: str, header: Optional[CsvHeader]):
    self._format = format_name
    self._folder = folder
    self._header = header
    self._rows = Metrics.counter("exemplar.list_file", "rows_listed")
    self._bad_rows = Metrics.counter("exemplar.list_file", "rows_failed")
    self._splits = Metrics.counter("exemplar.list_file", "splits_read")

  def process(self, record: Union[_Line, _SplitEnd]):
    if isinstance(record, _SplitEnd):
      self._splits.inc()
      yield beam.pvalue.TaggedOutput(LINE_COUNTS_TAG, (record.start, record.lines))
      return
    position = (record.start, record.index)
    result = self._parse(record, position)
    if result is None:
      return
    if isinstance(result, RowError):
      self._bad_rows.inc()
      yield beam.pvalue.TaggedOutput(PROBLEMS_TAG, _Problem(
          result.label or "", result.path, position, (position, ": " + result.reason)))
      return
    self._rows.inc()
    yield result.path, _Listing(result, position)

  def _parse(self, record: _Line, position: Position
             ) -> Union[ListedImage, RowError, None]:
    data = record.data
    if data is None:
      return RowError(f"longer than {MAX_LINE_BYTES} bytes; not read")
    first = position == (0, 0)
    if first and data.startswith(_BOM):
      data = data[len(_BOM):]
    if first and self._header is not None:
      return None  # the header row
    try:
      text = data.decode("utf-8")
    except UnicodeDecodeError as e:
      return RowError(f"not valid UTF-8 ({e.reason} at byte {e.start})")
    row = (parse_csv_line(text, self._header) if self._format == "csv"
           else parse_jsonl_line(text))
    if row is None or isinstance(row, RowError):
      return row
    return to_listed_image(row, self._folder)


@beam.typehints.with_input_types(Tuple[str, Iterable[_Listing]])
@beam.typehints.with_output_types(ListedImage)
class OneLabelPerPathFn(beam.DoFn):
  """(path, its _Listings) -> ListedImage once, or a _Problem (tagged
  'problems') when the path is listed under two labels or more."""

  def __init__(self):
    self._conflicts = Metrics.counter("exemplar.list_file", "paths_with_two_labels")

  def process(self, element: Tuple[str, Iterable[_Listing]]):
    _, listings = element
    merged = merge_listings(listings)
    if isinstance(merged, _Problem):
      self._conflicts.inc()
      yield beam.pvalue.TaggedOutput(PROBLEMS_TAG, merged)
    else:
      yield merged


@beam.typehints.with_input_types(_Problem, Dict[int, int])
@beam.typehints.with_output_types(DecodeFailure)
class NumberLinesFn(beam.DoFn):
  """_Problem (+ {split start: first line number}) -> DecodeFailure."""

  def __init__(self, list_path: str):
    self._list_path = list_path

  def process(self, problem: _Problem, first_lines: Dict[int, int]):
    yield to_failure(problem, self._list_path, first_lines)


class ImageListOutputs(dict):
  """ReadImageList's outputs, by key or by attribute (as Beam's
  DoOutputsTuple): `images` and `failures`."""

  def __getattr__(self, name: str):
    try:
      return self[name]
    except KeyError:
      raise AttributeError(name) from None


class ReadImageList(beam.PTransform):
  """PBegin -> ImageListOutputs {'images': PCollection[ListedImage],
  'failures': PCollection[DecodeFailure]}: the images a list file names
  (also `.images` and `.failures`).

  The list is read with a Beam FileBasedSource, so a large list is split
  across workers; rows are parsed one by one, duplicates merged by path.
  See the module docstring for the formats and rules.

  Args:
    list_path: the list file, a local path or a URI of any Beam file system
      (gs://...); read literally, never matched as a glob.
    format: 'csv' or 'jsonl'; by default from the file's extension (.csv;
      .jsonl, .json, .ndjson; a compression suffix such as .gz is looked
      through).
    desired_bundle_size: bytes per initial split of the file, in place of the
      runner's choice (Beam asks for >= 1 MB); for tuning and tests.

  Outputs:
    'images': one ListedImage per listed image (class_name, path: absolute
      path or URI, relative_path: relative to the list file's folder when
      under it, else the full path, ml_use or None); order unspecified.
    'failures': one DecodeFailure per row that cannot be used (class_name ''
      when unknown; relative_path the row's path, or 'line N' when it has
      none; source_path the list file; reason like 'line 12: expected
      path,label or ML_USE,path,label, got 4 fields (one label per image)'),
      and one per path listed under two labels or more.

  Raises (when constructed):
    ListFileError (a `listing.ListingError`, a ValueError): the list file does
      not exist, is a folder or is empty; its format is unknown; its CSV
      header names no label column.

  Example:
    import apache_beam as beam
    import exemplar

    with open("/tmp/flowers.csv", "w") as f:
      f.write("path,label\\ndaisy/1.jpg,daisy\\nroses/2.png,roses\\nnotes.txt,x\\n")
    with beam.Pipeline() as p:
      listed = p | exemplar.ReadImageList("/tmp/flowers.csv")
      _ = listed.images | "Images" >> beam.Map(print)  # or listed["images"]
      # ListedImage(class_name='daisy', path='/tmp/daisy/1.jpg',
      #             relative_path='daisy/1.jpg', ml_use=None), ...
      _ = listed.failures | "Failures" >> beam.Map(print)
      # DecodeFailure(class_name='x', relative_path='notes.txt', ...,
      #               reason="line 4: skipped: not an image name ...")
  """

  def __init__(self, list_path: str, format: Optional[str] = None,  # noqa: A002
               desired_bundle_size: Optional[int] = None):
    self._list_path = fileio.absolute(list_path)
    self._desired_bundle_size = desired_bundle_size
    super().__init__()
    self._format, self._header = check_list_file(self._list_path, format)
    self._folder = list_folder(self._list_path)

  def default_label(self) -> str:
    return f"ReadImageList({_base_name(self._list_path)})"

  def display_data(self):
    return {
        "list_path": DisplayDataItem(self._list_path, label="List File"),
        "format": DisplayDataItem(self._format, label="Format"),
        "header": DisplayDataItem(self._header is not None, label="CSV Header Row"),
        "desired_bundle_size": DisplayDataItem(
            self._desired_bundle_size, label="Desired Bundle Size").drop_if_none(),
    }

  def expand(self, pbegin):
    parsed = (
        pbegin
        | "ReadLines" >> beam.io.Read(
            _ListFileSource(self._list_path, self._desired_bundle_size))
        # _Line per line (its split's start offset, index in the split);
        # _SplitEnd per split read
        | "ParseRows" >> beam.ParDo(
            ParseRowFn(self._format, self._folder, self._header)
        ).with_outputs(PROBLEMS_TAG, LINE_COUNTS_TAG, main="listings"))
    # (absolute path, _Listing) per usable row; _Problem per bad row;
    # (split start, lines) per split
    merged = (
        parsed.listings
        | "GroupByPath" >> beam.GroupByKey()
        # (absolute path, [_Listing])
        | "OneLabelPerPath" >> beam.ParDo(OneLabelPerPathFn()).with_outputs(
            PROBLEMS_TAG, main="images"))
    # ListedImage per path; _Problem per path under two labels
    first_lines = (
        parsed[LINE_COUNTS_TAG]
        | "CollectLineCounts" >> beam.combiners.ToList()
        # [(split start, lines)]: one list, a few entries per MB of list
        | "FirstLineOfEachSplit" >> beam.Map(first_line_numbers))
    # {split start: line number of its first line}
    failures = (
        (parsed[PROBLEMS_TAG], merged[PROBLEMS_TAG])
        | "AllProblems" >> beam.Flatten()
        | "NumberLines" >> beam.ParDo(
            NumberLinesFn(self._list_path), beam.pvalue.AsSingleton(first_lines)))
    # DecodeFailure per unusable row or path
    return ImageListOutputs(images=merged.images, **{FAILURES_TAG: failures})


def check_list_file(list_path: str, format: Optional[str] = None  # noqa: A002
                    ) -> Tuple[str, Optional[CsvHeader]]:
  """(format, CSV header or None) of a list file that can be read as one;
  raises ListFileError (one line) otherwise: missing, a folder, empty, an
  unknown format, a JSON array, or a CSV header without a label column.
  Reads only the first line; `ReadImageList` and the command line call it
  before any job starts."""
  _check_list_file(list_path)
  chosen = list_format(list_path, format)
  first = _first_line(list_path)
  if chosen == "jsonl" and first.lstrip().startswith("["):
    raise ListFileError(
        f"list file {list_path!r} holds a JSON array, not JSON Lines: "
        "write one object per line")
  if chosen != "csv":
    return chosen, None
  try:
    return chosen, csv_header(first)
  except ListFileError as e:  # the header names no label column: name the file
    raise ListFileError(f"list file {list_path!r}: {e}") from None


def _check_list_file(list_path: str) -> None:
  """Raises ListFileError unless `list_path` is a non-empty file."""
  if fileio.is_local(list_path) and os.path.isdir(list_path):
    raise ListFileError(f"list file {list_path!r} is a folder, not a file")
  try:
    size = fileio.size(list_path)
  except FileNotFoundError:
    raise ListFileError(f"list file {list_path!r} does not exist") from None
  except Exception as e:  # noqa: BLE001 - any store's refusal, in one line
    raise ListFileError(
        f"list file {list_path!r} cannot be read: {first_line(str(e))}") from e
  if size == 0:
    raise ListFileError(f"list file {list_path!r} is empty")


def _first_line(list_path: str) -> str:
  """The list file's first line (without a byte order mark), decoded
  leniently: only the format and header are sniffed from it."""
  with FileSystems.open(list_path, compression_type=CompressionTypes.AUTO) as f:
    head = f.read(MAX_LINE_BYTES)
  line = head.split(b"\n", 1)[0]
  if line.startswith(_BOM):
    line = line[len(_BOM):]
  return line.rstrip(b"\r").decode("utf-8", errors="replace")
