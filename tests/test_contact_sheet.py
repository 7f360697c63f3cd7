"""The contact sheet: layout, pages, odd images and names, and the Beam step."""

from __future__ import annotations

import io
import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from exemplar.transforms import contact_sheet as cs
from exemplar.transforms.decoding import DecodedImage


def solid(colour, height=16, width=16, channels=3) -> np.ndarray:
  image = np.zeros((height, width, channels), dtype=np.uint8)
  image[:, :] = colour[:channels]
  return image


def colour_of(label: int, rank: int):
  """A distinct, well-separated colour per (label, rank)."""
  value = label * 7 + rank
  return (37 * value % 256, 91 * value % 256, 173 * value % 256)


def png(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def decode_pages(pages):
  return [np.asarray(Image.open(io.BytesIO(p)).convert("RGB")) for p in pages]


class Geometry:
  """Where render_contact_sheet puts things, from its own constants."""

  def __init__(self, pages, cell_size=cs.DEFAULT_CELL_SIZE, note=False):
    self.cell_width = cell_size + 2 * cs._PAD
    self.cell_size = cell_size
    # The header is the first rows that have no cell tint in them.
    first = pages[0]
    tint = np.array(cs._TINTS[0])
    rows = np.where((first == tint).all(axis=2).any(axis=1))[0]
    self.top = int(rows[0])
    col = first[:, cs._MARGIN + 1]
    self.cell_height = int(np.argmax((col[self.top:] == cs._BACKGROUND).all(axis=1)))

  def centre(self, row: int, column: int):
    x = cs._MARGIN + column * (self.cell_width + cs._GAP) + self.cell_width // 2
    y = self.top + row * (self.cell_height + cs._GAP) + cs._PAD + self.cell_size // 2
    return y, x


def test_classes_grouped_in_label_then_rank_order_with_whole_classes_per_row():
  cells = [cs.SheetCell(f"c{label}", label, rank, solid(colour_of(label, rank)))
           for label in range(5) for rank in range(3)]
  shuffled = [cells[i] for i in np.random.default_rng(1).permutation(len(cells))]
  plan = cs.layout(shuffled)
  assert plan.columns % 3 == 0 and plan.num_pages == 1
  order = [(p.cell.label, p.cell.rank) for p in plan.placed]
  assert order == sorted(order)
  for label in range(5):  # a class of k <= columns never wraps
    assert len({p.row for p in plan.placed if p.cell.label == label}) == 1

  pages = decode_pages(cs.render_contact_sheet(shuffled))
  assert len(pages) == 1
  geometry = Geometry(pages)
  for p in plan.placed:
    y, x = geometry.centre(p.row, p.column)
    assert tuple(pages[0][y, x]) == colour_of(p.cell.label, p.cell.rank)


def test_a_class_starts_a_new_row_when_it_does_not_fit_and_never_straddles_pages():
  sizes = [3, 2, 3, 1, 3, 3, 2]
  cells = [cs.SheetCell(f"c{label}", label, rank, solid((0, 0, 0)))
           for label, k in enumerate(sizes) for rank in range(k)]
  plan = cs.layout(cells, max_columns=4, rows_per_page=2)
  assert plan.columns == 3
  for label in range(len(sizes)):
    spots = {(p.page, p.row) for p in plan.placed if p.cell.label == label}
    assert len(spots) == 1, (label, spots)
  # A class longer than a row wraps onto the next row of the same page.
  long = [cs.SheetCell("long", 0, rank, solid((0, 0, 0))) for rank in range(7)]
  plan = cs.layout(long, max_columns=3, rows_per_page=4)
  assert [(p.page, p.row, p.column) for p in plan.placed][:4] == [
      (0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0)]


def test_a_thousand_classes_make_ten_readable_pages_in_label_order():
  cells = [cs.SheetCell(f"class_{label:04d}", label, 0, solid(colour_of(label, 0)))
           for label in range(1000)]
  pages = cs.render_contact_sheet(cells)
  assert len(pages) == 10
  arrays = decode_pages(pages)
  for array in arrays:
    height, width, _ = array.shape
    assert 1000 < width < 2000 and 1000 < height < 2500
  geometry = Geometry(arrays)
  for page, array in enumerate(arrays):
    for label in (page * 100, page * 100 + 57, page * 100 + 99):
      y, x = geometry.centre((label % 100) // 10, label % 10)
      assert tuple(array[y, x]) == colour_of(label, 0)
  assert cs.page_file_names(10)[:2] == ["contact_sheet.png", "contact_sheet-002.png"]
  assert cs.page_file_names(10)[-1] == "contact_sheet-010.png"
  assert cs.page_file_names(1, "out.png") == ["out.png"]


def test_grayscale_transparent_tiny_large_and_broken_images_render_sanely():
  gray = np.full((20, 30), 77, dtype=np.uint8)
  clear = np.zeros((32, 32, 4), dtype=np.uint8)  # fully transparent
  half_red = solid((255, 0, 0, 128), 32, 32, 4)
  big = solid((10, 200, 30), 600, 300)
  cells = [cs.SheetCell("gray", 0, 0, gray),
           cs.SheetCell("gray1", 1, 0, gray[:, :, None]),
           cs.SheetCell("clear", 2, 0, clear),
           cs.SheetCell("half", 3, 0, png(half_red)),
           cs.SheetCell("big", 4, 0, big),
           cs.SheetCell("broken", 5, 0, b"not an image at all"),
           cs.SheetCell("gray-png", 6, 0, png(gray))]
  pages = decode_pages(cs.render_contact_sheet(cells))
  geometry = Geometry(pages)
  sheet = pages[0]
  spot = {p.cell.label: (p.row, p.column) for p in cs.layout(cells).placed}
  at = lambda label: tuple(sheet[geometry.centre(*spot[label])])  # noqa: E731
  assert at(0) == at(1) == at(6) == (77, 77, 77)
  assert at(2) in ((204, 204, 204), (153, 153, 153))  # the checkerboard
  red = at(3)
  assert red[0] > 150 and red[1] == red[2] and red[1] < 120  # red over grey
  assert at(4) == (10, 200, 30)
  # The broken image is crossed out in red, not an exception.
  y0, x0 = geometry.centre(*spot[5])
  well = sheet[y0 - 60:y0 + 60, x0 - 60:x0 + 60].reshape(-1, 3)
  assert ((well[:, 0] > 150) & (well[:, 1] < 80)).any()
  # The big image was shrunk into the cell: its top edge is inside the well.
  y4, x4 = geometry.centre(*spot[4])
  assert tuple(sheet[y4 - geometry.cell_size // 2, x4]) == (10, 200, 30)
  assert tuple(sheet[y4 - geometry.cell_size // 2 - 1, x4]) != (10, 200, 30)
  with pytest.raises(ValueError):
    cs.render_contact_sheet([cs.SheetCell("float", 0, 0, np.zeros((4, 4, 3)))])


def test_long_and_unicode_names_are_elided_inside_their_cell():
  font = cs._font(13)
  for name in ["x" * 300, "日本語のクラス名前です" * 5, "Ünïcödé ßtraße " * 10,
               "new\nline\ttab" * 9, "רשימה עברית ארוכה מאוד מאוד מאוד", "e\u0301" * 80]:
    short = cs.elide(name, font, 120)
    assert font.getlength(short) <= 120
    assert "\n" not in short and "\t" not in short
  assert cs.elide("cat", font, 120) == "cat"
  assert cs.elide("x" * 300, font, 120).endswith("\u2026")

  names = ["x" * 300, "日本語のクラス名前です" * 5, "W" * 200, "new\nline" * 30]
  cells = [cs.SheetCell(name, label, 0, solid((0, 0, 0))) for label, name in enumerate(names)]
  sheet = decode_pages(cs.render_contact_sheet(cells, max_columns=4))[0]
  geometry = Geometry([sheet])
  captions = slice(geometry.top + geometry.cell_size + 2 * cs._PAD,
                   geometry.top + geometry.cell_height)
  for column in range(4):  # the gaps right of each cell stay blank
    gap_x = cs._MARGIN + (column + 1) * geometry.cell_width + column * cs._GAP
    gap = sheet[captions, gap_x:gap_x + cs._GAP]
    assert (gap == cs._BACKGROUND).all(), column


def test_empty_input_still_gives_one_page():
  pages = cs.render_contact_sheet([])
  assert len(pages) == 1 and Image.open(io.BytesIO(pages[0])).size[0] >= 400


def decoded(label: int, rank: int, image: np.ndarray) -> DecodedImage:
  return DecodedImage(
      class_name=f"class{label}", label=label, rank=rank,
      relative_path=f"class{label}/{rank}.png", source_path=f"/src/class{label}/{rank}.png",
      encoded=png(image), source_height=16, source_width=16, sha256="0" * 64)


def test_write_contact_sheet_caps_renders_and_leaves_other_files(tmp_path):
  out = str(tmp_path / "out")
  os.makedirs(out)
  # Not known to be exemplar's (a dataset's own pages are on its files
  # record, and its commit removes them): never removed by a name pattern.
  other = os.path.join(out, "contact_sheet-005.png")
  open(other, "wb").write(b"someone's")
  images = [decoded(label, rank, solid(colour_of(label, rank)))
            for label in range(6) for rank in range(4)]
  with beam.Pipeline() as p:
    pages = (p | beam.Create(images)
             | cs.WriteContactSheet(out, max_per_class=3, max_cells=10, title="t"))
    assert_that(pages, equal_to([os.path.join(out, "contact_sheet.png")]))
  assert sorted(os.listdir(out)) == ["contact_sheet-005.png", "contact_sheet.png"]
  assert open(other, "rb").read() == b"someone's"

  # Exactly the first 3 per class, first 10 in all, with the note saying so.
  kept = [c for c in images if c.rank < 3][:10]
  note = cs.cap_note(10, 24, 3, 10)
  expected = cs.render_contact_sheet(
      [cs.to_thumbnail_cell(i, cs.DEFAULT_CELL_SIZE) for i in kept], title="t", note=note)
  written = open(os.path.join(out, "contact_sheet.png"), "rb").read()
  assert written == expected[0]
  # The cells travel as small JPEGs: drawn from the full images the sheet
  # looks the same, up to JPEG's error.
  exact = cs.render_contact_sheet(
      [cs.SheetCell(i.class_name, i.label, i.rank, i.encoded, "", i.relative_path)
       for i in kept],
      title="t", note=note)
  written_pixels, exact_pixels = decode_pages([written, exact[0]])
  difference = np.abs(written_pixels.astype(int) - exact_pixels.astype(int))
  assert written_pixels.shape == exact_pixels.shape
  assert difference.mean() < 1 and difference.max() < 40


def test_write_contact_sheet_pages_for_many_classes(tmp_path):
  out = str(tmp_path / "out")
  images = [decoded(label, 0, solid(colour_of(label, 0))) for label in range(250)]
  with beam.Pipeline() as p:
    _ = p | beam.Create(images) | cs.WriteContactSheet(out)
  names = sorted(os.listdir(out))
  assert names == ["contact_sheet-002.png", "contact_sheet-003.png", "contact_sheet.png"]
  last = np.asarray(Image.open(os.path.join(out, "contact_sheet-003.png")).convert("RGB"))
  geometry = Geometry([last])
  # Through the pipeline cells travel as JPEG thumbnails: colours within 3.
  for spot, label in (((0, 0), 200), ((4, 9), 249)):
    drawn = last[geometry.centre(*spot)].astype(int)
    assert np.abs(drawn - colour_of(label, 0)).max() <= 3, (label, drawn)


def test_every_class_has_a_cell_empty_and_short_marked_file_names_shown(tmp_path):
  cells = [cs.SheetCell("full", 0, 0, solid((200, 30, 30)), "", "full/IMG_20240412_long_name.jpg"),
           cs.SheetCell("short", 1, 0, solid((30, 200, 30)), "", "short/a.png", "short"),
           cs.SheetCell("nothing here", 2, 0, b"", "", "", "empty")]
  title = "exemplar contact sheet \u00b7 " + "/a/very/long/output/folder" * 6
  pages = cs.render_contact_sheet(cells, title=title)
  assert len(pages) == 1
  from PIL import Image, ImageDraw
  import io
  page = Image.open(io.BytesIO(pages[0]))
  # The header wraps: a long title makes the page taller, never cut.
  short_title = cs.render_contact_sheet(cells, title="t")[0]
  assert page.height > Image.open(io.BytesIO(short_title)).height
  font = cs._font(14)
  lines = cs.wrap(title, font, 300)
  assert "".join(lines).replace(" ", "") == cs.printable(title).replace(" ", "")
  assert all(font.getlength(line) <= 300 for line in lines)
  name = cs.elide_middle("IMG_20240412_long_name.jpg", font, 120)
  assert name.startswith("IMG") and name.endswith(".jpg") and "\u2026" in name
  # The empty class's cell holds no image but the alert colour's text.
  pixels = np.asarray(page.convert("RGB"))
  assert (np.abs(pixels.astype(int) - (180, 30, 30)).sum(axis=2) < 60).any()


def test_class_marks_and_marked_cells():
  stats = {"a": (5, 2, 2, (("train", 2),), (("train", 2),)),
           "b": (1, 1, 2, (("train", 1),), (("train", 2),)),
           "c": (0, 0, 2, (("train", 0),), (("train", 2),))}
  marks = cs.class_marks(["a", "b", "c"], stats, {"a": 2, "b": 1})
  assert marks == [("a", 0, ""), ("b", 1, "short"), ("c", 2, "empty")]
  cells = [cs.SheetCell("a", 0, 0, b"x"), cs.SheetCell("b", 1, 0, b"y")]
  marked = cs.mark_classes(cells, marks)
  assert [(c.class_name, c.status) for c in marked] == [("a", ""), ("b", "short"),
                                                        ("c", "empty")]
