"""A contact sheet of the picked images: see at a glance what was sampled.

`render_contact_sheet(cells)` draws one cell per image, grouped by class
(classes in label order, images of a class by rank), with the class name and
label under each cell. It returns the pages as PNG bytes:

  * a class starts a new row when it does not fit in the rest of the current
    one, and a new page when it does not fit in the rest of the page, so a
    class is never split unless it is longer than a row (or a page);
  * with k images per class the number of columns is a multiple of k, so each
    row holds whole classes; neighbouring classes get alternating tints;
  * a page holds at most `max_columns` x `rows_per_page` cells (10 x 10 by
    default, about 1.4k x 1.8k pixels); more cells make more pages, each headed
    with its page number and the labels it shows. `page_file_names` names them
    contact_sheet.png, contact_sheet-002.png, ...

`WriteContactSheet` is the Beam step: DecodedImage -> the page files in the
output folder. It keeps the first `max_per_class` images of each class and the
first `max_cells` cells overall (in label, rank order), as small JPEG
thumbnails (made by the decoders from the pixels at hand, or here from the
stored image) before they are gathered, so memory stays bounded however large
the dataset is; a capped sheet says so in every page's header.

Grayscale images are shown grey, transparent ones over a checkerboard, images
smaller than a cell are enlarged by a whole factor (pixels stay sharp), and an
image that cannot be decoded is drawn as a crossed-out cell. Text uses DejaVu
Sans when the system has it (wide Unicode coverage), else Pillow's built-in
font; names too long for a cell are cut with an ellipsis.
"""

from __future__ import annotations

import concurrent.futures
import functools
import io
import math
import os
import unicodedata
from typing import (Dict, Iterable, Iterator, List, NamedTuple, Optional,
                    Sequence, Tuple, Union)

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from exemplar.transforms import png_encoder
from exemplar.transforms.fileio import write_file_atomically
from exemplar.transforms.names import SHEET_FILE

DEFAULT_CELL_SIZE = 128
DEFAULT_MAX_COLUMNS = 10
DEFAULT_ROWS_PER_PAGE = 10
# Bounds on what WriteContactSheet gathers onto one worker: at most this many
# thumbnails (each <= 128 x 128, ~8 kB as JPEG), about 16 MB.
DEFAULT_MAX_PER_CLASS = 10
DEFAULT_MAX_CELLS = 2000
# 75 (Pillow's and libjpeg's default): ~5 kB for a 128 x 96 photo against
# ~8 kB at 90, on a 128-pixel preview; every thumbnail is copied several
# times on its way to the one worker that draws (1,000 classes: -23 MB peak).
THUMBNAIL_JPEG_QUALITY = 75

_MARGIN = 16
_GAP = 6  # between cells
_PAD = 4  # inside a cell, around the image
_BACKGROUND = (255, 255, 255)
_TINTS = ((236, 240, 246), (248, 243, 232))  # alternate per class
_IMAGE_WELL = (222, 222, 222)
_TEXT = (20, 20, 20)
_MUTED = (95, 95, 95)
_ALERT = (180, 30, 30)
_FONT_FILES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
               "/usr/share/fonts/TTF/DejaVuSans.ttf",
               "/usr/share/fonts/dejavu/DejaVuSans.ttf",
               "/Library/Fonts/DejaVuSans.ttf")

ImageLike = Union[np.ndarray, bytes]


class SheetCell(NamedTuple):
  """One picked image; `image` is uint8 [H, W], [H, W, C] or encoded bytes
  (b"": an image that could not be decoded)."""
  class_name: str
  label: int
  rank: int
  image: ImageLike
  split: str = ""  # shown when a dataset has splits other than 'train'
  file_name: str = ""  # the picked file's relative path ('cat/x.jpg'): its name is shown
  status: str = ""  # "short": the class has fewer images than asked; "empty": none
                    # (an empty class's one cell has no image)


# --- images -----------------------------------------------------------------


