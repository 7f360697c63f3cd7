"""report.html: the pure renderer, the pipeline's and exemplar-inspect's
pages, and the page in a real headless browser.

The browser is Debian's chromium (`/usr/bin/chromium`, which scripts/env.sh
installs when run as root) driven by the `playwright` package with
`executable_path`: no browser is downloaded, ever. Without chromium the
browser tests skip, saying so.

`python -m tests.test_report docs/report.png` regenerates the screenshot in
README.md from a real run on the demo tree.
"""

from __future__ import annotations

import base64
import html.parser
import json
import os
import re
import shutil
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import pytest

from exemplar.transforms import report
from exemplar.transforms.names import REPORT_FILE
from exemplar.transforms.report import ReportPick
from tests.conftest import make_tree, run_cli

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
JPEG = bytes.fromhex("ffd8ffe000104a464946000101") + b"\0" * 8  # only embedded, never decoded here
HOSTILE = "<b>&amp;\"x'</b> \u00fcn\u00efc\u00f8d\u00e9 \u732b"


# --- helpers -----------------------------------------------------------------


def summary_of(classes: List[Dict], splits=("train",), short=(), changes=None,
               config=None) -> Dict:
  """A summary.json-like dict; classes: [{name, seen, sampled, per_split?}]."""
  per_class = [{"class_name": c["name"], "label": i, "files_seen": c.get("seen", 0),
                "sampled": c.get("sampled", 0), "failed": c.get("failed", 0),
                "per_split": c.get("per_split", {splits[0]: c.get("sampled", 0)})}
               for i, c in enumerate(classes)]
  summary = {
      "dataset": "exemplar", "num_classes": len(classes),
      "num_examples": sum(c.get("sampled", 0) for c in classes),
      "num_failed": sum(c.get("failed", 0) for c in classes),
      "files_seen": sum(c.get("seen", 0) for c in classes),
      "samples_per_class": 2, "classes_short": list(short),
      "splits": [{"name": s, "num_examples": 0, "num_shards": 1, "classes_short": []}
                 for s in splits],
      "per_class": per_class,
      "config": config or {"seed": 7, "output_dir": "/out/<x>", "samples_per_class": 2},
      "versions": {"exemplar": "0.2.0"},
      "run": {"finished": "2026-01-01T00:00:00Z"},
  }
  if changes is not None:
    summary["changes"] = changes
  return summary


def pick(class_name: str, label: int, rank: int, split: str = "train",
         thumbnail: bytes = JPEG, name: Optional[str] = None) -> ReportPick:
  name = name or f"img_{rank}.jpg"
  return ReportPick(class_name, label, split, rank, f"{class_name}/{name}",
                    f"/data/{class_name}/{name}", 480, 640, thumbnail)


class _Rows(html.parser.HTMLParser):
  """The class rows of a page: [(css classes, data-name)], and every src/href."""

  def __init__(self):
    super().__init__()
    self.rows = []
    self.links = []

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == "tr" and "class-row" in (attrs.get("class") or "").split():
      self.rows.append((set(attrs["class"].split()), attrs.get("data-name")))
    for key in ("src", "href", "action", "srcset", "data"):
      if key in attrs:
        self.links.append(attrs[key])


def parse(page: str) -> _Rows:
  parser = _Rows()
  parser.feed(page)
  parser.close()
  return parser


def sample_report(with_changes: bool = True):
  """A small rich report: hostile names, an empty and a short class, two
  splits, errors, changes."""
  classes = [{"name": "apple", "seen": 9, "sampled": 3, "per_split": {"train": 2, "validation": 1}},
             {"name": HOSTILE, "seen": 4, "sampled": 2, "per_split": {"train": 1, "validation": 1}},
             {"name": "empty one", "seen": 0, "sampled": 0,
              "per_split": {"train": 0, "validation": 0}},
             {"name": "short one", "seen": 1, "sampled": 1, "failed": 1,
              "per_split": {"train": 1, "validation": 0}}]
  changes = {"compared_to": "/out/old", "added": 2, "removed": 1, "moved_split": 0,
             "moved_shard": 1, "rewritten": 0, "rank_changed": 0, "unchanged": 3,
             "per_class": {"apple": {"added": 2, "removed": 1, "moved_split": 0,
                                     "moved_shard": 1, "rewritten": 0}}}
  summary = summary_of(classes, splits=("train", "validation"),
                       short=["empty one", "short one"],
                       changes=changes if with_changes else None)
  summary["splits"][0]["classes_short"] = ["empty one"]
  summary["splits"][1]["classes_short"] = ["empty one", "short one"]
  picks = [pick("apple", 0, 0), pick("apple", 0, 1),
           pick("apple", 0, 0, "validation", name="v.png"),
           pick(HOSTILE, 1, 0, name="<img src=x onerror=alert(1)>.jpg"),
           pick(HOSTILE, 1, 0, "validation", thumbnail=b""),
           pick("short one", 3, 0)]
  errors = [("short one", "short one/bad.jpg", "/data/short one/bad.jpg",
             "cannot decode: </td><script>alert(1)</script>")]
  return summary, picks, errors


