"""report.html: one self-contained page for a label audit of a dataset.

`render_report(summary, picks, errors, title)` turns summary.json's content,
the picks (with small JPEG thumbnails) and the rows of errors.csv into one
HTML page:

  * a row per class of summary["per_class"], in label order, with its counts
    (per split when the dataset has more than one) and its picks: thumbnail,
    file name, source path, source size (and split, with several splits).
    A class with no image stored is marked `empty`, one in
    summary["classes_short"] `short` (a badge and a tint, not colour alone);
  * a filter box (class names containing the text, any case) and a
    "short or empty only" switch;
  * the changes since the dataset this run replaced (summary["changes"],
    transforms/changes.py), the errors table, the run's configuration, seed,
    versions and fingerprints.

The page loads nothing: thumbnails are `data:` URIs, the CSS and the few lines
of JS are inline, and a Content-Security-Policy (hashes of that CSS and JS,
`data:` images only) forbids anything else. Every text is HTML-escaped. The
output is a pure function of the arguments (no clock, no randomness), so the
same dataset gives the same bytes; the pipeline (metadata.FinalizeDataset) and
`exemplar-inspect OUT --html FILE` build it alike.

At 1,000 classes with one pick each the page is ~8 MB (the thumbnails, 5-8 kB
each) and loads in under a second in Chromium (tests/test_report.py measures
it); thumbnails load lazily. The callers bound it:
`first_picks` keeps the first DEFAULT_MAX_PER_CLASS picks of each class and
split, and at most DEFAULT_MAX_THUMBNAILS of them carry a thumbnail, taken
in (rank, label) order so every class gets its first pick's before any
gets a second.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import posixpath
from typing import (Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence,
                    Tuple)

from exemplar.transforms.names import (CHANGES_FILE, ERRORS_FILE, MANIFEST_FILE, SPLIT,
                                       SUMMARY_JSON)

DEFAULT_MAX_PER_CLASS = 10       # picks listed per class and split
DEFAULT_MAX_THUMBNAILS = 1000    # thumbnails embedded (5-8 kB each as JPEG)
DEFAULT_MAX_ERRORS = 1000        # rows of the errors table
DEFAULT_MAX_CHANGED_CLASSES = 1000


class ReportPick(NamedTuple):
  """One stored image as the report shows it; `thumbnail` is a small JPEG
  (b"": none, e.g. written with --no_contact_sheet)."""
  class_name: str
  label: int
  split: str
  rank: int
  relative_path: str
  source_path: str
  source_height: int
  source_width: int
  thumbnail: bytes = b""


# --- picks -------------------------------------------------------------------


def pick_of(image) -> ReportPick:
  """A DecodedImage (or anything with its fields) -> ReportPick, keeping
  only its thumbnail of the image bytes."""
  return ReportPick(image.class_name, int(image.label), getattr(image, "split", SPLIT) or SPLIT,
                    int(image.rank), image.relative_path, image.source_path,
                    int(image.source_height), int(image.source_width),
                    bytes(getattr(image, "thumbnail", b"") or b""))


def _int(value, default: int = -1) -> int:
  try:
    return int(value)
  except (TypeError, ValueError):
    return default


def pick_of_row(row) -> ReportPick:
  """A manifest row (writing.ManifestRow, or a csv.DictReader dict of
  str) -> ReportPick without a thumbnail."""
  get = row.get if isinstance(row, Mapping) else (lambda key, default=None:
                                                  getattr(row, key, default))
  return ReportPick(get("class_name", "") or "", _int(get("label")),
                    get("split", "") or SPLIT, _int(get("rank")),
                    get("relative_path", "") or "", get("source_path", "") or "",
                    _int(get("source_height"), 0), _int(get("source_width"), 0))


def pick_key(pick: ReportPick) -> Tuple[str, str]:
  """What tells images apart: (class, relative path)."""
  return pick.class_name, pick.relative_path


def thumbnail_order(pick: ReportPick) -> Tuple[int, int, str, str]:
  """Which picks get the thumbnails when there are too many: every class's
  first pick, then every class's second, ..."""
  return pick.rank, pick.label, pick.split, pick.relative_path


