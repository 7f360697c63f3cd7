"""Class names every reader gets back intact, and the junk folders that
operating systems, archivers and NAS boxes leave in image trees.

* A class whose name holds a line break (anything str.splitlines splits on),
  starts or ends with white space (TFDS strips names read from
  label.labels.txt) or is not valid UTF-8 cannot be stored one per line: it is
  refused before any job starts, unless --class_names leaves it out.
* --class_names is one CSV record on the command line (a quoted item may hold
  a comma) and a list of exact names in a config file.
* __MACOSX, $RECYCLE.BIN, @eaDir, lost+found, ... are skipped like hidden
  folders, at every depth, on local disk and gs://.
"""

from __future__ import annotations

import csv
import os
from typing import Dict, List, Set

import pytest

from exemplar.options import UsageError, parse_args
from tests.conftest import make_tree, noise_image, touch, write_image
from exemplar.transforms import listing
from exemplar.transforms.listing import ListingError


# Everything str.splitlines splits on (and so load_dataset's reading of
# class_names.txt); TFDS splits on '\n' after universal newlines ('\r' too).
LINE_BREAKS = ["\n", "\r", "\r\n", "\v", "\f", "\x1c", "\x1d", "\x1e",
               "\x85", "\u2028", "\u2029"]


def run_main(argv: List[str], capsys):
  """The `exemplar` entry point, in process: (exit code, stdout, stderr)."""
  from exemplar.main import main
  code = main(argv)
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def assert_one_line_error(code: int, stderr: str, *needles: str) -> None:
  assert code == 2, stderr
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("exemplar: error: "), stderr
  for needle in needles:
    assert needle in lines[0], stderr


def labelled(root: str, class_names=None) -> Dict[str, int]:
  classes = listing.resolve_classes(listing.list_class_folders(root), class_names)
  return {name: label for label, name in enumerate(classes)}


def walked(root: str, class_name: str) -> Set[str]:
  return set(listing.walk_class_folder(root, class_name))


# --- junk folders ---------------------------------------------------------

JUNK = ["__MACOSX", "$RECYCLE.BIN", "$Recycle.Bin", "RECYCLER",
        "System Volume Information", "lost+found", "@eaDir", "#recycle",
        "#snapshot", "@Recycle", "Network Trash Folder", "Temporary Items"]


@pytest.mark.parametrize("name", JUNK + ["__macosx", "@EADIR", ".hidden"])
def test_system_folders_are_skipped_like_hidden_ones(name):
  assert listing.is_skipped_folder(name)


@pytest.mark.parametrize("name", ["cat", "MACOSX", "eaDir", "recycle", "found",
                                  "__MACOSX_2", "lost found", "a,b"])
def test_ordinary_folders_are_not_skipped(name):
  assert not listing.is_skipped_folder(name)


@pytest.fixture
def junk_tree(tmp_path) -> str:
  """What a macOS zip, a Windows drive and a Synology share leave behind."""
  root = str(tmp_path / "tree")
  for relative in [
      "cat/a.jpg", "cat/sub/b.png", "dog/c.jpg",
      # a macOS archive: resource forks beside the classes and inside them
      "__MACOSX/._cat", "__MACOSX/cat/._a.jpg", "__MACOSX/cat/a.jpg",
      "cat/__MACOSX/._x.jpg", "cat/__MACOSX/x.jpg",
      # Synology thumbnails: one folder per image, beside it and deeper
      "cat/@eaDir/a.jpg/SYNOPHOTO_THUMB_XL.jpg", "cat/sub/@eaDir/b.png/SYNOPHOTO_THUMB_M.jpg",
      "@eaDir/x.jpg/SYNOPHOTO_THUMB_XL.jpg", "#recycle/old.jpg",
      # a Windows or Linux drive's root, and a recycle bin below a class
      "$RECYCLE.BIN/S-1-5-21/$RABCDEF.jpg", "System Volume Information/x.jpg",
      "lost+found/#1234.jpg", "dog/deep/$Recycle.Bin/y.jpg", "dog/lost+found/z.jpg",
  ]:
    touch(root, relative)
  return root


