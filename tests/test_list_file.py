"""List-file input (transforms/list_file.py): the pure per-row parsers for
every format and bad row, then ReadImageList in real pipelines on real list
files (local, split into many bundles, and at gs:// on the emulator)."""

from __future__ import annotations

import gzip
import io
import os

import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from exemplar.transforms import list_file as lf
from exemplar.transforms.decoding import DecodeFailure
from exemplar.transforms.list_file import (CsvHeader, ListedImage, ListFileError,
                                           ListRow, ReadImageList, RowError)
from tests.test_gcs import IN_BUCKET, OUT_BUCKET, gcs  # noqa: F401 - the emulator fixture


def fn_api_pipeline() -> TestPipeline:
  from apache_beam.runners.portability.fn_api_runner import FnApiRunner
  return TestPipeline(runner=FnApiRunner())


def write(path, text: str, newline: str = "\n") -> str:
  os.makedirs(os.path.dirname(str(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8", newline="") as f:
    f.write(text.replace("\n", newline))
  return str(path)


def read(list_path: str, **kwargs):
  """Runs ReadImageList; returns (images, failures), checked by the caller's
  expectations through assert_that."""
  p = fn_api_pipeline()
  listed = p | ReadImageList(list_path, **kwargs)
  return p, listed


def check(list_path: str, images, failures, **kwargs) -> None:
  p, listed = read(list_path, **kwargs)
  assert listed.images is listed["images"] and listed.failures is listed["failures"]
  assert set(listed) == {"images", "failures"}
  assert_that(listed.images, equal_to(images), label="Images")
  assert_that(listed.failures, equal_to(failures), label="Failures")
  p.run().wait_until_finish()


# --- format and header -------------------------------------------------------------


def test_format_comes_from_the_extension_or_the_override():
  assert lf.list_format("/d/list.csv") == "csv"
  assert lf.list_format("/d/LIST.CSV") == "csv"
  assert lf.list_format("gs://b/x/import.jsonl") == "jsonl"
  assert lf.list_format("gs://b/x/import.json") == "jsonl"
  assert lf.list_format("/d/list.ndjson") == "jsonl"
  assert lf.list_format("/d/list.csv.gz") == "csv"
  assert lf.list_format("/d/list.txt", "csv") == "csv"
  assert lf.list_format("/d/list.csv", "JSONL") == "jsonl"
  with pytest.raises(ListFileError, match="cannot tell the format"):
    lf.list_format("/d/list.txt")
  with pytest.raises(ListFileError, match="must be 'csv' or 'jsonl'"):
    lf.list_format("/d/list.csv", "xml")


def test_csv_header_is_found_by_column_names():
  assert lf.csv_header("path,label") == CsvHeader(2, 0, 1, None)
  assert lf.csv_header("image,label") == CsvHeader(2, 0, 1, None)
  assert lf.csv_header("Image Path , Class") == CsvHeader(2, 0, 1, None)
  # Hugging Face ImageFolder's metadata.csv: file_name plus any columns.
  assert lf.csv_header("file_name,caption,label") == CsvHeader(3, 0, 2, None)
  assert lf.csv_header("ml_use,path,label") == CsvHeader(3, 1, 2, 0)
  assert lf.csv_header("label,filename") == CsvHeader(2, 1, 0, None)
  # Records, not headers.
  assert lf.csv_header("cat/1.jpg,cat") is None
  assert lf.csv_header("image.jpg,label") is None
  assert lf.csv_header("test,gs://bucket/filename1.jpeg,daisy") is None
  assert lf.csv_header('"a,b') is None
  # A header that names paths but no labels cannot give classes.
  with pytest.raises(ListFileError, match="names no label column"):
    lf.csv_header("file_name,caption")


# --- CSV rows ------------------------------------------------------------------------


def test_csv_rows_path_label():
  parse = lf.parse_csv_line
  assert parse("cat/1.jpg,cat") == ListRow("cat/1.jpg", "cat")
  assert parse("  cat/1.jpg ,  cat  ") == ListRow("cat/1.jpg", "cat")  # unquoted: stripped
  assert parse('"a,b/1.jpg","x, y"') == ListRow("a,b/1.jpg", "x, y")  # quoted commas
  assert parse('x.jpg,"say ""hi"""') == ListRow("x.jpg", 'say "hi"')
  assert parse("") is None and parse("   ") is None
  assert parse("x.jpg,") == RowError("no label (exemplar needs one label per image)", "x.jpg")
  assert parse(",cat") == RowError("empty path", None, "cat")
  assert parse('x.jpg," cat"') == RowError(
      "label ' cat' starts or ends with white space, which TFDS strips", "x.jpg")
  assert parse("a.jpg,b,c,d") == RowError(
      "expected path,label or ML_USE,path,label, got 4 fields (one label per image)")
  assert parse("a.jpg,b,c").reason == (
      "expected path,label or ML_USE,path,label, got 3 fields "
      "('a.jpg' is not an ML_USE: training, validation, test, unassigned)")
  assert parse('x.jpg,"cat').reason.startswith("a quoted field is not closed on its line")
  assert parse('"x"y.jpg,cat').reason.startswith("not a CSV record:")


def test_csv_rows_vertex_ai_import_format():
  """Vertex AI's single-label CSV `[ML_USE],GCS_FILE_PATH,[LABEL]`, rows as in
  its documentation's example (image_classification_single_label.csv)."""
  parse = lf.parse_csv_line
  assert parse("test,gs://bucket/filename1.jpeg,daisy") == ListRow(
      "gs://bucket/filename1.jpeg", "daisy", "test")
  assert parse("training,gs://bucket/filename2.gif,dandelion") == ListRow(
      "gs://bucket/filename2.gif", "dandelion", "training")
  assert parse("gs://bucket/filename4.bmp,sunflowers") == ListRow(
      "gs://bucket/filename4.bmp", "sunflowers", None)
  assert parse("VALIDATION,gs://bucket/filename5.png,tulips").ml_use == "validation"
  assert parse("Unassigned,gs://bucket/f.png,tulips").ml_use == "unassigned"
  assert parse("TRAIN,gs://folder/image1.jpg,daisy").ml_use == "training"  # AutoML Vision
  assert parse(",gs://bucket/f.png,tulips") == ListRow("gs://bucket/f.png", "tulips", None)
  # Unlabeled images (allowed by Vertex AI) cannot be sampled into a class.
  no_label = "no label (exemplar needs one label per image)"
  assert parse("gs://bucket/filename3.png") == RowError(no_label, "gs://bucket/filename3.png")
  assert parse("training,gs://bucket/f.png") == RowError(no_label, "gs://bucket/f.png")
  assert parse("bogus,gs://bucket/f.png,tulips").reason.startswith(
      "expected path,label or ML_USE,path,label, got 3 fields ('bogus' is not an ML_USE")


def test_csv_rows_with_a_header():
  header = lf.csv_header("ml_use,file_name,caption,label")
  parse = lambda line: lf.parse_csv_line(line, header)  # noqa: E731
  assert parse("test,a/1.png,a photo,cat") == ListRow("a/1.png", "cat", "test")
  assert parse(",a/1.png,a photo,cat") == ListRow("a/1.png", "cat", None)
  assert parse("a/1.png,cat") == RowError("expected 4 fields as in the header, got 2")
  assert parse("later,a/1.png,x,cat") == RowError(
      "unknown ML_USE 'later': expected one of training, validation, test, unassigned",
      "a/1.png", "cat")


# --- JSON Lines rows ----------------------------------------------------------------------


def test_jsonl_rows_vertex_ai_import_format():
  """Rows as in Vertex AI's image_classification_single_label.jsonl example."""
  parse = lf.parse_jsonl_line
  assert parse('{"imageGcsUri": "gs://bucket/filename1.jpeg",  "classificationAnnotation": '
               '{"displayName": "daisy"}, "dataItemResourceLabels": '
               '{"aiplatform.googleapis.com/ml_use": "test"}}') == ListRow(
                   "gs://bucket/filename1.jpeg", "daisy", "test")
  assert parse('{"imageGcsUri": "gs://b/2.gif", "classificationAnnotation": {"displayName": '
               '"dandelion", "annotationResourceLabels": {"aiplatform.googleapis.com/'
               'annotation_set_name": "displayName", "env": "prod"}}, '
               '"dataItemResourceLabels": {}}') == ListRow("gs://b/2.gif", "dandelion")
  assert parse('{"imageGcsUri": "gs://b/3.png", "classificationAnnotations": '
               '[{"displayName": "roses"}]}') == ListRow("gs://b/3.png", "roses")
  assert parse('{"imageGcsUri": "gs://b/3.png", "classificationAnnotations": '
               '[{"displayName": "roses"}, {"displayName": "closeup"}]}') == RowError(
                   "classificationAnnotations holds 2 annotations: exemplar needs "
                   "exactly one label per image", "gs://b/3.png")
  assert parse('{"imageGcsUri": "gs://b/4.png"}') == RowError(
      "no label (exemplar needs one label per image)", "gs://b/4.png")
  assert parse('{"imageGcsUri": "gs://b/5.png", "classificationAnnotation": {"displayName": '
               '"x"}, "dataItemResourceLabels": {"aiplatform.googleapis.com/ml_use": '
               '"holdout"}}').reason.startswith("unknown ML_USE 'holdout'")
  assert parse('{"imageGcsUri": 5}').reason == '"imageGcsUri" must be a string, got 5'


def test_jsonl_rows_path_label():
  parse = lf.parse_jsonl_line
  assert parse('{"path": "cat/1.jpg", "label": "cat"}') == ListRow("cat/1.jpg", "cat")
  assert parse('{"path": "cat/1.jpg", "label": "cat", "ml_use": "Test"}') == ListRow(
      "cat/1.jpg", "cat", "test")
  # Hugging Face's metadata.jsonl: file_name, integer class ids.
  assert parse('{"file_name": "0001.png", "label": 3}') == ListRow("0001.png", "3")
  assert parse('{"path": "a, b.jpg", "label": "x, y"}') == ListRow("a, b.jpg", "x, y")
  assert parse("") is None
  assert parse("{not json").reason.startswith("not valid JSON:")
  assert parse('["x.jpg", "cat"]') == RowError("expected a JSON object, got list")
  assert parse('{"label": "cat"}').reason.startswith('no path: expected an "imageGcsUri"')
  assert parse('{"path": "x.jpg"}') == RowError(
      "no label (exemplar needs one label per image)", "x.jpg")
  assert parse('{"path": "x.jpg", "label": 1.5}') == RowError(
      "a label must be a string, got 1.5", "x.jpg")
  assert parse('{"path": "x.jpg", "label": "a\\nb"}') == RowError(
      "label 'a\\nb' holds a line break", "x.jpg")


# --- paths ------------------------------------------------------------------------------


def test_paths_are_resolved_against_the_list_files_folder():
  locate = lf.locate
  assert locate("cat/1.jpg", "/data/flowers") == ("/data/flowers/cat/1.jpg", "cat/1.jpg")
  assert locate("./cat/1.jpg", "/data/flowers") == ("/data/flowers/cat/1.jpg", "cat/1.jpg")
  assert locate("/data/flowers/cat/1.jpg", "/data/flowers") == (
      "/data/flowers/cat/1.jpg", "cat/1.jpg")  # absolute, under the folder
  assert locate("../other/2.png", "/data/flowers") == (
      "/data/other/2.png", "/data/other/2.png")
  assert locate("gs://b/x/3.png", "/data/flowers") == ("gs://b/x/3.png", "gs://b/x/3.png")
  assert locate("cat/[1]*.jpg", "/data") == ("/data/cat/[1]*.jpg", "cat/[1]*.jpg")
  # Under gs://: literal but for '.' and '..' segments; never above the bucket.
  assert locate("cat/1.jpg", "gs://b/lists") == ("gs://b/lists/cat/1.jpg", "cat/1.jpg")
  assert locate("./cat//1.jpg", "gs://b/lists") == ("gs://b/lists/cat//1.jpg", "cat//1.jpg")
  assert locate("../images/2.png", "gs://b/lists") == (
      "gs://b/images/2.png", "gs://b/images/2.png")
  assert locate("x.png", "gs://b") == ("gs://b/x.png", "x.png")
  assert locate("gs://other/y.png", "gs://b/lists") == ("gs://other/y.png", "gs://other/y.png")
  assert locate("gs://b/lists/y.png", "gs://b/lists") == ("gs://b/lists/y.png", "y.png")
  assert locate("/mnt/z.png", "gs://b/lists") == ("/mnt/z.png", "/mnt/z.png")
  with pytest.raises(ValueError, match="climbs above the bucket"):
    locate("../../x.png", "gs://b/lists")
  assert lf.list_folder("gs://b/list.csv") == "gs://b"
  assert lf.list_folder("gs://b/l/list.csv") == "gs://b/l"


def test_only_keras_image_names_are_listed():
  image = lf.to_listed_image(ListRow("cat/1.JPEG", "cat", "test"), "/d")
  assert image == ListedImage("cat", "/d/cat/1.JPEG", "cat/1.JPEG", "test")
  assert lf.to_listed_image(ListRow("cat/notes.txt", "cat"), "/d") == RowError(
      "skipped: not an image name (Keras's extensions: .bmp .gif .jpeg .jpg .png)",
      "cat/notes.txt", "cat")
  assert lf.to_listed_image(ListRow("cat/x.webp", "cat"), "/d").reason.startswith(
      "skipped: not an image name")
  assert lf.to_listed_image(ListRow("cat/._x.jpg", "cat"), "/d") == RowError(
      "skipped: a hidden file name (starts with '.')", "cat/._x.jpg", "cat")
  assert lf.to_listed_image(ListRow("../../x.jpg", "cat"), "gs://b/l").reason == (
      "'../../x.jpg' climbs above the bucket of 'gs://b/l'")


# --- duplicates and line numbers ------------------------------------------------------


def test_duplicates_count_once_and_two_labels_are_an_error():
  a = ListedImage("cat", "/d/x.jpg", "x.jpg", None)
  same = [lf._Listing(a._replace(ml_use="test"), (100, 3)), lf._Listing(a, (0, 7))]
  assert lf.merge_listings(same) == a  # the first row (in file order) wins
  conflict = lf.merge_listings([
      lf._Listing(a, (0, 2)), lf._Listing(a._replace(class_name="dog"), (100, 0)),
      lf._Listing(a, (100, 5))])
  assert isinstance(conflict, lf._Problem)
  failure = lf.to_failure(conflict, "/d/list.csv", lf.first_line_numbers([(100, 9), (0, 4)]))
  assert failure == DecodeFailure(
      "", "x.jpg", "/d/list.csv",
      "listed under 2 labels: 'cat' (line 3), 'dog' (line 5); not used")


def test_first_line_numbers_add_up_the_splits_before():
  assert lf.first_line_numbers([(300, 2), (0, 10), (120, 0), (130, 5)]) == {
      0: 1, 120: 11, 130: 11, 300: 16}
  problem = lf._Problem("", None, (130, 4), ((130, 4), ": bad"))
  assert lf.to_failure(problem, "l.csv", {0: 1, 130: 11}) == DecodeFailure(
      "", "line 15", "l.csv", "line 15: bad")


def test_lines_keep_their_byte_offsets(monkeypatch):
  data = b"a\r\nbb\n\nccc\r\n" + b"x" * 50 + b"\nlast"
  lines = list(lf._lines_from(io.BytesIO(data), 0, chunk=7))
  assert lines == [(0, b"a"), (3, b"bb"), (6, b""), (7, b"ccc"), (12, b"x" * 50),
                   (63, b"last")]
  assert [data[o:o + len(t)] for o, t in lines if t] == [t for _, t in lines if t]
  monkeypatch.setattr(lf, "MAX_LINE_BYTES", 20)
  lines = list(lf._lines_from(io.BytesIO(data), 0, chunk=7))
  assert lines == [(0, b"a"), (3, b"bb"), (6, b""), (7, b"ccc"), (12, None), (63, b"last")]


# --- the transform: errors up front ------------------------------------------------


def test_a_list_file_that_cannot_be_read_is_refused_up_front(tmp_path):
  missing = str(tmp_path / "nope.csv")
  with pytest.raises(ListFileError) as error:
    ReadImageList(missing)
  assert str(error.value) == f"list file {missing!r} does not exist"
  assert "--" not in str(error.value) and "\n" not in str(error.value)
  os.makedirs(tmp_path / "folder.csv")
  with pytest.raises(ListFileError, match="is a folder"):
    ReadImageList(str(tmp_path / "folder.csv"))
  with pytest.raises(ListFileError, match="is empty"):
    ReadImageList(write(tmp_path / "empty.csv", ""))
  with pytest.raises(ListFileError, match="cannot tell the format"):
    ReadImageList(write(tmp_path / "list.txt", "a.jpg,cat\n"))
  with pytest.raises(ListFileError, match="holds a JSON array"):
    ReadImageList(write(tmp_path / "list.json", '[{"path": "a.jpg", "label": "cat"}]\n'))
  with pytest.raises(ListFileError, match="names no label column"):
    ReadImageList(write(tmp_path / "metadata.csv", "file_name,caption\na.png,a cat\n"))
  assert isinstance(ListFileError("x"), ValueError)


def test_label_and_display_data(tmp_path):
  from apache_beam.transforms.display import DisplayData
  path = write(tmp_path / "flowers.csv", "path,label\na.jpg,x\n")
  transform = ReadImageList(path, desired_bundle_size=4096)
  assert transform.label == "ReadImageList(flowers.csv)"
  items = {item.key: item.value for item in DisplayData.create_from(transform).items}
  assert items == {"list_path": path, "format": "csv", "header": True,
                   "desired_bundle_size": 4096}


# --- the transform on real list files ---------------------------------------------------


def test_csv_with_header_relative_absolute_duplicates_conflicts_and_bad_rows(tmp_path):
  root = str(tmp_path / "data")
  other = str(tmp_path / "elsewhere" / "z.png")
  list_path = write(os.path.join(root, "list.csv"), "\n".join([
      "path,label",                         # 1
      "cat/1.jpg,cat",                      # 2
      "./cat/2.PNG,cat",                    # 3
      f"{root}/dog/3.jpg,dog",              # 4  absolute, under the list's folder
      f"{other},dog",                       # 5  absolute, elsewhere
      "cat/1.jpg,cat",                      # 6  duplicate of line 2
      "both/4.jpg,cat",                     # 7
      "both/4.jpg,dog",                     # 8  the same path under a second label
      "cat/notes.txt,cat",                  # 9  not an image
      "a,b,c",                              # 10 does not parse
      '"odd, name/5.bmp","cats, big"',      # 11 quoted commas
      "",                                   # 12 blank: ignored
      "cat/1.jpg,cat",                      # 13 duplicate again
  ]) + "\n")
  check(list_path, images=[
      ListedImage("cat", f"{root}/cat/1.jpg", "cat/1.jpg", None),
      ListedImage("cat", f"{root}/cat/2.PNG", "cat/2.PNG", None),
      ListedImage("dog", f"{root}/dog/3.jpg", "dog/3.jpg", None),
      ListedImage("dog", other, other, None),
      ListedImage("cats, big", f"{root}/odd, name/5.bmp", "odd, name/5.bmp", None),
  ], failures=[
      DecodeFailure("", "both/4.jpg", list_path,
                    "listed under 2 labels: 'cat' (line 7), 'dog' (line 8); not used"),
      DecodeFailure("cat", "cat/notes.txt", list_path,
                    "line 9: skipped: not an image name (Keras's extensions: "
                    ".bmp .gif .jpeg .jpg .png)"),
      DecodeFailure("", "line 10", list_path,
                    "line 10: expected 2 fields as in the header, got 3"),
  ])


def test_csv_without_header_and_hugging_face_metadata(tmp_path):
  plain = write(tmp_path / "plain.csv", "cat/1.jpg,cat\r\ndog/2.jpg,dog\r\ncat/3.gif")
  check(plain, images=[
      ListedImage("cat", str(tmp_path / "cat/1.jpg"), "cat/1.jpg", None),
      ListedImage("dog", str(tmp_path / "dog/2.jpg"), "dog/2.jpg", None),
  ], failures=[
      DecodeFailure("", "cat/3.gif", plain,
                    "line 3: no label (exemplar needs one label per image)"),
  ])
  # Excel's UTF-8 CSV: a byte order mark before the header.
  hf = str(tmp_path / "hf" / "metadata.csv")
  os.makedirs(os.path.dirname(hf))
  with open(hf, "wb") as f:
    f.write("\ufefffile_name,caption,label\n0001.png,\"a cat, sitting\",0\n"
            "train/0002.png,a dog,1\n".encode("utf-8"))
  check(hf, images=[
      ListedImage("0", str(tmp_path / "hf/0001.png"), "0001.png", None),
      ListedImage("1", str(tmp_path / "hf/train/0002.png"), "train/0002.png", None),
  ], failures=[])


def test_vertex_ai_csv_with_and_without_ml_use(tmp_path):
  list_path = write(tmp_path / "import.csv", "\n".join([
      "test,gs://bucket/filename1.jpeg,daisy",
      "training,gs://bucket/filename2.gif,dandelion",
      "gs://bucket/filename3.png",
      "gs://bucket/filename4.bmp,sunflowers",
      "VALIDATION,gs://other-bucket/filename5.png,tulips",
      "validation,gs://bucket/filename6.tiff,tulips",
  ]) + "\n")
  check(list_path, images=[
      ListedImage("daisy", "gs://bucket/filename1.jpeg", "gs://bucket/filename1.jpeg", "test"),
      ListedImage("dandelion", "gs://bucket/filename2.gif", "gs://bucket/filename2.gif",
                  "training"),
      ListedImage("sunflowers", "gs://bucket/filename4.bmp", "gs://bucket/filename4.bmp", None),
      ListedImage("tulips", "gs://other-bucket/filename5.png",
                  "gs://other-bucket/filename5.png", "validation"),
  ], failures=[
      DecodeFailure("", "gs://bucket/filename3.png", list_path,
                    "line 3: no label (exemplar needs one label per image)"),
      DecodeFailure("tulips", "gs://bucket/filename6.tiff", list_path,
                    "line 6: skipped: not an image name (Keras's extensions: "
                    ".bmp .gif .jpeg .jpg .png)"),
  ])


def test_jsonl_vertex_ai_and_path_label_forms(tmp_path):
  list_path = write(tmp_path / "lists" / "import.jsonl", "\n".join([
      '{"imageGcsUri": "gs://bucket/filename1.jpeg", "classificationAnnotation": '
      '{"displayName": "daisy"}, "dataItemResourceLabels": '
      '{"aiplatform.googleapis.com/ml_use": "test"}}',
      '{"imageGcsUri": "gs://bucket/filename2.gif", "classificationAnnotation": '
      '{"displayName": "dandelion"}}',
      '{"path": "roses/3.png", "label": "roses", "ml_use": "training"}',
      '{"path": "../shared/4.jpg", "label": "roses"}',
      '{"path": "roses/3.png", "label": "roses"}',
      '{"path": "roses/5.png"}',
      "not json",
  ]))
  lists = str(tmp_path / "lists")
  check(list_path, images=[
      ListedImage("daisy", "gs://bucket/filename1.jpeg", "gs://bucket/filename1.jpeg", "test"),
      ListedImage("dandelion", "gs://bucket/filename2.gif", "gs://bucket/filename2.gif", None),
      ListedImage("roses", f"{lists}/roses/3.png", "roses/3.png", "training"),
      ListedImage("roses", str(tmp_path / "shared/4.jpg"), str(tmp_path / "shared/4.jpg"),
                  None),
  ], failures=[
      DecodeFailure("", "roses/5.png", list_path,
                    "line 6: no label (exemplar needs one label per image)"),
      DecodeFailure("", "line 7", list_path,
                    "line 7: not valid JSON: Expecting value: line 1 column 1 (char 0)"),
  ])


def test_format_override_and_a_compressed_list(tmp_path):
  text = "path,label\na.jpg,x\nb.txt,x\n"
  listed = write(tmp_path / "images.list", text)
  zipped = str(tmp_path / "images.csv.gz")
  with gzip.open(zipped, "wt") as f:
    f.write(text)
  for path, kwargs in ((listed, {"format": "csv"}), (zipped, {})):
    check(path, images=[ListedImage("x", str(tmp_path / "a.jpg"), "a.jpg", None)],
          failures=[DecodeFailure("x", "b.txt", path,
                                  "line 3: skipped: not an image name (Keras's "
                                  "extensions: .bmp .gif .jpeg .jpg .png)")],
          **kwargs)


@pytest.mark.slow
def test_a_large_list_is_split_and_every_row_read_once(tmp_path):
  """20,000 rows (CRLF, no final line break) in ~50 splits: every row once,
  and bad rows placed across the file get their own line numbers."""
  rows = 20_000
  bad = {2, 777, 5_001, 10_000, 13_337, 19_999, 20_000}
  lines = ["image,label"]
  expected = []
  for number in range(2, rows + 1):
    if number in bad:
      lines.append(f"bad{number},a,b,c")
    else:
      name, label = f"c{number % 7}/img_{number:05d}.jpg", f"class, {number % 7}"
      lines.append(f'{name},"{label}"')
      expected.append(ListedImage(label, str(tmp_path / name), name, None))
  list_path = write(tmp_path / "big.csv", "\r\n".join(lines))
  bundle = 8192
  source = lf._ListFileSource(list_path, bundle)
  assert len(list(source.split(None))) >= 40  # the source itself splits

  p = fn_api_pipeline()
  listed = p | ReadImageList(list_path, desired_bundle_size=bundle)
  assert_that(listed["images"], equal_to(expected), label="EveryRowOnce")
  assert_that(listed["failures"], equal_to([
      DecodeFailure("", f"line {n}", list_path,
                    f"line {n}: expected 2 fields as in the header, got 4")
      for n in sorted(bad)]), label="LineNumbers")
  result = p.run()
  result.wait_until_finish()
  from apache_beam.metrics.metric import MetricsFilter
  splits = result.metrics().query(MetricsFilter().with_name("splits_read"))["counters"]
  assert sum(c.committed for c in splits) >= 40
  listed_rows = result.metrics().query(MetricsFilter().with_name("rows_listed"))["counters"]
  assert sum(c.committed for c in listed_rows) == len(expected)


def test_a_split_made_while_reading_keeps_every_line_once(tmp_path):
  """A runner's dynamic split (the range tracker cut mid-read, as Beam's SDF
  wrapper does): the primary stops before the cut, the residual is read as a
  split of its own, and the two _SplitEnds still number every line."""
  lines = [f"d/{i}.jpg,{'x' * (i % 13)}" for i in range(1, 3001)]
  list_path = write(tmp_path / "l.csv", "\n".join(lines) + "\n")
  (bundle,) = lf._ListFileSource(list_path).split(1 << 30)
  source = bundle.source
  tracker = source.get_range_tracker(bundle.start_position, bundle.stop_position)
  primary, cut = [], None
  for record in source.read(tracker):
    primary.append(record)
    if len(primary) == 500:
      cut = tracker.try_split(os.path.getsize(list_path) // 2 + 3)  # mid-line
      assert cut is not None
  residual = list(source.read(source.get_range_tracker(cut[0], bundle.stop_position)))
  records = primary + residual
  ends = [r for r in records if isinstance(r, lf._SplitEnd)]
  assert [e.start for e in ends] == [0, cut[0]] and sum(e.lines for e in ends) == 3000
  first_lines = lf.first_line_numbers(ends)
  numbered = sorted((first_lines[r.start] + r.index, r.data.decode())
                    for r in records if isinstance(r, lf._Line))
  assert numbered == list(enumerate(lines, 1))  # each line once, rightly numbered


def test_a_list_file_on_gcs_with_relative_paths(gcs):  # noqa: F811
  list_path = f"gs://{IN_BUCKET}/flowers/lists/all[1].csv"  # a glob character: literal
  text = "\n".join([
      "ml_use,path,label",
      "training,daisy/1.jpg,daisy",
      "test,../roses/2.png,roses",
      f"validation,gs://{OUT_BUCKET}/more/3.jpg,tulips",
      ",./daisy/4.jpg,daisy",
      "training,../../../x.jpg,daisy",
      "unknown,daisy/5.jpg,daisy",
  ]) + "\n"
  bucket = gcs.client().bucket(IN_BUCKET)
  bucket.blob("flowers/lists/all[1].csv").upload_from_string(text.encode())
  bucket.blob("flowers/lists/all1.csv").upload_from_string(b"a decoy,x\n")
  folder = f"gs://{IN_BUCKET}/flowers/lists"
  check(list_path, images=[
      ListedImage("daisy", f"{folder}/daisy/1.jpg", "daisy/1.jpg", "training"),
      ListedImage("roses", f"gs://{IN_BUCKET}/flowers/roses/2.png",
                  f"gs://{IN_BUCKET}/flowers/roses/2.png", "test"),
      ListedImage("tulips", f"gs://{OUT_BUCKET}/more/3.jpg", f"gs://{OUT_BUCKET}/more/3.jpg",
                  "validation"),
      ListedImage("daisy", f"{folder}/daisy/4.jpg", "daisy/4.jpg", None),
  ], failures=[
      DecodeFailure("daisy", "../../../x.jpg", list_path,
                    f"line 6: '../../../x.jpg' climbs above the bucket of '{folder}'"),
      DecodeFailure("daisy", "daisy/5.jpg", list_path,
                    "line 7: unknown ML_USE 'unknown': expected one of training, "
                    "validation, test, unassigned"),
  ])
  with pytest.raises(ListFileError, match="does not exist"):
    ReadImageList(f"gs://{IN_BUCKET}/flowers/lists/missing.csv")