def first_picks(picks: Iterable[ReportPick],
                max_per_class: int = DEFAULT_MAX_PER_CLASS) -> List[ReportPick]:
  """The first `max_per_class` picks (by rank) of each class and split, in
  (label, split, rank) order."""
  ordered = sorted(picks, key=lambda p: (p.label, p.class_name, p.split, p.rank,
                                         p.relative_path))
  kept: List[ReportPick] = []
  count: Dict[Tuple[str, str], int] = {}
  for pick in ordered:
    group = (pick.class_name, pick.split)
    if count.get(group, 0) < max_per_class:
      count[group] = count.get(group, 0) + 1
      kept.append(pick)
  return kept


def thumbnail_keys(picks: Iterable[ReportPick],
                   max_thumbnails: int = DEFAULT_MAX_THUMBNAILS) -> set:
  """The pick_keys of the picks that get a thumbnail (thumbnail_order)."""
  return {pick_key(p) for p in sorted(picks, key=thumbnail_order)[:max_thumbnails]}


def with_thumbnails(picks: Sequence[ReportPick], thumbnails: Iterable[ReportPick],
                    max_thumbnails: int = DEFAULT_MAX_THUMBNAILS) -> List[ReportPick]:
  """`picks` (from the manifest), each given the thumbnail of the same image
  in `thumbnails` when it is among the first `max_thumbnails`."""
  found = {pick_key(t): t.thumbnail for t in thumbnails if t.thumbnail}
  keep = thumbnail_keys(picks, max_thumbnails)
  return [p._replace(thumbnail=found.get(pick_key(p), b"") if pick_key(p) in keep else b"")
          for p in picks]


def report_title(summary: Mapping) -> str:
  """The page's title: output folder, seed, what was asked per class."""
  config = summary.get("config") or {}
  asked = config.get("splits") or (
      f"{summary.get('samples_per_class', config.get('samples_per_class', '?'))} per class")
  return (f"exemplar report \u00b7 {config.get('output_dir', '')} \u00b7 "
          f"seed {config.get('seed')} \u00b7 {asked}")


# --- HTML --------------------------------------------------------------------

_CSS = """\
:root{--ink:#1b1f24;--muted:#5b6570;--line:#d8dde3;--short:#fff4d6;--shortb:#b7791f;
--empty:#fde2e1;--emptyb:#b42318;--well:#eceff3}
*{box-sizing:border-box}
body{margin:0;color:var(--ink);
font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
header,section{padding:12px 20px}
h1{font-size:20px;margin:0 0 4px;overflow-wrap:anywhere}
h2{font-size:16px;margin:8px 0}
nav a{margin-right:14px}
.muted{color:var(--muted)}
table{border-collapse:collapse}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa;position:sticky;top:0;z-index:1}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.controls{position:sticky;top:0;background:#fff;padding:8px 0;z-index:2;
display:flex;gap:16px;align-items:center;flex-wrap:wrap}
#filter{font:inherit;padding:4px 8px;width:22em}
#class-table th{top:44px}
.cname{font-weight:600;overflow-wrap:anywhere;max-width:18em}
tr.short{background:var(--short)}
tr.empty{background:var(--empty)}
.badge{display:inline-block;font-size:11px;font-weight:600;border-radius:3px;
padding:0 5px;margin-left:6px;border:1px solid}
.badge.short{color:var(--shortb);border-color:var(--shortb)}
.badge.empty{color:var(--emptyb);border-color:var(--emptyb)}
.badge.change{color:#1f5fa8;border-color:#1f5fa8}
.picks{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;width:120px}
figure img,.nothumb{display:block;width:112px;height:112px;object-fit:contain;
background:var(--well)}
.nothumb{display:flex;align-items:center;justify-content:center;color:var(--muted);font-size:12px}
figcaption{font-size:11px;line-height:1.3}
figcaption span{display:block;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
figcaption .src{white-space:normal;overflow-wrap:anywhere;max-height:5.2em}
.file{font-weight:600}
.kv td:first-child{font-weight:600;white-space:nowrap}
.kv td{overflow-wrap:anywhere;max-width:70em}
.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}
[hidden]{display:none!important}
"""