def test_junk_folders_are_neither_classes_nor_images_on_local_disk(junk_tree):
  assert labelled(junk_tree) == {"cat": 0, "dog": 1}
  assert walked(junk_tree, "cat") == {"cat/a.jpg", "cat/sub/b.png"}
  assert walked(junk_tree, "dog") == {"dog/c.jpg"}


def test_junk_folder_is_not_a_class_even_when_named(junk_tree):
  with pytest.raises(ListingError, match="__MACOSX"):
    listing.resolve_classes(listing.list_class_folders(junk_tree), ["cat", "__MACOSX"])


@pytest.mark.parametrize("relative,visible", [
    ("cat/a.jpg", True),
    ("cat/sub/b.png", True),
    ("cat/__MACOSX/x.jpg", False),
    ("cat/__MACOSX/._x.jpg", False),
    ("cat/@eaDir/a.jpg/SYNOPHOTO_THUMB_XL.jpg", False),
    ("cat/sub/$RECYCLE.BIN/y.jpg", False),
    ("cat/System Volume Information/y.jpg", False),
    ("cat/lost+found/y.jpg", False),
    ("__MACOSX/cat/a.jpg", False),
    ("cat/.hidden/y.jpg", False),
    ("cat/__MACOSX.jpg", True),  # a file, not a folder, of that name
])
def test_gcs_object_paths_in_junk_folders_are_not_images(relative, visible):
  assert listing._is_visible_image(relative) is visible


class _Page(list):
  def __init__(self, items, prefixes=()):
    super().__init__(items)
    self.prefixes = set(prefixes)


class _Blob:
  def __init__(self, name):
    self.name = name


class _Listing:
  def __init__(self, pages):
    self.pages = pages
    self.next_page_token = None

  def __iter__(self):
    return (blob for page in self.pages for blob in page)


class _FakeGcsClient:
  """The two list_blobs calls listing.py makes: delimited prefixes of the
  root, and every object name under a class."""

  def __init__(self, names: List[str]):
    self.names = sorted(names)

  def list_blobs(self, bucket, prefix, delimiter=None, **unused):
    assert bucket == "bucket"
    below = [n for n in self.names if n.startswith(prefix)]
    if delimiter:
      prefixes = {prefix + n[len(prefix):].split("/", 1)[0] + "/"
                  for n in below if "/" in n[len(prefix):]}
      return _Listing([_Page([], prefixes)])
    return _Listing([_Page([_Blob(n) for n in below])])


def test_junk_folders_are_neither_classes_nor_images_on_gcs(monkeypatch):
  names = ["root/" + r for r in [
      "cat/a.jpg", "cat/sub/b.png", "dog/c.jpg", ".hidden/d.jpg",
      "__MACOSX/cat/._a.jpg", "@eaDir/x.jpg/SYNOPHOTO_THUMB_XL.jpg",
      "$RECYCLE.BIN/x.jpg", "lost+found/x.jpg",
      "cat/__MACOSX/._x.jpg", "cat/@eaDir/a.jpg/SYNOPHOTO_THUMB_XL.jpg",
      "cat/sub/#recycle/y.jpg"]]
  client = _FakeGcsClient(names)
  monkeypatch.setattr(listing, "_gcs_location",
                      lambda root: (client, "bucket", "root/"))
  root = "gs://bucket/root"
  assert labelled(root) == {"cat": 0, "dog": 1}
  assert walked(root, "cat") == {"cat/a.jpg", "cat/sub/b.png"}
  # The paged listing of large classes filters the same way.
  assert set(listing.ClassListing(root, "cat")) == {"cat/a.jpg", "cat/sub/b.png"}


# --- class names that cannot be stored one per line ----------------------