def _array_to_pil(array: np.ndarray):
  from PIL import Image
  if array.dtype != np.uint8:
    raise ValueError(f"contact sheet images must be uint8, got {array.dtype}")
  if array.ndim == 3 and array.shape[2] == 1:
    array = array[:, :, 0]
  if array.ndim == 2:
    return Image.fromarray(np.ascontiguousarray(array), "L")
  if array.ndim == 3 and array.shape[2] in (2, 3, 4):
    mode = {2: "LA", 3: "RGB", 4: "RGBA"}[array.shape[2]]
    return Image.fromarray(np.ascontiguousarray(array), mode)
  raise ValueError(f"contact sheet images must be [H, W] or [H, W, 1|2|3|4], "
                   f"got shape {array.shape}")


def _bytes_to_pil(data: bytes):
  from PIL import Image
  image = Image.open(io.BytesIO(data))
  image.load()
  if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
    # 16-bit or float pixels: scale to 8 bits instead of clipping.
    pixels = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
    image = Image.fromarray(
        np.clip(pixels * (255.0 / top), 0, 255).astype(np.uint8), "L")
  return image


def _checkerboard(size: Tuple[int, int], square: int = 8):
  from PIL import Image
  width, height = size
  ys, xs = np.mgrid[0:height, 0:width]
  light = ((ys // square + xs // square) % 2 == 0)
  board = np.where(light, 204, 153).astype(np.uint8)
  return Image.fromarray(board, "L").convert("RGB")


def _to_rgb(image):
  """Any Pillow image -> RGB; transparency shown over a checkerboard."""
  from PIL import Image
  if image.mode in ("P", "PA") or "transparency" in image.info:
    image = image.convert("RGBA")
  if image.mode in ("LA", "La", "RGBa"):
    image = image.convert("RGBA")
  if image.mode == "RGBA":
    background = _checkerboard(image.size)
    background.paste(image, (0, 0), image)
    return background
  if image.mode != "RGB":
    image = image.convert("L") if image.mode == "1" else image
    image = image.convert("RGB")
  return image if image.mode == "RGB" else Image.new("RGB", image.size)


def _fit(image, box: int):
  """Scales into a box x box square: a whole-number zoom for small images."""
  from PIL import Image
  width, height = image.size
  scale = min(box / width, box / height)
  if scale >= 1:
    factor = int(scale)
    if factor == 1:
      return image
    return image.resize((width * factor, height * factor), Image.NEAREST)
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  # BOX (area average) is the right filter for shrinking and ~4x cheaper
  # than LANCZOS (0.3 vs 1.1 ms for 256 -> 128): a k=1 run makes a
  # thumbnail of every pick on its decoding threads.
  return image.resize(size, Image.BOX)


def thumbnail(image: ImageLike, box: int = DEFAULT_CELL_SIZE):
  """An image (array or encoded bytes) -> an RGB Pillow image fitting box x box,
  or None when it cannot be decoded."""
  if isinstance(image, np.ndarray):
    pil = _array_to_pil(image)  # a wrong array is the caller's bug: raise
  else:
    try:
      pil = _bytes_to_pil(bytes(image))
    except Exception:  # any decoder error: the cell shows "cannot decode"
      return None
  if pil.width == 0 or pil.height == 0:
    return None
  # Resize before compositing: Pillow resamples RGBA/LA with premultiplied alpha.
  if pil.mode in ("P", "PA") or "transparency" in pil.info:
    pil = pil.convert("RGBA")
  if pil.mode not in ("L", "LA", "RGB", "RGBA"):
    pil = _to_rgb(pil)
  return _to_rgb(_fit(pil, box))


def thumbnail_jpeg(image: ImageLike, box: int = DEFAULT_CELL_SIZE) -> bytes:
  """`thumbnail` as JPEG bytes (b"" when it cannot be decoded): what is
  shipped to the worker that draws the sheet. At 128 x 128 a quality-90 JPEG
  is ~8 kB and 0.06 ms to encode; PNG was ~32 kB and 1.3 ms, raw pixels 49 kB:
  on 1,000 classes the sheet cost 4 s and 240 MB with PNG."""
  small = thumbnail(image, box)
  if small is None:
    return b""
  buffer = io.BytesIO()
  small.save(buffer, format="JPEG", quality=THUMBNAIL_JPEG_QUALITY)
  return buffer.getvalue()


# --- text -------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _font(size: int):
  from PIL import ImageFont
  for path in _FONT_FILES:
    if os.path.exists(path):
      try:
        return ImageFont.truetype(path, size)
      except OSError:
        continue
  return ImageFont.load_default(size=size)


def printable(text: str) -> str:
  """Control, format and separator characters (newlines, tabs, bidi marks in
  folder names) become visible placeholders so a label stays on one line."""
  out = []
  for char in text:
    category = unicodedata.category(char)
    if category in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
      out.append("\N{REPLACEMENT CHARACTER}" if category != "Cc" else "?")
    elif category == "Zs":
      out.append(" ")
    else:
      out.append(char)
  return "".join(out)


def elide(text: str, font, max_width: float, ellipsis: str = "\u2026") -> str:
  """The longest prefix of `text` (plus an ellipsis) that fits `max_width`."""
  text = printable(text)
  if font.getlength(text) <= max_width:
    return text
  if font.getlength(ellipsis) > max_width:
    return ""
  low, high = 0, len(text)  # invariant: text[:low] + ellipsis fits
  while low < high:
    middle = (low + high + 1) // 2
    if font.getlength(text[:middle] + ellipsis) <= max_width:
      low = middle
    else:
      high = middle - 1
  # Do not leave a combining mark without its base character.
  while low > 0 and unicodedata.combining(text[low - 1]):
    low -= 1
  return text[:low].rstrip() + ellipsis


def elide_middle(text: str, font, max_width: float, ellipsis: str = "\u2026") -> str:
  """`text` cut in the middle to fit (a file name keeps its start and the
  end of its name with the extension: 'IMG_2024…name.jpg')."""
  text = printable(text)
  if font.getlength(text) <= max_width:
    return text
  _, dot, extension = text.rpartition(".")
  keep = min(len(text) // 2, (len(extension) + 1 if dot and len(extension) <= 5 else 0) + 4)
  tail = text[-keep:] if keep else ""
  head = elide(text[:len(text) - len(tail)], font, max_width - font.getlength(tail), ellipsis)
  if len(head) > len(ellipsis):
    return head + tail
  return elide(text, font, max_width, ellipsis)


def wrap(text: str, font, max_width: float) -> List[str]:
  """`text` in lines that fit `max_width`, broken at spaces (a word longer
  than a line is broken where it must be)."""
  text = printable(text)
  lines: List[str] = []
  current = ""
  for word in text.split(" "):
    candidate = f"{current} {word}" if current else word
    if font.getlength(candidate) <= max_width:
      current = candidate
      continue
    if current:
      lines.append(current)
    while font.getlength(word) > max_width and len(word) > 1:
      cut = len(word) - 1
      while cut > 1 and font.getlength(word[:cut]) > max_width:
        cut -= 1
      lines.append(word[:cut])
      word = word[cut:]
    current = word
  lines.append(current)
  return lines


# --- layout -----------------------------------------------------------------


class _Placed(NamedTuple):
  page: int
  row: int
  column: int
  group: int  # index of the cell's class in label order
  cell: SheetCell


class Layout(NamedTuple):
  columns: int
  placed: List[_Placed]
  num_pages: int


def choose_columns(group_sizes: Sequence[int], max_columns: int) -> int:
  """About 3:2 landscape for few cells; a multiple of k when classes have k."""
  total = sum(group_sizes)
  if total == 0:
    return 1
  target = max(1, min(max_columns, math.ceil(math.sqrt(total * 1.5))))
  longest = max(group_sizes)
  if longest > max_columns:
    return max_columns
  return longest * max(1, target // longest)


def layout(cells: Sequence[SheetCell], max_columns: int = DEFAULT_MAX_COLUMNS,
           rows_per_page: int = DEFAULT_ROWS_PER_PAGE) -> Layout:
  """Places cells in label, rank order; classes wrap like words in a line."""
  ordered = sorted(cells, key=lambda c: (c.label, c.split, c.rank, c.class_name))
  groups: List[List[SheetCell]] = []
  for cell in ordered:
    if groups and groups[-1][0].label == cell.label:
      groups[-1].append(cell)
    else:
      groups.append([cell])
  columns = choose_columns([len(g) for g in groups], max_columns)
  placed: List[_Placed] = []
  page, row, column = 0, 0, 0
  for index, group in enumerate(groups):
    if column and column + len(group) > columns:
      row, column = row + 1, 0
    # Move a class that would straddle pages to the next page, unless it is
    # longer than a page anyway (then it flows on from here).
    rows_needed = math.ceil((column + len(group)) / columns)
    if (row or column) and row + rows_needed > rows_per_page and (
        rows_needed <= rows_per_page or row == rows_per_page):
      page, row, column = page + 1, 0, 0
    for cell in group:
      if column == columns:
        row, column = row + 1, 0
      if row == rows_per_page:
        page, row = page + 1, 0
      placed.append(_Placed(page, row, column, index, cell))
      column += 1
  return Layout(columns, placed, (page + 1) if placed else 1)


def page_file_names(num_pages: int, first: str = SHEET_FILE) -> List[str]:
  """contact_sheet.png, contact_sheet-002.png, ... (`first` sets the stem)."""
  stem, ext = os.path.splitext(first)
  ext = ext or ".png"
  width = max(3, len(str(num_pages)))
  return [stem + ext] + [f"{stem}-{i:0{width}d}{ext}" for i in range(2, num_pages + 1)]


# --- rendering --------------------------------------------------------------


def render_contact_sheet(cells: Iterable[Union[SheetCell, Tuple]],
                         cell_size: int = DEFAULT_CELL_SIZE,
                         max_columns: int = DEFAULT_MAX_COLUMNS,
                         rows_per_page: int = DEFAULT_ROWS_PER_PAGE,
                         title: str = "exemplar contact sheet",
                         note: Optional[str] = None) -> List[bytes]:
  """(class_name, label, rank, image) cells -> the sheet's pages as PNG bytes.

  `note` (e.g. "showing 2000 of 9000 images") is printed in every header.
  All pages at once; `render_pages` hands them on one by one.
  """
  _, pages = render_pages(cells, cell_size, max_columns, rows_per_page, title, note)
  return list(pages)


def render_pages(cells: Iterable[Union[SheetCell, Tuple]],
                 cell_size: int = DEFAULT_CELL_SIZE,
                 max_columns: int = DEFAULT_MAX_COLUMNS,
                 rows_per_page: int = DEFAULT_ROWS_PER_PAGE,
                 title: str = "exemplar contact sheet",
                 note: Optional[str] = None) -> Tuple[int, Iterator[bytes]]:
  """`render_contact_sheet` as (number of pages, the pages as PNG bytes, each
  drawn when the previous one is taken): a 1,000-class sheet of photos is
  ~25 MB of PNG, never all in memory here.

  Raises:
    ValueError: cell_size < 16, max_columns < 1 or rows_per_page < 1.
  """
  cells = [SheetCell(*c) for c in cells]
  if cell_size < 16 or max_columns < 1 or rows_per_page < 1:
    raise ValueError("cell_size >= 16, max_columns >= 1, rows_per_page >= 1")
  plan = layout(cells, max_columns, rows_per_page)
  name_font = _font(max(10, round(cell_size * 0.1)))
  small_font = _font(max(9, round(cell_size * 0.085)))
  title_font = _font(max(14, round(cell_size * 0.14)))
  show_rank = any(p.cell.rank > 0 for p in plan.placed)
  show_split = any(p.cell.split not in ("", "train") for p in plan.placed)

  show_file = any(p.cell.file_name for p in plan.placed)
  line = lambda font: font.getbbox("Ag\u00c5y")[3] + 3  # noqa: E731
  caption_height = line(name_font) + line(small_font) * (2 if show_file else 1) + 2
  cell_width = cell_size + 2 * _PAD
  cell_height = cell_size + 2 * _PAD + caption_height
  grid_width = plan.columns * cell_width + (plan.columns - 1) * _GAP
  page_width = max(grid_width + 2 * _MARGIN, 420)
  text_width = page_width - 2 * _MARGIN
  images = [c for c in cells if c.status != "empty"]
  flagged = {status: len({c.label for c in cells if c.status == status})
             for status in ("short", "empty")}
  flags = "".join(f" \u00b7 {n} {status}" for status, n in flagged.items() if n)

  labels_by_page: Dict[int, List[int]] = {}
  rows_by_page: Dict[int, int] = {}
  for p in plan.placed:
    labels_by_page.setdefault(p.page, []).append(p.cell.label)
    rows_by_page[p.page] = max(rows_by_page.get(p.page, 0), p.row + 1)
  num_classes = len({c.label for c in cells})

  def header(page_index: int) -> List[Tuple[str, Tuple[int, int, int]]]:
    labels = labels_by_page.get(page_index, [])
    span = (f"labels {labels[0]}\u2013{labels[-1]}" if labels and labels[0] != labels[-1]
            else f"label {labels[0]}" if labels else "no images")
    texts = [
        (title, _TEXT),
        (f"{len(images)} image{'s' * (len(images) != 1)} of {num_classes} "
         f"class{'es' * (num_classes != 1)}{flags} \u00b7 {span} \u00b7 "
         f"page {page_index + 1} of {plan.num_pages}", _MUTED),
    ] + ([(note, _ALERT)] if note else [])
    # Wrapped, never cut: a long title or folder name takes more lines.
    return [(part, colour) for text, colour in texts
            for part in wrap(text, title_font, text_width)]

  header_lines = max(len(header(i)) for i in range(plan.num_pages))
  header_height = _MARGIN + header_lines * line(title_font) + 8
  return plan.num_pages, _draw_pages(
      plan, header, header_height, page_width, cell_size, cell_width, cell_height,
      rows_by_page, title_font, line(title_font), name_font, line(name_font),
      small_font, show_rank, show_split)


def _draw_pages(plan: Layout, header, header_height: int, page_width: int,
                cell_size: int, cell_width: int, cell_height: int,
                rows_by_page: Dict[int, int], title_font, title_line: int,
                name_font, name_line: int, small_font,
                show_rank: bool, show_split: bool) -> Iterator[bytes]:
  """Draws `plan`'s pages in order; yields each as PNG bytes. `*_line`: the
  height of a line of text in that font."""
  from PIL import Image, ImageDraw
  # Drawing holds the GIL (FreeType text) and libdeflate releases it, so each
  # page is compressed on a thread while the next one is drawn (10 pages:
  # ~0.3 s less). At most two pages' pixels are alive at once.
  with concurrent.futures.ThreadPoolExecutor(1, "sheet-png") as encoder:
    encoding = None
    for page_index in range(plan.num_pages):
      rows = rows_by_page.get(page_index, 1)
      height = header_height + rows * cell_height + (rows - 1) * _GAP + _MARGIN
      sheet = Image.new("RGB", (page_width, height), _BACKGROUND)
      draw = ImageDraw.Draw(sheet)
      y = _MARGIN
      for text, colour in header(page_index):
        draw.text((_MARGIN, y), text, font=title_font, fill=colour)
        y += title_line
      for p in plan.placed:
        if p.page != page_index:
          continue
        x0 = _MARGIN + p.column * (cell_width + _GAP)
        y0 = header_height + p.row * (cell_height + _GAP)
        _draw_cell(sheet, draw, p, x0, y0, cell_size, cell_width, cell_height,
                   name_font, small_font, name_line, show_rank, show_split)
      if encoding is not None:
        yield encoding.result()
      # exemplar's PNG encoder (libdeflate): faster than Pillow's zlib level 1
      # on a page; the pixels are the same.
      encoding = encoder.submit(png_encoder.encode_png, np.asarray(sheet))
      del sheet, draw  # only the encoder's copy is needed now
    yield encoding.result()


def _draw_cell(sheet, draw, placed: _Placed, x0: int, y0: int, cell_size: int,
               cell_width: int, cell_height: int, name_font, small_font,
               name_line: int, show_rank: bool, show_split: bool = False) -> None:
  cell = placed.cell
  draw.rectangle((x0, y0, x0 + cell_width - 1, y0 + cell_height - 1),
                 fill=_TINTS[placed.group % 2])
  well = (x0 + _PAD, y0 + _PAD, x0 + _PAD + cell_size - 1, y0 + _PAD + cell_size - 1)
  draw.rectangle(well, fill=_IMAGE_WELL)
  image = None if cell.status == "empty" else thumbnail(cell.image, cell_size)
  if cell.status == "empty":
    message = elide("no images", small_font, cell_size - 8)
    left, top, right, bottom = draw.textbbox((0, 0), message, font=small_font)
    draw.text((well[0] + (cell_size - (right - left)) // 2 - left,
               well[1] + (cell_size - (bottom - top)) // 2), message,
              font=small_font, fill=_ALERT)
  elif image is None:
    draw.line(well, fill=_ALERT, width=2)
    draw.line((well[0], well[3], well[2], well[1]), fill=_ALERT, width=2)
    message = elide("cannot decode", small_font, cell_size - 8)
    left, top, right, bottom = draw.textbbox((0, 0), message, font=small_font)
    tx = well[0] + (cell_size - (right - left)) // 2
    ty = well[1] + (cell_size - (bottom - top)) // 2
    draw.rectangle((tx - 3, ty - 3 + top, tx + right - left + 3, ty + bottom + 3),
                   fill=_BACKGROUND)
    draw.text((tx - left, ty), message, font=small_font, fill=_ALERT)
  else:
    sheet.paste(image, (x0 + _PAD + (cell_size - image.width) // 2,
                        y0 + _PAD + (cell_size - image.height) // 2))
  text_x = x0 + _PAD
  text_y = y0 + 2 * _PAD + cell_size
  room = cell_width - 2 * _PAD
  draw.text((text_x, text_y), elide(cell.class_name, name_font, room),
            font=name_font, fill=_TEXT)
  detail = (f"label {cell.label}" + (f" \u00b7 {cell.split}" if show_split else "")
            + (f" \u00b7 #{cell.rank}" if show_rank and cell.status != "empty" else ""))
  status = f" \u00b7 {cell.status}" if cell.status else ""
  detail = elide(detail, small_font, room - small_font.getlength(status))
  draw.text((text_x, text_y + name_line), detail, font=small_font, fill=_MUTED)
  if status:
    draw.text((text_x + small_font.getlength(detail), text_y + name_line), status,
              font=small_font, fill=_ALERT)
  if cell.file_name:
    small_line = small_font.getbbox("Ag\u00c5y")[3] + 3
    draw.text((text_x, text_y + name_line + small_line),
              elide_middle(cell.file_name.rsplit("/", 1)[-1], small_font, room),
              font=small_font, fill=_MUTED)


# --- Beam -------------------------------------------------------------------


def cell_order(cell: SheetCell) -> Tuple[int, str, int]:
  return (cell.label, cell.split, cell.rank)


def to_thumbnail_cell(image, cell_size: int) -> SheetCell:
  """DecodedImage -> SheetCell holding a small JPEG (drops the big bytes).

  Uses the thumbnail the decoder made from the pixels when there is one, else
  decodes the stored image (the same thumbnail when it is a PNG, which is
  lossless; `exemplar-inspect` redraws a JPEG-stored dataset's sheet from the
  stored JPEGs, so that sheet differs slightly)."""
  small = getattr(image, "thumbnail", b"") or thumbnail_jpeg(image.encoded, cell_size)
  return SheetCell(image.class_name, image.label, image.rank, small,
                   getattr(image, "split", ""), getattr(image, "relative_path", ""))


def sheet_title(output_dir: str, seed, samples_per_class) -> str:
  """The header both the pipeline and exemplar-inspect put on a sheet."""
  return (f"exemplar \u00b7 {output_dir} \u00b7 seed {seed} \u00b7 "
          f"{samples_per_class} per class")


def cap_note(shown: int, total: int, max_per_class: int, max_cells: int) -> Optional[str]:
  if shown >= total:
    return None
  return (f"showing {shown} of {total} images: the first {max_per_class} per "
          f"class, at most {max_cells} in all")


def write_pages(output_dir: str, pages: Iterable[bytes],
                first: str = SHEET_FILE, num_pages: Optional[int] = None) -> List[str]:
  """Writes the pages atomically, each as it comes (`num_pages`: how many
  there are, when `pages` is an iterator); returns the paths written. Pages
  of an older, longer sheet at the same place are left alone: only files
  exemplar knows it wrote are ever removed (a dataset's are on its files
  record)."""
  if num_pages is None:
    pages = list(pages)
    num_pages = len(pages)
  names = page_file_names(num_pages, first)
  paths = []
  for name, data in zip(names, pages):
    path = FileSystems.join(output_dir, name)
    write_file_atomically(path, [data])
    paths.append(path)
  return paths


class RenderAndWriteSheet(beam.DoFn):
  """[SheetCell] (one list, with the image count as a side input) -> page paths."""

  def __init__(self, output_dir: str, cell_size: int, max_per_class: int,
               max_cells: int, title: str):
    self._output_dir = output_dir
    self._cell_size = cell_size
    self._max_per_class = max_per_class
    self._max_cells = max_cells
    self._title = title

  def process(self, cells: List[SheetCell], total: int,
              classes: Sequence[Tuple[str, int, str]] = ()) -> Iterator[str]:
    note = cap_note(len(cells), total, self._max_per_class, self._max_cells)
    num_pages, pages = render_pages(mark_classes(cells, classes), cell_size=self._cell_size,
                                    title=self._title, note=note)
    yield from write_pages(self._output_dir, pages, num_pages=num_pages)


def mark_classes(cells: Sequence[SheetCell],
                 classes: Sequence[Tuple[str, int, str]]) -> List[SheetCell]:
  """Cells, with each class of `classes` ((class, label, '' | 'short' |
  'empty')) marked, and a cell of its own for each empty class."""
  status = {label: mark for _, label, mark in classes}
  marked = [SheetCell(*cell)._replace(status=status.get(cell.label, ""))
            if status.get(cell.label) else SheetCell(*cell) for cell in cells]
  shown = {cell.label for cell in marked}
  marked += [SheetCell(name, label, 0, b"", "", "", "empty")
             for name, label, mark in classes if mark == "empty" and label not in shown]
  return marked


def class_marks(class_names: Sequence[str], stats: Dict, stored: Dict[str, int]
                ) -> List[Tuple[str, int, str]]:
  """(class, label, mark) of every class: 'empty' with no image stored,
  'short' with fewer than asked for (its splits' targets), else ''.
  `stats`: WriteDataset's {class: (seen, planned, k, splits, targets)}."""
  marks = []
  for label, name in enumerate(class_names):
    got = stored.get(name, 0)
    targets = stats.get(name, (0, 0, None, (), ()))[4]
    asked = sum(n for _, n in targets)
    marks.append((name, label, "empty" if got == 0 else "short" if got < asked else ""))
  return marks


class WriteContactSheet(beam.PTransform):
  """PCollection[DecodedImage] -> PCollection[str]: the page paths, once written.

  Only the first `max_per_class` images of each class and the first
  `max_cells` cells (label, rank order) reach the one worker that renders.
  """

  def __init__(self, output_dir: str, max_per_class: int = DEFAULT_MAX_PER_CLASS,
               max_cells: int = DEFAULT_MAX_CELLS,
               cell_size: int = DEFAULT_CELL_SIZE,
               title: str = "exemplar contact sheet", total=None, classes=None):
    """`total`: a one-element PCollection with the number of images stored, when
    the input holds only some of them; by default the input is counted.
    `classes`: a one-element PCollection [(class, label, '' | 'short' |
    'empty')] of every class, to mark short classes and show empty ones."""
    super().__init__()
    self._total = total
    self._classes = classes
    if max_per_class < 1 or max_cells < 1:
      raise ValueError("max_per_class and max_cells must be >= 1")
    self._output_dir = output_dir
    self._max_per_class = max_per_class
    self._max_cells = max_cells
    self._cell_size = cell_size
    self._title = title

  def expand(self, images):
    max_per_class = self._max_per_class
    total = self._total
    if total is None:
      total = images | "CountImages" >> beam.combiners.Count.Globally()
    return (
        images
        | "FirstPerClass" >> beam.Filter(lambda image: image.rank < max_per_class)
        | "Thumbnail" >> beam.Map(to_thumbnail_cell, self._cell_size)
        # SheetCell with a small JPEG
        | "FirstCells" >> beam.combiners.Top.Smallest(self._max_cells, key=cell_order)
        # [SheetCell]: one list, label-rank order
        | "RenderAndWrite" >> beam.ParDo(
            RenderAndWriteSheet(self._output_dir, self._cell_size,
                                self._max_per_class, self._max_cells, self._title),
            total=beam.pvalue.AsSingleton(total),
            **({"classes": beam.pvalue.AsSingleton(self._classes)}
               if self._classes is not None else {}))
        # page paths
    )