# --- the pure renderer -------------------------------------------------------


def test_every_class_has_a_row_in_label_order_with_empty_and_short_marked():
  summary, picks, errors = sample_report()
  page = report.render_report(summary, picks, errors, "t")
  rows = parse(page).rows
  assert [name for _, name in rows] == ["apple", HOSTILE, "empty one", "short one"]
  assert [sorted(css - {"class-row"}) for css, _ in rows] == [[], [], ["empty", "short"],
                                                              ["short"]]
  assert page.count('<td class="muted">no image stored</td>') == 1
  assert '<span class="badge empty"' in page and '>short in validation</span>' in page


def test_everything_is_escaped():
  summary, picks, errors = sample_report()
  page = report.render_report(summary, picks, errors, "<title>&")
  for raw in ("<b>", "onerror=alert(1)>", "</td><script>", "<title>&<"):
    assert raw not in page
  assert "&lt;b&gt;&amp;amp;&quot;x&#x27;&lt;/b&gt; \u00fcn\u00efc\u00f8d\u00e9 \u732b" in page
  assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in page
  assert page.count("<script>") == 1  # only the filter's
  # Control characters and lone surrogates cannot break the page's encoding.
  odd = summary_of([{"name": "a\x01b\udcff", "sampled": 0}])
  assert "a\ufffdb\ufffd" in report.render_report(odd, [], [], "t").encode("utf-8").decode()


def test_the_page_loads_nothing():
  summary, picks, errors = sample_report()
  page = report.render_report(summary, picks, errors, "t")
  links = parse(page).links
  assert links and all(link.startswith(("data:", "#")) for link in links), links
  assert not re.search(r"https?://|//[a-z]", page.replace("http-equiv", ""))
  assert f'content="{report.CONTENT_SECURITY_POLICY}"' in page
  assert "default-src 'none'" in report.CONTENT_SECURITY_POLICY


def test_the_same_input_gives_the_same_bytes_in_any_pick_order():
  summary, picks, errors = sample_report()
  first = report.render_report(summary, picks, errors, "t")
  assert report.render_report(json.loads(json.dumps(summary)), list(reversed(picks)),
                              errors, "t") == first
  assert base64.b64encode(JPEG).decode() in first


def test_splits_and_changes_are_shown_only_when_there_are_some():
  summary, picks, errors = sample_report()
  page = report.render_report(summary, picks, errors, "t")
  assert '<th class="n">validation</th>' in page and " \u00b7 validation \u00b7 #0" in page
  assert 'id="changes"' in page and "+2 \u22121 1 moved shard" in page
  summary, picks, errors = sample_report(with_changes=False)
  one_split = summary_of([{"name": "apple", "sampled": 2, "seen": 3}])
  page = report.render_report(one_split, [pick("apple", 0, 0)], [], "t")
  assert "validation" not in page and 'id="changes"' not in page
  assert "\u00b7 train \u00b7" not in page and "none: every file" in page


def test_first_picks_and_the_thumbnail_cap_keep_every_class_first_pick():
  picks = [pick(f"c{label}", label, rank) for label in range(3) for rank in range(4)]
  kept = report.first_picks(reversed(picks), max_per_class=2)
  assert [(p.label, p.rank) for p in kept] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
  thumbs = [p._replace(thumbnail=b"T%d%d" % (p.label, p.rank)) for p in picks]
  given = report.with_thumbnails([p._replace(thumbnail=b"") for p in kept], thumbs,
                                 max_thumbnails=4)
  assert [p.thumbnail for p in given] == [b"T00", b"T01", b"T10", b"", b"T20", b""]