@pytest.mark.parametrize("separator", LINE_BREAKS, ids=[repr(s) for s in LINE_BREAKS])
def test_names_with_any_line_break_are_refused(separator):
  name = "a" + separator + "b"
  with pytest.raises(ListingError) as error:
    listing.resolve_classes([name, "cat"], None)
  message = str(error.value)
  assert repr(name) in message and "leave them out" in message
  assert "--" not in message  # library errors name no flag; the CLI adds it
  assert len(message.splitlines()) == 1
  assert listing.class_name_problem(name) == "holds a line break"


@pytest.mark.parametrize("name", [" cat", "cat ", "\tcat", "cat\x1f", "\xa0cat", "\u3000cat"])
def test_names_with_surrounding_white_space_are_refused(name):
  with pytest.raises(ListingError, match="white space") as error:
    listing.resolve_classes(["dog", name], None)
  assert repr(name) in str(error.value)
  assert listing.class_name_problem(name) == "starts or ends with white space, which TFDS strips"


def test_undecodable_names_are_refused():
  name = os.fsdecode(b"bad\xff")  # how Python lists a folder whose name is not UTF-8
  with pytest.raises(ListingError, match="UTF-8"):
    listing.resolve_classes([name], None)
  assert listing.class_name_problem(name) == "is not valid UTF-8"


@pytest.mark.parametrize("name", ["cat", "a b", "a,b", "crème brûlée 'q\" x", "猫",
                                  "tab\tinside", "#1 $HOME"])
def test_ordinary_names_pass(name):
  assert listing.class_name_problem(name) is None


def test_refusal_names_every_bad_class(tmp_path):
  found = ["a\nb", " cat", "dog", "x\u2028y"]
  with pytest.raises(ListingError) as error:
    listing.resolve_classes(found, None)
  for name in ["'a\\nb'", "' cat'", "'x\\u2028y'"]:
    assert name in str(error.value)
  assert "'dog'" not in str(error.value)


def test_bad_names_on_disk_are_refused_unless_left_out(tmp_path):
  root = str(tmp_path / "tree")
  for name in ["a\nb", "x\u2028y", " cat", "dog"]:
    touch(root, name + "/i.jpg")
  found = listing.list_class_folders(root)
  assert found == sorted(["a\nb", "x\u2028y", " cat", "dog"])
  with pytest.raises(ListingError):
    listing.resolve_classes(found, None)
  # Left out by --class_names, they do not block the run.
  assert labelled(root, ["dog"]) == {"dog": 0}
  # Named in --class_names, they are refused all the same.
  with pytest.raises(ListingError, match=r"'a\\nb'"):
    listing.resolve_classes(found, ["dog", "a\nb"])


def test_cli_refuses_a_bad_name_in_one_line_before_any_job(tmp_path, capsys):
  root = str(tmp_path / "tree")
  touch(root, "a\nb/i.jpg")
  touch(root, "cat/i.jpg")
  out = str(tmp_path / "out")
  code, stdout, err = run_main(["--input_dir", root, "--output_dir", out], capsys)
  assert_one_line_error(code, err, "'a\\nb'", "--class_names")
  assert stdout == "" and not os.path.exists(out)


# --- --class_names with commas in names -----------------------------------

@pytest.mark.parametrize("flag,names", [
    ('a,"b,c",d', ("a", "b,c", "d")),
    ("a,b,c", ("a", "b", "c")),
    (" b , a ", ("b", "a")),
    ('a, "b,c"', ("a", "b,c")),
    ('"q""uote",x', ('q"uote', "x")),
    ('" kept ",x', (" kept ", "x")),  # a quoted item is kept exactly
    ("a,,b,", ("a", "b")),
])
def test_class_names_flag_is_one_csv_record(flag, names):
  config, _ = parse_args(["--class_names", flag])
  assert config.class_names == names


@pytest.mark.parametrize("flag", ['a,"b', '"b,c" x,d'])
def test_malformed_class_names_flag_is_a_usage_error(flag):
  with pytest.raises(UsageError, match="--class_names"):
    parse_args(["--class_names", flag])