_JS = """\
(function () {
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr.class-row"));
  var names = rows.map(function (r) { return r.getAttribute("data-name").toLowerCase(); });
  var box = document.getElementById("filter");
  var flagged = document.getElementById("only-flagged");
  var shown = document.getElementById("shown");
  function apply() {
    var text = box.value.trim().toLowerCase(), n = 0;
    for (var i = 0; i < rows.length; i++) {
      var show = names[i].indexOf(text) >= 0 && (!flagged.checked
          || rows[i].classList.contains("short") || rows[i].classList.contains("empty"));
      rows[i].hidden = !show;
      if (show) { n++; }
    }
    shown.textContent = n + " of " + rows.length + " classes shown";
  }
  box.addEventListener("input", apply);
  flagged.addEventListener("change", apply);
  apply();
})();
"""


def _csp_hash(text: str) -> str:
  return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode(
      "ascii") + "'"


# Nothing may load but this CSS, this JS and data: images.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; img-src data:; style-src {_csp_hash(_CSS)}; "
    f"script-src {_csp_hash(_JS)}; base-uri 'none'; form-action 'none'")


def _clean(text) -> str:
  """Any value -> text HTML can hold: C0/C1 controls (but tab and newline)
  and lone surrogates become U+FFFD."""
  text = str(text)
  if text.isprintable():
    return text
  out = []
  for char in text:
    code = ord(char)
    if (code < 32 and char not in "\t\n") or 0x7f <= code < 0xa0 or 0xd800 <= code < 0xe000:
      out.append("\ufffd")
    else:
      out.append(char)
  return "".join(out)


def _e(value) -> str:
  """Escaped for HTML text and double-quoted attributes."""
  return html.escape(_clean(value), quote=True)


def _json(value) -> str:
  return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _plural(n: int, word: str, many: Optional[str] = None) -> str:
  return f"{n:,} {word if n == 1 else (many or word + 's')}"


def _pick_html(pick: ReportPick, show_split: bool) -> str:
  name = posixpath.basename(pick.relative_path) or pick.relative_path
  if pick.thumbnail:
    image = ('<img src="data:image/jpeg;base64,'
             + base64.b64encode(pick.thumbnail).decode("ascii")
             + f'" alt="{_e(name)}" loading="lazy" decoding="async">')
  else:
    image = ('<div class="nothumb" title="none made: written without a contact sheet, '
             f'or beyond the first {DEFAULT_MAX_THUMBNAILS:,} picks">no thumbnail</div>')
  size = (f"{pick.source_width}\u00d7{pick.source_height}"
          if pick.source_width > 0 and pick.source_height > 0 else "size unknown")
  meta = size + (f" \u00b7 {_e(pick.split)}" if show_split else "") + f" \u00b7 #{pick.rank}"
  return (f'<figure class="pick">{image}<figcaption>'
          f'<span class="file" title="{_e(pick.relative_path)}">{_e(name)}</span>'
          f'<span class="src muted" title="{_e(pick.source_path)}">{_e(pick.source_path)}</span>'
          f'<span class="meta muted">{meta}</span></figcaption></figure>')


def _class_rows(summary: Mapping, picks: Sequence[ReportPick], splits: List[str],
                show_split: bool) -> List[str]:
  by_class: Dict[str, List[ReportPick]] = {}
  split_index = {name: i for i, name in enumerate(splits)}
  for pick in picks:
    by_class.setdefault(pick.class_name, []).append(pick)
  short = set(summary.get("classes_short") or [])
  short_in: Dict[str, List[str]] = {}
  for split in summary.get("splits") or []:
    for name in split.get("classes_short") or []:
      short_in.setdefault(name, []).append(split.get("name", ""))
  changed = ((summary.get("changes") or {}).get("per_class") or {})
  rows = []
  for entry in sorted(summary.get("per_class") or [], key=lambda e: e.get("label", 0)):
    name = entry.get("class_name", "")
    stored = entry.get("sampled", 0)
    mine = sorted(by_class.get(name, []), key=lambda p: (
        split_index.get(p.split, len(splits)), p.split, p.rank, p.relative_path))
    flags = []
    badges = ""
    if not stored:
      flags.append("empty")
      badges += '<span class="badge empty" title="no image stored">empty</span>'
    if name in short:
      flags.append("short")
      where = (" in " + ", ".join(short_in[name])) if name in short_in and show_split else ""
      badges += (f'<span class="badge short" title="fewer images than asked for{_e(where)}">'
                 f'short{_e(where)}</span>')
    if name in changed:
      counts = changed[name]
      text = (f"+{counts.get('added', 0)} \u2212{counts.get('removed', 0)}"
              + "".join(f" {counts[k]} {k.replace('_', ' ')}"
                        for k in ("moved_split", "moved_shard", "rewritten") if counts.get(k)))
      badges += ('<span class="badge change" title="changes since the last dataset">'
                 f'{_e(text)}</span>')
    cells = [f'<td class="n">{_e(entry.get("label", ""))}</td>',
             f'<td><span class="cname">{_e(name)}</span>{badges}</td>',
             f'<td class="n">{_e(entry.get("files_seen", ""))}</td>',
             f'<td class="n">{_e(stored)}</td>',
             f'<td class="n">{_e(entry.get("failed", 0))}</td>']
    if show_split:
      per_split = entry.get("per_split") or {}
      cells += [f'<td class="n">{_e(per_split.get(split, 0))}</td>' for split in splits]
    if mine:
      more = stored - len(mine)
      figures = "".join(_pick_html(p, show_split) for p in mine)
      note = (f'<div class="muted">showing {len(mine)} of {stored:,}; every image is in '
              f'{MANIFEST_FILE}</div>' if more > 0 else "")
      cells.append(f'<td><div class="picks">{figures}</div>{note}</td>')
    else:
      cells.append('<td class="muted">no image stored</td>' if not stored else
                   f'<td class="muted">{_plural(stored, "image")} (see {MANIFEST_FILE})</td>')
    css = " ".join(["class-row"] + flags)
    rows.append(f'<tr class="{css}" data-name="{_e(name)}">' + "".join(cells) + "</tr>")
  return rows