def test_a_pick_from_a_manifest_row_or_a_decoded_image():
  row = {"class_name": "a", "label": "3", "rank": "1", "relative_path": "a/x.jpg",
         "source_path": "/d/a/x.jpg", "sha256": "00", "source_height": "4",
         "source_width": "5", "shard": "s", "split": ""}
  assert report.pick_of_row(row) == ReportPick("a", 3, "train", 1, "a/x.jpg", "/d/a/x.jpg",
                                               4, 5, b"")
  from exemplar.transforms.decoding import DecodedImage
  image = DecodedImage("a", 3, 1, "a/x.jpg", "/d/a/x.jpg", b"", 4, 5, "00", b"J", "validation")
  assert report.pick_of(image) == ReportPick("a", 3, "validation", 1, "a/x.jpg",
                                             "/d/a/x.jpg", 4, 5, b"J")


def test_a_capped_class_and_error_list_say_where_the_rest_is():
  summary = summary_of([{"name": "a", "sampled": 30, "seen": 30}])
  errors = [("a", f"a/{i}.jpg", f"/d/a/{i}.jpg", "cannot decode") for i in range(5)]
  page = report.render_report(summary, [pick("a", 0, r) for r in range(10)], errors, "t",
                              max_errors=3)
  assert "showing 10 of 30; every image is in manifest.csv" in page
  assert "\u2026 and 2 more: see errors.csv" in page


def test_inspect_parses_html():
  from exemplar import inspect_cli
  assert inspect_cli.parse_args(["o", "--html", "r.html"]).html == "r.html"
  assert inspect_cli.parse_args(["o"]).html is None
  with pytest.raises(inspect_cli.UsageError, match="--html needs a file name"):
    inspect_cli.parse_args(["o", "--html", "d/"])


# --- in a real browser -------------------------------------------------------


def chromium_path() -> Optional[str]:
  for candidate in (os.environ.get("EXEMPLAR_CHROMIUM"), shutil.which("chromium"),
                    "/usr/bin/chromium"):
    if candidate and os.access(candidate, os.X_OK):
      return candidate
  return None


@pytest.fixture(scope="module")
def browser():
  path = chromium_path()
  if path is None:
    pytest.skip("no chromium: Debian's chromium package is needed (scripts/env.sh "
                "installs it when run as root: apt-get install chromium)")
  try:
    from playwright.sync_api import sync_playwright
  except ImportError:
    pytest.skip("the playwright package is missing: pip install -e '.[test]'")
  with sync_playwright() as p:
    launched = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


class Loaded:
  """A page opened from a file, with what went wrong while loading."""

  def __init__(self, browser, path: str, width: int = 1200, height: int = 900):
    self.page = browser.new_page(viewport={"width": width, "height": height})
    self.problems: List[str] = []
    self.requests: List[str] = []
    self.page.on("console", lambda m: m.type in ("error", "warning") and self.problems.append(
        f"console {m.type}: {m.text}"))
    self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
    self.page.on("requestfailed", lambda r: self.problems.append(f"failed request: {r.url}"))
    self.page.on("request", lambda r: self.requests.append(r.url))
    start = time.perf_counter()
    self.page.goto("file://" + os.path.abspath(path), wait_until="load")
    self.load_seconds = time.perf_counter() - start

  def visible_names(self) -> List[str]:
    return self.page.eval_on_selector_all(
        "tr.class-row", "rows => rows.filter(r => !r.hidden).map(r => r.dataset.name)")

  def filter(self, text: str) -> None:
    self.page.fill("#filter", text)

  def close(self):
    self.page.close()


def write(tmp_path, name: str, text: str) -> str:
  path = str(tmp_path / name)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  return path


def check_page(loaded: Loaded, path: str, names: List[str]) -> None:
  """No console error, no request but the page itself, a row per class."""
  assert loaded.problems == [], loaded.problems
  assert all(url.startswith("data:") or url == "file://" + os.path.abspath(path)
             for url in loaded.requests), loaded.requests
  assert loaded.visible_names() == names
  assert loaded.page.inner_text("#shown") == f"{len(names)} of {len(names)} classes shown"