def write_config(tmp_path, text: str) -> str:
  path = tmp_path / "config.yaml"
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_config_list_keeps_every_name_exactly(tmp_path):
  path = write_config(tmp_path, 'class_names: [a, "b,c", " d ", "e,f,g", 7]\n')
  config, _ = parse_args(["--config", path])
  assert config.class_names == ("a", "b,c", " d ", "e,f,g", "7")
  # The command line overrides it, as every flag does.
  config, _ = parse_args(["--config", path, "--class_names", '"b,c"'])
  assert config.class_names == ("b,c",)


@pytest.mark.parametrize("item", ["yes", "1.50", "null", "[x]"])
def test_config_list_refuses_items_yaml_would_misread(tmp_path, item):
  path = write_config(tmp_path, f"class_names: [a, {item}]\n")
  with pytest.raises(UsageError, match="class_names"):
    parse_args(["--config", path])


def test_a_folder_named_with_a_comma_can_be_selected(tmp_path):
  root = str(tmp_path / "tree")
  for name in ["a", "b", "a,b", "c"]:
    touch(root, name + "/i.jpg")
  found = listing.list_class_folders(root)
  config, _ = parse_args(["--class_names", 'c,"a,b"'])
  assert listing.resolve_classes(found, config.class_names) == ["c", "a,b"]
  path = write_config(tmp_path, 'class_names: ["a,b", a]\n')
  config, _ = parse_args(["--config", path])
  assert listing.resolve_classes(found, config.class_names) == ["a,b", "a"]


# --- one real run -----------------------------------------------------------

@pytest.mark.slow
def test_cli_run_with_a_comma_class_junk_folders_and_a_bad_name(tmp_path, capsys):
  """A real run on a tree with a class named 'a,b', macOS and Synology junk
  and a class whose name holds a line break: refused as it is, run with
  --class_names leaving the bad one out and selecting 'a,b' by quoting."""
  import numpy as np
  root = str(tmp_path / "tree")
  expected = set(make_tree(root, {"a,b": 3, "cat": 2}, size=(24, 24)))
  rng = np.random.default_rng(1)
  # Real, decodable images in the junk folders: listed, they would be picked.
  for junk in ["__MACOSX/cat/a.jpg", "cat/__MACOSX/x.jpg",
               "cat/@eaDir/img_000.jpg/SYNOPHOTO_THUMB_XL.jpg", "a,b/$RECYCLE.BIN/y.jpg",
               "bad\nname/z.jpg"]:
    write_image(os.path.join(root, *junk.split("/")), noise_image(rng, 24, 24), "JPEG")
  out = str(tmp_path / "out")
  code, _, err = run_main(["--input_dir", root, "--output_dir", out], capsys)
  assert_one_line_error(code, err, "'bad\\nname'")
  assert not os.path.exists(out)

  code, _, err = run_main(["--input_dir", root, "--output_dir", out,
                           "--class_names", 'cat,"a,b"', "--samples_per_class", "all",
                           "--image_size", "24", "24", "--no_contact_sheet"], capsys)
  assert code == 0, err
  with open(os.path.join(out, "class_names.txt"), encoding="utf-8") as f:
    assert f.read() == "cat\na,b\n"
  with open(os.path.join(out, "manifest.csv"), newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert {row["relative_path"] for row in rows} == expected
  assert {(row["class_name"], row["label"]) for row in rows} == {("cat", "0"), ("a,b", "1")}

  from exemplar import load_dataset
  ds = load_dataset(out, batch_size=None, shuffle=False, dtype="uint8", verbose=False)
  assert ds.class_names == ["cat", "a,b"]
  assert sorted(int(label) for _, label in ds) == [0, 0, 1, 1, 1]
  import tensorflow_datasets as tfds
  builder = tfds.builder_from_directory(out)
  assert builder.info.features["label"].names == ["cat", "a,b"]
  records = list(builder.as_dataset(split="train").as_numpy_iterator())
  assert sorted((r["image/class_name"].decode(), int(r["label"])) for r in records) == (
      [("a,b", 1)] * 3 + [("cat", 0)] * 2)