def _changes_html(changes: Mapping, max_classes: int) -> str:
  kinds = ("added", "removed", "moved_split", "moved_shard", "rewritten", "rank_changed",
           "unchanged")
  totals = "".join(f'<tr><td>{k.replace("_", " ")}</td>'
                   f'<td class="n">{_e(changes.get(k, 0))}</td></tr>' for k in kinds)
  per_class = changes.get("per_class") or {}
  names = list(per_class)
  body = "".join(
      f'<tr><td class="cname">{_e(name)}</td>'
      + "".join(f'<td class="n">{_e(per_class[name].get(k, 0))}</td>' for k in kinds[:5])
      + "</tr>" for name in names[:max_classes])
  more = (f'<p class="muted">\u2026 and {len(names) - max_classes:,} more classes: see '
          f'{CHANGES_FILE}</p>' if len(names) > max_classes else "")
  per_class_html = ("<table><thead><tr><th>class</th>" + "".join(
      f'<th class="n">{k.replace("_", " ")}</th>' for k in kinds[:5]) + "</tr></thead><tbody>"
      + body + "</tbody></table>" + more) if names else '<p class="muted">no class changed</p>'
  return (f'<section id="changes"><h2>Changes since the previous dataset</h2>'
          f'<p class="muted">compared to <span class="mono">{_e(changes.get("compared_to") or "")}'
          f'</span>; one row per image in {CHANGES_FILE}</p>'
          f'<table class="kv"><tbody>{totals}</tbody></table><h2>Per class</h2>'
          f'{per_class_html}</section>')


def _errors_html(errors: Sequence[Sequence[str]], max_errors: int) -> str:
  if not errors:
    return (f'<section id="errors"><h2>Errors</h2><p class="muted">none: every file '
            f'picked was used ({ERRORS_FILE} is empty)</p></section>')
  body = "".join(
      "<tr>" + "".join(f'<td{" class=mono" if i in (1, 2) else ""}>{_e(v)}</td>'
                       for i, v in enumerate((list(row) + [""] * 4)[:4])) + "</tr>"
      for row in errors[:max_errors])
  more = (f'<p class="muted">\u2026 and {len(errors) - max_errors:,} more: see '
          f'{ERRORS_FILE}</p>' if len(errors) > max_errors else "")
  return (f'<section id="errors"><h2>Errors ({len(errors):,})</h2>'
          f'<p class="muted">files that could not be used, and why ({ERRORS_FILE})</p>'
          f'<table><thead><tr><th>class</th><th>relative path</th><th>source path</th>'
          f'<th>reason</th></tr></thead><tbody>{body}</tbody></table>{more}</section>')