@pytest.mark.slow
def test_the_page_in_a_browser_filters_and_marks_classes(browser, tmp_path):
  summary, picks, errors = sample_report()
  path = write(tmp_path, "r.html", report.render_report(summary, picks, errors, "t"))
  loaded = Loaded(browser, path)
  names = ["apple", HOSTILE, "empty one", "short one"]
  check_page(loaded, path, names)
  page = loaded.page
  assert page.title() == "t"
  loaded.filter("ONE")
  assert loaded.visible_names() == ["empty one", "short one"]
  assert page.inner_text("#shown") == "2 of 4 classes shown"
  loaded.filter("\u732b")  # any script, any case
  assert loaded.visible_names() == [HOSTILE]
  loaded.filter("no such class")
  assert loaded.visible_names() == []
  loaded.filter("")
  page.check("#only-flagged")
  assert loaded.visible_names() == ["empty one", "short one"]
  page.uncheck("#only-flagged")
  assert loaded.visible_names() == names
  badges = page.eval_on_selector_all(
      "tr.class-row", "rows => rows.map(r => [...r.querySelectorAll('.badge')].map("
      "b => b.textContent))")
  assert badges == [["+2 \u22121 1 moved shard"], [], ["empty", "short in train, validation"],
                    ["short in validation"]]
  # The hostile names are text, nothing ran: one thumbnail decoded per pick shown.
  assert page.evaluate("document.querySelectorAll('img').length") == 5
  assert page.inner_text("#errors") .count("alert(1)") == 1
  assert loaded.problems == []
  loaded.close()


