"""`exemplar-inspect OUTPUT_DIR`: describe, check and preview a written dataset.

    exemplar-inspect OUTPUT_DIR                     # the table: classes, shards, errors, config
    exemplar-inspect OUTPUT_DIR --verify            # re-read every record and image
    exemplar-inspect OUTPUT_DIR --contact_sheet sheet.png
    exemplar-inspect OUTPUT_DIR --html report.html  # the dataset's report page, anew

This module is the command: its flags, the table and `main`. The folder is
read by pipeline/dataset_files.py, the shards by pipeline/records.py (TFRecord
framing and tf.train.Example, without TensorFlow), and `--verify`'s checks
are pipeline/verify.py's: every record's CRCs, every image's size, channels
and format against summary.json, the records against manifest.csv (per
shard and per class: count, label, class name, SHA-256) and summary.json.
`--contact_sheet` renders the stored images with transforms/contact_sheet.py
(pages sheet.png, sheet-002.png, ...). `--html` writes the page a run writes
as report.html (transforms/report.py), from the folder's metadata and the
stored images (thumbnails of the first picks of each class).

All file access goes through Beam's FileSystems, so gs:// works. TensorFlow is
not imported.

Exit codes: 0 fine; 1 the dataset is damaged (verify found problems, or a
finished dataset's files cannot be read); 2 bad invocation, or the folder holds
no finished dataset (no _SUCCESS). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import io
import json
import sys
import textwrap
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

from apache_beam.io.filesystems import FileSystems

from exemplar import dataset_files
from exemplar.dataset_files import Dataset, DatasetError, NotADatasetError, open_dataset
from exemplar.records import StoredImage, read_example
from exemplar.transforms import contact_sheet as sheets
from exemplar.transforms import fileio
from exemplar.transforms import report as reports
from exemplar.transforms.names import ERRORS_FILE, MANIFEST_FILE
from exemplar.verify import Verifier, scan

MAX_PROBLEMS_SHOWN = 20


class UsageError(ValueError):
  """Bad flags, or a folder that is no finished dataset: exit code 2."""


@dataclasses.dataclass(frozen=True)
class InspectArgs:
  output_dir: str
  verify: bool = False
  contact_sheet: Optional[str] = None
  max_rows: int = 50  # 0: every row
  max_per_class: int = sheets.DEFAULT_MAX_PER_CLASS
  max_cells: int = sheets.DEFAULT_MAX_CELLS
  cell_size: int = sheets.DEFAULT_CELL_SIZE
  json: bool = False  # one JSON document on stdout instead of the tables
  html: Optional[str] = None  # write the report page here


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
  parser.add_argument("--html", metavar="FILE", default=None,
                      help="write the dataset's report page (as report.html: "
                           "classes with thumbnails, errors, config) to FILE")
  parser.add_argument("--json", action="store_true",
                      help="print one JSON document (the summary, shards, errors "
                           "and, with --verify, its result) instead of the tables")
  parser.add_argument("--max_rows", type=_positive("--max_rows", 0), default=50,
                      help="rows shown per table (0: all; default 50)")
  parser.add_argument("--max_per_class", type=_positive("--max_per_class"),
                      default=sheets.DEFAULT_MAX_PER_CLASS,
                      help="contact sheet and --html: images per class and split "
                           "(default %(default)s)")
  parser.add_argument("--max_cells", type=_positive("--max_cells"),
                      default=sheets.DEFAULT_MAX_CELLS,
                      help="contact sheet and --html: images in all (default %(default)s)")
  parser.add_argument("--cell_size", type=_positive("--cell_size", 16),
                      default=sheets.DEFAULT_CELL_SIZE,
                      help="contact sheet: image box in pixels (default %(default)s)")
  args = parser.parse_args(list(argv))
  if not args.output_dir.strip():
    raise UsageError("OUTPUT_DIR must not be empty")
  sheet = args.contact_sheet
  if sheet is not None and (not sheet.strip() or sheet.endswith("/")):
    raise UsageError(f"--contact_sheet needs a file name, got {sheet!r}")
  page = args.html
  if page is not None and (not page.strip() or page.endswith("/")):
    raise UsageError(f"--html needs a file name, got {page!r}")
  return InspectArgs(output_dir=_strip_slash(args.output_dir), verify=args.verify,
                     contact_sheet=sheet, max_rows=args.max_rows,
                     max_per_class=args.max_per_class, max_cells=args.max_cells,
                     cell_size=args.cell_size, json=args.json, html=page)


def _strip_slash(path: str) -> str:
  stripped = path.rstrip("/")
  return path if not stripped or stripped.endswith(":") else stripped


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
      (f"  splits             {c['splits']}" if c.get("splits") else
       f"  samples per class  {s.get('samples_per_class', c.get('samples_per_class'))}"),
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
  splits = [split["name"] for split in s.get("splits", [])]
  if len(splits) > 1:
    lines.append("  per split          " + ", ".join(
        f"{split['name']}: {split['num_examples']} examples, {split['num_shards']} shards"
        + (f", {len(split['classes_short'])} classes short" if split["classes_short"] else "")
        for split in s["splits"]))
  else:
    splits = []
  shown, hidden = _limited(per_class, max_rows)
  lines += ["", f"  {'label':>5}  {'class':<32} {'seen':>8} {'examples':>8} {'failed':>7}"
            + "".join(f" {name[:10]:>10}" for name in splits)]
  for entry in shown:
    lines.append(
        f"  {entry.get('label', '?'):>5}  {_cut(entry.get('class_name', ''), 32):<32} "
        f"{entry.get('files_seen', '?'):>8} {entry.get('sampled', '?'):>8} "
        f"{entry.get('failed', '?'):>7}"
        + "".join(f" {entry.get('per_split', {}).get(name, 0):>10}" for name in splits))
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
        sheets.thumbnail_jpeg(image.image, self._cell_size), "", image.relative_path)
    item = ((-key[0], -key[1]), self.total, cell)  # a max-heap on (label, rank)
    if len(self._heap) < self._max_cells:
      heapq.heappush(self._heap, item)
    else:
      heapq.heapreplace(self._heap, item)

  def cells(self) -> List[sheets.SheetCell]:
    return sorted((cell for _, _, cell in self._heap), key=sheets.cell_order)


class ReportGatherer:
  """Makes the thumbnails of the report's picks (reports.thumbnail_keys of
  them) as their records go by: bounded memory."""

  def __init__(self, picks: Sequence[reports.ReportPick], max_cells: int,
               cell_size: int):
    self.picks = list(picks)
    self._wanted = reports.thumbnail_keys(self.picks, max_cells)
    self._cell_size = cell_size
    self._thumbnails: Dict[Tuple[str, str], bytes] = {}

  def add(self, image: StoredImage) -> None:
    key = (image.class_name, image.relative_path)
    if key in self._wanted and key not in self._thumbnails:
      self._thumbnails[key] = sheets.thumbnail_jpeg(image.image, self._cell_size)

  def with_thumbnails(self) -> List[reports.ReportPick]:
    return [p._replace(thumbnail=self._thumbnails.get(reports.pick_key(p), b""))
            for p in self.picks]


def run(args: InspectArgs, out: Optional[TextIO] = None,
        err: Optional[TextIO] = None) -> int:
  """Runs the command; returns the exit code. Raises NotADatasetError or
  DatasetError."""
  out = out or sys.stdout
  err = err or sys.stderr
  if args.json:
    # The text goes into the document's "report"; stdout holds JSON only.
    text = io.StringIO()
    code = run(dataclasses.replace(args, json=False), text, err)
    dataset = open_dataset(args.output_dir)
    out.write(json.dumps(as_json(dataset, text.getvalue(), code, args.verify),
                         indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return code
  if args.contact_sheet:
    _refuse_existing([args.contact_sheet])
  if args.html:
    _refuse_existing([args.html], "--html")
  dataset = open_dataset(args.output_dir)
  out.write(describe(dataset, args.max_rows))
  if not (args.verify or args.contact_sheet or args.html):
    return 0
  manifest = dataset_files.read_csv(dataset_files.path(dataset.output_dir, MANIFEST_FILE))
  verifier = Verifier(dataset, manifest) if args.verify else None
  gatherer = None
  if args.contact_sheet:
    ranks = {row["relative_path"]: int(row["rank"]) for row in manifest
             if row.get("rank", "").isdigit()}
    gatherer = SheetGatherer(ranks, args.max_per_class, args.max_cells, args.cell_size)
  page = None
  if args.html:
    page = ReportGatherer(
        reports.first_picks((reports.pick_of_row(row) for row in manifest),
                            args.max_per_class),
        args.max_cells, args.cell_size)
  broken: List[str] = []

  def on_record(shard: str, index: int, data: bytes) -> None:
    image = verifier.check(shard, index, data) if verifier else None
    if gatherer is None and page is None:
      return
    if image is None and verifier is None:
      try:
        image = read_example(data)
      except (ValueError, UnicodeDecodeError) as e:
        broken.append(f"{shard}: record {index}: {e}")
        return
    if image is not None:
      if gatherer is not None:
        gatherer.add(image)
      if page is not None:
        page.add(image)

  def on_broken(shard: str, error: Exception) -> None:
    if verifier:
      verifier.shard_broken(shard, error)
    else:
      broken.append(f"{shard}: {error}")

  records = scan(dataset, on_record, on_broken)
  code = 0
  if gatherer is not None:
    code = max(code, _write_sheet(args, dataset, gatherer, out))
  if page is not None:
    code = max(code, _write_report(args, dataset, page, out))
  for line in broken:
    err.write(f"exemplar-inspect: {line}\n")
  if broken:
    code = 1
  if verifier is not None:
    verifier.finish()
    code = max(code, _report_verify(verifier, dataset, records, out))
  return code


def as_json(dataset: Dataset, report: str, code: int, verified: bool) -> Dict:
  """`exemplar-inspect --json`'s document (a pure function of the dataset's
  metadata and the text report)."""
  doc = {
      "output_dir": dataset.output_dir,
      "class_names": dataset.class_names,
      "summary": dataset.summary,
      "shards": [{"file": FileSystems.split(path)[1], "bytes": size}
                 for path, size in dataset.shards],
      "unlisted_shards": dataset.unlisted_shards,
      "errors": dataset.errors,
      "exit_code": code,
  }
  if verified:
    start = report.find("verify:")
    doc["verify"] = {"ok": code == 0,
                     "report": report[start:].splitlines() if start >= 0 else []}
  return doc


def _refuse_existing(paths: Sequence[str], flag: str = "--contact_sheet") -> None:
  """The sheet and the page are only ever written as new files: never over
  a file of yours, nor over a dataset's own (its files record would no
  longer hold)."""
  for path in paths:
    if fileio.exists(path):
      raise UsageError(f"{flag}: {path} already exists; give a new file name")


def _write_report(args: InspectArgs, dataset: Dataset, page: ReportGatherer,
                  out: TextIO) -> int:
  errors = [(row.get("class_name", ""), row.get("relative_path", ""),
             row.get("source_path", ""), row.get("reason", "")) for row in dataset.errors]
  text = reports.render_report(dataset.summary, page.with_thumbnails(), errors,
                               reports.report_title(dataset.summary))
  directory, name = FileSystems.split(args.html)
  target = FileSystems.join(directory or ".", name)
  _refuse_existing([target], "--html")
  data = text.encode("utf-8")
  fileio.write_file_atomically(target, [data])
  out.write(f"\nreport: {len(page.picks)} images of {len(dataset.class_names)} classes, "
            f"{len(data):,} bytes: {target}\n")
  return 0


def _write_sheet(args: InspectArgs, dataset: Dataset, gatherer: SheetGatherer,
                 out: TextIO) -> int:
  cells = gatherer.cells()
  note = sheets.cap_note(len(cells), gatherer.total, args.max_per_class,
                                args.max_cells)
  short = set(dataset.summary.get("classes_short", []))
  cells = sheets.mark_classes(cells, [
      (entry["class_name"], entry["label"],
       "empty" if not entry.get("sampled") else "short" if entry["class_name"] in short
       else "") for entry in dataset.summary.get("per_class", [])])
  config = dataset.config
  pages = sheets.render_contact_sheet(
      cells, cell_size=args.cell_size, note=note,
      title=sheets.sheet_title(
          dataset.output_dir, config.get("seed"),
          dataset.summary.get("samples_per_class", config.get("samples_per_class"))))
  directory, name = FileSystems.split(args.contact_sheet)
  _refuse_existing([FileSystems.join(directory or ".", page)
                    for page in sheets.page_file_names(len(pages), name)])
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
  except (UsageError, NotADatasetError) as e:
    print(f"exemplar-inspect: error: {e}", file=sys.stderr)
    return 2
  except DatasetError as e:
    print(f"exemplar-inspect: error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