def _config_html(summary: Mapping) -> str:
  config = summary.get("config") or {}
  rows = []
  for key in sorted(config):
    value = config[key]
    if key == "class_names" and isinstance(value, list) and len(value) > 20:
      text = f"{len(value)} given: " + _json(value[:20])[:-1] + ", \u2026]"
    else:
      text = _json(value)
    rows.append(f'<tr><td>{_e(key)}</td><td class="mono">{_e(text)}</td></tr>')
  for section in ("versions", "run"):
    values = summary.get(section) or {}
    for key in sorted(values):
      rows.append(f'<tr><td>{_e(section)}.{_e(key)}</td><td class="mono">'
                  f'{_e(values[key] if isinstance(values[key], str) else _json(values[key]))}'
                  '</td></tr>')
  return (f'<section id="config"><h2>Configuration</h2><p class="muted">as '
          f'{SUMMARY_JSON} records it; the same input, seed and flags give the same '
          f'picks</p><table class="kv"><tbody>{"".join(rows)}</tbody></table></section>')


def render_report(summary: Dict, picks: Sequence[ReportPick],
                  errors: Sequence[Sequence[str]], title: str,
                  max_errors: int = DEFAULT_MAX_ERRORS,
                  max_changed_classes: int = DEFAULT_MAX_CHANGED_CLASSES) -> str:
  """summary.json's content, the picks to show and errors.csv's rows
  (class_name, relative_path, source_path, reason) -> the page's HTML.

  Pure: the same arguments give the same text. Picks of a class not in
  summary["per_class"] are not shown; each pick is shown as given (the caller
  bounds them: first_picks, with_thumbnails)."""
  picks = [ReportPick(*p) for p in picks]
  splits = [s.get("name", SPLIT) for s in summary.get("splits") or []] or [SPLIT]
  show_split = len(splits) > 1
  config = summary.get("config") or {}
  per_class = summary.get("per_class") or []
  num_classes = summary.get("num_classes", len(per_class))
  short = summary.get("classes_short") or []
  empty = sum(1 for e in per_class if not e.get("sampled"))
  totals = [f"{_plural(summary.get('num_examples', 0), 'image')} from "
            f"{_plural(num_classes, 'class', 'classes')}",
            f"{summary.get('files_seen', 0):,} files seen",
            f"{summary.get('num_failed', 0):,} failed",
            f"{len(short):,} short", f"{empty:,} empty",
            f"seed {_json(config.get('seed'))}"]
  if show_split:
    totals.append("splits " + ", ".join(
        f"{s.get('name')} {s.get('num_examples', 0):,}" for s in summary["splits"]))
  changes = summary.get("changes")
  nav = ['<a href="#classes">classes</a>']
  if changes:
    nav.append('<a href="#changes">changes</a>')
  nav += ['<a href="#errors">errors</a>', '<a href="#config">configuration</a>']
  split_heads = "".join(f'<th class="n">{_e(s)}</th>' for s in splits) if show_split else ""
  rows = _class_rows(summary, picks, splits, show_split)
  parts = [
      "<!DOCTYPE html>",
      '<html lang="en"><head><meta charset="utf-8">',
      f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">',
      '<meta name="viewport" content="width=device-width, initial-scale=1">',
      '<meta name="referrer" content="no-referrer">',
      f"<title>{_e(title)}</title>",
      '<link rel="icon" href="data:,">',
      f"<style>{_CSS}</style></head><body>",
      f'<header><h1>{_e(title)}</h1><p class="muted">{_e(" · ".join(totals))}</p>'
      f'<nav>{"".join(nav)}</nav></header>',
      '<section id="classes"><h2>Classes</h2>',
      '<div class="controls"><label>Filter by class name '
      '<input id="filter" type="search" placeholder="part of a class name" '
      'autocomplete="off" spellcheck="false"></label>'
      '<label><input id="only-flagged" type="checkbox"> short or empty only</label>'
      f'<span id="shown" class="muted">{len(rows)} of {len(rows)} classes shown</span></div>',
      '<table id="class-table"><thead><tr><th class="n">label</th><th>class</th>'
      '<th class="n">seen</th><th class="n">stored</th><th class="n">failed</th>'
      f"{split_heads}<th>picks</th></tr></thead><tbody>",
      "\n".join(rows),
      "</tbody></table></section>",
  ]
  if changes:
    parts.append(_changes_html(changes, max_changed_classes))
  parts += [_errors_html(list(errors), max_errors), _config_html(summary),
            f"<script>{_JS}</script>", "</body></html>", ""]
  return "\n".join(parts)