def photo_thumbnails(count: int) -> List[bytes]:
  """Distinct 128-pixel JPEG thumbnails of real photographs (scikit-image's)."""
  from skimage import data
  from exemplar.transforms.contact_sheet import thumbnail_jpeg
  photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(),
            np.stack([data.camera()] * 3, -1), np.stack([data.coins()] * 3, -1)]
  thumbs = []
  for i in range(count):
    photo = photos[i % len(photos)]
    shift = (i // len(photos)) * 7
    thumbs.append(thumbnail_jpeg(np.ascontiguousarray(photo[shift:, shift:]), 128))
  return thumbs


@pytest.mark.slow
def test_a_thousand_classes_stay_light_and_fast(browser, tmp_path):
  num = 1000
  classes = [{"name": f"class_{i:04d}", "seen": 5, "sampled": 0 if i % 97 == 0 else 1}
             for i in range(num)]
  short = [c["name"] for c in classes if not c["sampled"]]
  summary = summary_of(classes, short=short)
  thumbs = photo_thumbnails(60)
  picks = [pick(c["name"], i, 0, thumbnail=thumbs[i % len(thumbs)])
           for i, c in enumerate(classes) if c["sampled"]]
  errors = [(c, f"{c}/bad.jpg", f"/d/{c}/bad.jpg", "cannot decode") for c in short]
  start = time.perf_counter()
  text = report.render_report(summary, picks, errors, "a thousand classes")
  render_seconds = time.perf_counter() - start
  path = write(tmp_path, "r.html", text)
  size = os.path.getsize(path)
  loaded = Loaded(browser, path)
  names = [c["name"] for c in classes]
  check_page(loaded, path, names)
  page = loaded.page
  timing = page.evaluate(
      "(() => { const n = performance.getEntriesByType('navigation')[0];"
      " return [n.domContentLoadedEventEnd, n.loadEventEnd]; })()")
  start = time.perf_counter()
  page.evaluate("Promise.all([...document.images].map(i => (i.loading = 'eager', i.decode())))")
  decode_seconds = time.perf_counter() - start
  start = time.perf_counter()
  loaded.filter("class_09")
  shown = loaded.visible_names()
  filter_seconds = time.perf_counter() - start
  assert shown == [n for n in names if "class_09" in n] and len(shown) == 100
  loaded.filter("")
  page.check("#only-flagged")
  assert loaded.visible_names() == short
  assert loaded.problems == []
  thumbs_kb = sum(len(p.thumbnail) for p in picks) / len(picks) / 1024
  print(f"\nreport at {num} classes: {size / 1e6:.2f} MB ({len(picks)} thumbnails, "
        f"{thumbs_kb:.1f} kB each), rendered in {render_seconds:.2f} s; in chromium: "
        f"goto+load {loaded.load_seconds:.2f} s (DOMContentLoaded {timing[0] / 1000:.2f} s, "
        f"load {timing[1] / 1000:.2f} s), every thumbnail decoded in {decode_seconds:.2f} s, "
        f"filter {filter_seconds * 1000:.0f} ms")
  assert size < 20e6 and loaded.load_seconds < 10 and timing[1] < 10000
  loaded.close()


def take_screenshot(browser, report_path: str, png_path: str) -> None:
  loaded = Loaded(browser, report_path, width=1000, height=760)
  assert loaded.problems == [], loaded.problems
  loaded.page.screenshot(path=png_path)
  loaded.close()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> str:
  out = str(tmp_path_factory.mktemp("demo") / "out")
  assert run_cli(["--output_dir", out, "--image_size", "64", "64"]) == 0
  return out


@pytest.mark.slow
def test_the_demo_run_writes_the_report_and_inspect_rebuilds_it(demo_run, browser, tmp_path,
                                                                capsys):
  path = os.path.join(demo_run, REPORT_FILE)
  record = json.load(open(os.path.join(demo_run, "exemplar_files.json")))["files"]
  assert record[REPORT_FILE] == os.path.getsize(path)
  summary = json.load(open(os.path.join(demo_run, "summary.json")))
  names = [e["class_name"] for e in summary["per_class"]]
  loaded = Loaded(browser, path)
  check_page(loaded, path, names)
  assert loaded.page.evaluate("document.querySelectorAll('img').length") == len(names)
  loaded.filter("co")
  assert loaded.visible_names() == [n for n in names if "co" in n]
  loaded.close()
  png = str(tmp_path / "report.png")
  take_screenshot(browser, path, png)
  assert os.path.getsize(png) > 10000
  # exemplar-inspect --html: the same page from the stored PNGs, byte for byte.
  from exemplar import inspect_cli
  rebuilt = str(tmp_path / "again.html")
  assert inspect_cli.main([demo_run, "--html", rebuilt]) == 0
  assert open(rebuilt, "rb").read() == open(path, "rb").read()
  assert f"report: {len(names)} images of {len(names)} classes" in capsys.readouterr().out
  assert inspect_cli.main([demo_run, "--html", rebuilt]) == 2
  err = capsys.readouterr().err
  assert err.startswith("exemplar-inspect: error: --html: ") and "already exists" in err


@pytest.mark.slow
def test_a_run_with_splits_and_no_sheet_then_a_rerun_shows_its_changes(browser, tmp_path):
  root = str(tmp_path / "images")
  make_tree(root, {"apple": 5, "banana": 3, "cherry": 1})
  os.makedirs(os.path.join(root, "durian"))  # no images: empty
  out = str(tmp_path / "out")
  argv = ["--input_dir", root, "--output_dir", out, "--splits", "train=1,validation=1",
          "--image_size", "16", "16", "--no_contact_sheet"]
  assert run_cli(argv) == 0
  first = open(os.path.join(out, REPORT_FILE), encoding="utf-8").read()
  assert "no thumbnail" in first and "<img" not in first and 'id="changes"' not in first
  assert '<th class="n">validation</th>' in first
  rows = parse(first).rows
  assert [name for _, name in rows] == ["apple", "banana", "cherry", "durian"]
  assert [sorted(css - {"class-row"}) for css, _ in rows] == [[], [], ["short"],
                                                              ["empty", "short"]]
  make_tree(os.path.join(tmp_path, "more"), {"cherry": 2}, seed=3)
  shutil.move(os.path.join(tmp_path, "more", "cherry", "img_001.png"),
              os.path.join(root, "cherry", "img_new.png"))
  assert run_cli(argv[:-1] + ["--overwrite"]) == 0
  path = os.path.join(out, REPORT_FILE)
  second = open(path, encoding="utf-8").read()
  assert 'id="changes"' in second and "<img" in second
  assert [sorted(css - {"class-row"}) for css, _ in parse(second).rows] == [
      [], [], [], ["empty", "short"]]
  loaded = Loaded(browser, path)
  check_page(loaded, path, ["apple", "banana", "cherry", "durian"])
  assert "+1" in loaded.page.inner_text("tr.class-row:nth-child(3) .badge.change")
  loaded.close()


def main(argv: List[str]) -> int:
  """python -m tests.test_report PNG: the screenshot of the demo run's report."""
  import tempfile
  from playwright.sync_api import sync_playwright
  png = os.path.abspath(argv[0] if argv else "docs/report.png")
  with tempfile.TemporaryDirectory() as scratch:
    os.chdir(scratch)  # the page names the output folder as given: exemplar_output
    out = os.path.join(scratch, "exemplar_output")
    if run_cli(["--output_dir", "exemplar_output", "--image_size", "64", "64"]) != 0:
      return 1
    with sync_playwright() as p:
      launched = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
      take_screenshot(launched, os.path.join(out, REPORT_FILE), png)
      launched.close()
  print(f"wrote {png} ({os.path.getsize(png):,} bytes)")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
