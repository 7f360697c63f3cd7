"""`exemplar --input_list FILE` end to end: real list files of every format,
real images, the real command, and the output read back by real readers
(`exemplar.load_dataset`, TFDS, manifest.csv, errors.csv); locally and on the
fake-gcs-server emulator."""

from __future__ import annotations

import collections
import csv
import io
import json
import os
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest

from exemplar.transforms import listing
from tests.conftest import make_tree, noise_image, run_cli, write_image
from tests.test_gcs import (IN_BUCKET, OUT_BUCKET, examples,  # noqa: F401 - gcs: the emulator
                            gcs, manifest_rows, read_gcs, upload_tree)

pytestmark = pytest.mark.slow  # whole CLI runs: seconds each

SIZE = ["--image_size", "8", "8", "--no_contact_sheet"]
# The list's labels are not the folder names, and sort in another order
# (label i = i-th sorted label); one holds a comma and one a space.
LABELS = {"ant": "zebra", "bee": "sea lion", "cat": "aardvark, earth pig"}
SORTED_LABELS = sorted(LABELS.values())  # aardvark, earth pig / sea lion / zebra


def write_text(path: str, text: str) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8", newline="") as f:
    f.write(text)
  return path


def csv_text(rows) -> str:
  out = io.StringIO()
  csv.writer(out, lineterminator="\n").writerows(rows)
  return out.getvalue()


def read_csv(path: str) -> List[Dict[str, str]]:
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f))


def stderr_lines(err: str) -> List[str]:
  """What exemplar printed on stderr, without log records and TF's noise."""
  return [line for line in err.splitlines()
          if line.strip() and " INFO " not in line and " WARNING " not in line
          and not line.startswith(("I0000", "W0000", "E0000", "WARNING: All log"))]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Tuple[str, List[str]]:
  """3 classes x 3 tiny images (JPEG and PNG); relative paths."""
  root = str(tmp_path_factory.mktemp("list_cli") / "images")
  return root, make_tree(root, {"ant": 3, "bee": 3, "cat": 3}, seed=3, size=(12, 10))


# --- one list file per format: (tree root, relative paths, a folder of its own)
# -> (list file's path, its text). Roots and folders are local paths or gs://
# URIs (os.path joins '/'-separated paths, and relpath of two URIs in one
# bucket is their relative path), so the local and the emulator tests share them.


def plain_csv_with_header(root, relative, folder) -> Tuple[str, str]:
  # Beside the class folders, relative paths; extra columns are ignored.
  return os.path.join(root, "list.csv"), csv_text(
      [["path", "label", "notes"]]
      + [[rel, LABELS[rel.split("/")[0]], "x"] for rel in relative])


def plain_csv_without_header(root, relative, folder) -> Tuple[str, str]:
  # In a folder of its own: paths relative to it, through '..'.
  up = os.path.relpath(root, folder)
  return os.path.join(folder, "lists", "list.csv"), csv_text(
      [[f"../{up}/{rel}", LABELS[rel.split("/")[0]]] for rel in relative])


def vertex_csv_with_ml_use(root, relative, folder) -> Tuple[str, str]:
  uses = ["training", "VALIDATION", "test", "unassigned", "TRAIN", ""]
  return os.path.join(folder, "vertex.csv"), csv_text(
      [[uses[i % len(uses)], os.path.join(root, rel), LABELS[rel.split("/")[0]]]
       for i, rel in enumerate(relative)])


def vertex_csv_without_ml_use(root, relative, folder) -> Tuple[str, str]:
  return os.path.join(folder, "vertex.csv"), csv_text(
      [[os.path.join(root, rel), LABELS[rel.split("/")[0]]] for rel in relative])


def plain_jsonl(root, relative, folder) -> Tuple[str, str]:
  return os.path.join(root, "list.jsonl"), "".join(
      json.dumps({"path": rel, "label": LABELS[rel.split("/")[0]]}) + "\n"
      for rel in relative)


def vertex_jsonl(root, relative, folder) -> Tuple[str, str]:
  uses = ["training", "validation", "test"]
  return os.path.join(folder, "import.jsonl"), "".join(
      json.dumps({"imageGcsUri": os.path.join(root, rel),
                  "classificationAnnotation": {"displayName": LABELS[rel.split("/")[0]]},
                  "dataItemResourceLabels": {
                      "aiplatform.googleapis.com/ml_use": uses[i % 3]}}) + "\n"
      for i, rel in enumerate(relative))


FORMATS: Dict[str, Callable[..., Tuple[str, str]]] = {
    "csv-header": plain_csv_with_header,
    "csv-no-header": plain_csv_without_header,
    "vertex-csv-ml-use": vertex_csv_with_ml_use,
    "vertex-csv": vertex_csv_without_ml_use,
    "jsonl": plain_jsonl,
    "vertex-jsonl": vertex_jsonl,
}


def write_list(path_and_text: Tuple[str, str]) -> str:
  """Writes a list file on local disk; returns its path."""
  return write_text(*path_and_text)


def expected_relative_path(source: str, list_path: str) -> str:
  """manifest's relative_path: to the list file's folder when the image is
  below it, else the source path whole."""
  folder = list_path.rsplit("/", 1)[0]
  if source.startswith(folder + "/"):
    return source[len(folder) + 1:]
  return source


def check_dataset(out: str, label_of: Dict[str, str], class_names: List[str], k: int,
                  size=(8, 8)) -> List[Dict[str, str]]:
  """The finished dataset in `out` holds k images of each class, labelled as
  the list says (`label_of`: absolute source path -> label); returns the
  manifest's rows."""
  assert os.path.exists(os.path.join(out, "_SUCCESS"))
  with open(os.path.join(out, "class_names.txt"), encoding="utf-8") as f:
    assert f.read() == "".join(name + "\n" for name in class_names)

  manifest = read_csv(os.path.join(out, "manifest.csv"))
  assert collections.Counter(row["class_name"] for row in manifest) == {
      name: k for name in class_names}
  for row in manifest:
    source = row["source_path"]
    assert os.path.isabs(source) and os.path.isfile(source), source
    assert label_of[source] == row["class_name"]
    assert int(row["label"]) == class_names.index(row["class_name"])
  assert len({row["source_path"] for row in manifest}) == len(manifest)

  from exemplar import load_dataset
  ds = load_dataset(out, batch_size=None, shuffle=False, dtype="uint8", verbose=False)
  assert ds.class_names == class_names
  pairs = [(image.numpy(), int(label)) for image, label in ds]
  assert len(pairs) == k * len(class_names)
  assert all(image.shape == (*size, 3) and image.dtype == np.uint8 for image, _ in pairs)
  assert sorted(label for _, label in pairs) == sorted(
      i for i in range(len(class_names)) for _ in range(k))

  import tensorflow_datasets as tfds
  builder = tfds.builder_from_directory(out)
  assert builder.info.features["label"].names == class_names
  records = list(builder.as_dataset(split="train").as_numpy_iterator())
  assert len(records) == len(manifest)
  by_source = {row["source_path"]: row for row in manifest}
  for record in records:
    source = record["image/filename"].decode()
    assert record["label"] == class_names.index(label_of[source])
    assert record["image/class_name"].decode() == label_of[source]
    assert record["image/relative_path"].decode() == by_source[source]["relative_path"]
    assert record["image/sha256"].decode() == by_source[source]["sha256"]
  return manifest


# --- 1. every format ------------------------------------------------------------


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_list_format_gives_k_labelled_images_per_class(name, tree, tmp_path):
  root, relative = tree
  list_path = write_list(FORMATS[name](root, relative, str(tmp_path)))
  out = str(tmp_path / "out")
  assert run_cli(["--input_list", list_path, "--output_dir", out,
                  "--samples_per_class", "2", "--seed", "1", *SIZE]) == 0
  label_of = {os.path.join(root, rel): LABELS[rel.split("/")[0]] for rel in relative}
  manifest = check_dataset(out, label_of, SORTED_LABELS, k=2)
  # Relative paths: to the list file's folder when the image is below it.
  for row in manifest:
    assert row["relative_path"] == expected_relative_path(row["source_path"], list_path)
  assert read_csv(os.path.join(out, "errors.csv")) == []
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert [c["files_seen"] for c in summary["per_class"]] == [3, 3, 3]
  assert summary["classes_short"] == []


# --- 2. the same picks as the folder ---------------------------------------------


def test_a_list_of_the_folder_gives_the_folders_picks(tmp_path, monkeypatch):
  root = str(tmp_path / "images")
  relative = make_tree(root, {"ant": 6, "bee": 5, "cat": 7}, seed=9, size=(12, 10))
  write_image(os.path.join(root, "bee", "sub", "deep.png"),
              noise_image(np.random.default_rng(2), 12, 10), "PNG")
  relative.append("bee/sub/deep.png")
  write_text(os.path.join(root, "list.csv"), csv_text(
      [["path", "label"]] + [[rel, rel.split("/")[0]] for rel in reversed(relative)]))
  flags = ["--samples_per_class", "2", "--seed", "5", *SIZE]
  from_folder, from_list = str(tmp_path / "folder"), str(tmp_path / "list")
  assert run_cli(["--input_dir", root, "--output_dir", from_folder, *flags]) == 0
  # A relative --input_list (from the working directory) names the same file.
  monkeypatch.chdir(root)
  assert run_cli(["--input_list", "list.csv", "--output_dir", from_list, *flags]) == 0

  folder_rows = read_csv(os.path.join(from_folder, "manifest.csv"))
  list_rows = read_csv(os.path.join(from_list, "manifest.csv"))
  picks = lambda rows: {c: [r["relative_path"] for r in rows if r["class_name"] == c]
                        for c in ("ant", "bee", "cat")}
  assert picks(list_rows) == picks(folder_rows)
  assert all(len(p) == 2 for p in picks(list_rows).values())
  # Not only the same picks: the same records, byte for byte.
  for file_name in ("manifest.csv", "class_names.txt", "errors.csv",
                    "exemplar-train.tfrecord-00000-of-00001"):
    assert (open(os.path.join(from_folder, file_name), "rb").read()
            == open(os.path.join(from_list, file_name), "rb").read()), file_name
  label_of = {os.path.join(root, rel): rel.split("/")[0] for rel in relative}
  check_dataset(from_list, label_of, ["ant", "bee", "cat"], k=2)
  seen = lambda out: [c["files_seen"] for c in json.load(
      open(os.path.join(out, "summary.json")))["per_class"]]
  assert seen(from_list) == seen(from_folder) == [6, 6, 7]


# --- 3. bad rows, bad invocations, --class_names -----------------------------------


def test_bad_rows_are_recorded_with_line_numbers_and_the_run_goes_on(tree, tmp_path):
  root, _ = tree
  list_path = write_text(os.path.join(str(tmp_path), "lists", "bad rows.csv"), "\n".join([
      f"{root}/ant/img_000.jpg,ant",            # 1
      f"{root}/ant/img_001.png,ant",            # 2
      f"{root}/ant/img_001.png,ant",            # 3 a duplicate: counts once
      f"{root}/ant/img_002.jpg, ant ",          # 4 the same label, unquoted spaces
      f"{root}/ant/notes.txt,ant",              # 5 not an image name
      f"{root}/bee/img_000.jpg,bee",            # 6
      f"{root}/bee/img_001.png,bee",            # 7
      f"{root}/bee/img_002.jpg,bee",            # 8
      "",                                       # 9 blank: ignored
      f"{root}/bee/img_000.jpg,cat",            # 10 a second label for line 6's path
      f"{root}/cat/img_000.jpg,cat,big,x",      # 11 four fields
      f"{root}/cat/img_001.png",                # 12 no label
      f"{root}/cat/img_002.jpg,cat",            # 13
      f"{root}/cat/missing.jpg,cat",            # 14 listed, not there
      '"unclosed,cat',                          # 15 a quote not closed
      "training,cat/x.jpg,cat,more",            # 16 four fields
  ]) + "\n")
  out = str(tmp_path / "out")
  assert run_cli(["--input_list", list_path, "--output_dir", out,
                  "--samples_per_class", "3", *SIZE]) == 0
  errors = {(e["class_name"], e["relative_path"]): e for e in read_csv(
      os.path.join(out, "errors.csv"))}
  from_list = {key: e["reason"] for key, e in errors.items()
               if e["source_path"] == list_path}
  assert from_list == {
      ("ant", f"{root}/ant/notes.txt"):
          "line 5: skipped: not an image name (Keras's extensions: "
          + " ".join(listing.IMAGE_EXTENSIONS) + ")",
      ("", f"{root}/bee/img_000.jpg"):
          "listed under 2 labels: 'bee' (line 6), 'cat' (line 10); not used",
      ("", "line 11"):
          "line 11: expected path,label or ML_USE,path,label, got 4 fields "
          "(one label per image)",
      ("", f"{root}/cat/img_001.png"):
          "line 12: no label (exemplar needs one label per image)",
      ("", "line 15"):
          "line 15: a quoted field is not closed on its line (a line break inside "
          "a quoted field is not supported)",
      ("", "line 16"):
          "line 16: expected path,label or ML_USE,path,label, got 4 fields "
          "(one label per image)",
  }
  # The missing image was picked (k=3 takes the whole class) and failed.
  missing = errors[("cat", f"{root}/cat/missing.jpg")]
  assert missing["source_path"] == f"{root}/cat/missing.jpg" and missing["reason"]
  assert len(errors) == len(from_list) + 1

  manifest = read_csv(os.path.join(out, "manifest.csv"))
  assert sorted((r["class_name"], r["source_path"]) for r in manifest) == [
      ("ant", f"{root}/ant/img_000.jpg"), ("ant", f"{root}/ant/img_001.png"),
      ("ant", f"{root}/ant/img_002.jpg"),
      ("bee", f"{root}/bee/img_001.png"), ("bee", f"{root}/bee/img_002.jpg"),
      ("cat", f"{root}/cat/img_002.jpg")]
  summary = json.load(open(os.path.join(out, "summary.json")))
  per_class = {c["class_name"]: c for c in summary["per_class"]}
  assert {n: c["files_seen"] for n, c in per_class.items()} == {"ant": 3, "bee": 2, "cat": 2}
  assert set(summary["classes_short"]) == {"bee", "cat"}
  assert open(os.path.join(out, "class_names.txt")).read() == "ant\nbee\ncat\n"


def test_input_dir_with_input_list_is_one_line_exit_2(tree, tmp_path, capsys):
  root, relative = tree
  list_path = write_list(plain_jsonl(root, relative, str(tmp_path)))
  out = tmp_path / "out"
  code = run_cli(["--input_dir", root, "--input_list", list_path, "--output_dir", str(out)])
  err = capsys.readouterr().err
  lines = stderr_lines(err)
  assert code == 2 and len(lines) == 1, err
  assert lines[0] == ("exemplar: error: --input_dir and --input_list cannot be used "
                      "together"), err
  assert not out.exists()


def test_a_missing_list_file_is_one_line_exit_2_naming_it(tmp_path, capsys):
  missing = str(tmp_path / "nowhere" / "list.csv")
  out = tmp_path / "out"
  code = run_cli(["--input_list", missing, "--output_dir", str(out), *SIZE])
  err = capsys.readouterr().err
  lines = stderr_lines(err)
  assert code == 2 and len(lines) == 1, err
  assert lines[0].startswith("exemplar: error: ") and missing in lines[0], err
  assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("name,text,needle", [
    ("empty.csv", "", "is empty"),
    ("a_folder.csv", None, "is a folder"),
    ("list.txt", "ant/img_000.jpg,ant\n", "cannot tell the format"),
    ("captions.csv", "file_name,caption\nant/img_000.jpg,an ant\n", "names no label column"),
    ("array.json", '[{"path": "ant/img_000.jpg", "label": "ant"}]\n', "JSON array"),
], ids=["empty", "folder", "unknown-extension", "header-without-label", "json-array"])
def test_a_list_file_that_cannot_be_read_is_one_line_exit_2(name, text, needle, tree,
                                                            tmp_path, capsys):
  """README: a missing, empty or folder list file, an unknown extension or a
  CSV header without a label column is refused up front, one line, exit 2."""
  root, _ = tree
  list_path = os.path.join(str(tmp_path), "lists", name)
  if text is None:
    os.makedirs(list_path)
  else:
    write_text(list_path, text)
  out = tmp_path / "out"
  code = run_cli(["--input_list", list_path, "--output_dir", str(out), *SIZE])
  err = capsys.readouterr().err
  lines = stderr_lines(err)
  assert code == 2 and len(lines) == 1, err
  assert lines[0].startswith("exemplar: error: ") and needle in lines[0], err
  assert list_path in lines[0], err
  assert "Traceback" not in err and not out.exists()


def test_class_names_restrict_and_order_the_lists_labels(tree, tmp_path, capsys):
  root, relative = tree
  list_path = write_list(plain_csv_with_header(root, relative, str(tmp_path)))
  label_of = {os.path.join(root, rel): LABELS[rel.split("/")[0]] for rel in relative}
  out = str(tmp_path / "out")
  assert run_cli(["--input_list", list_path, "--output_dir", out, "--samples_per_class",
                  "2", "--class_names", 'zebra,"aardvark, earth pig"', *SIZE]) == 0
  manifest = check_dataset(out, label_of, ["zebra", "aardvark, earth pig"], k=2)
  assert "sea lion" not in {row["class_name"] for row in manifest}
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert [c["class_name"] for c in summary["per_class"]] == ["zebra", "aardvark, earth pig"]

  # A class asked for twice: refused up front, as with --input_dir.
  code = run_cli(["--input_list", list_path, "--output_dir", str(tmp_path / "twice"),
                  "--class_names", "zebra,zebra", *SIZE])
  err = capsys.readouterr().err
  lines = stderr_lines(err)
  assert code == 2 and len(lines) == 1, err
  assert lines[0].startswith("exemplar: error: --class_names") and "zebra" in lines[0], err
  assert not (tmp_path / "twice").exists()


# --- 4. on Cloud Storage (the emulator) --------------------------------------------


def test_a_list_file_on_gcs_with_relative_paths_to_gcs_output(gcs, tree):  # noqa: F811
  root, relative = tree
  upload_tree(gcs.client(), root, IN_BUCKET, "listcli/data/")
  folder = f"gs://{IN_BUCKET}/listcli/data"
  list_text = csv_text([["image", "class"]] + [
      [rel, LABELS[rel.split("/")[0]]] for rel in relative]
      + [["ant/img_000.jpg", "sea lion"], ["../../../escape.jpg", "zebra"]])
  gcs.client().bucket(IN_BUCKET).blob("listcli/data/list.csv").upload_from_string(
      list_text.encode())
  list_path = f"{folder}/list.csv"
  out = f"gs://{OUT_BUCKET}/listcli/run"
  assert run_cli(["--input_list", list_path, "--output_dir", out,
                  "--samples_per_class", "2", "--seed", "3", *SIZE]) == 0

  assert read_gcs(out + "/class_names.txt").decode() == "".join(
      n + "\n" for n in SORTED_LABELS)
  assert read_gcs(out + "/_SUCCESS") is not None
  summary = json.loads(read_gcs(out + "/summary.json"))
  records = [example for shard in summary["shards"]
             for example in examples(read_gcs(f"{out}/{shard['file']}"))]
  # ant/img_000.jpg is under two labels: not used; ant keeps 2 of its other 2.
  assert len(records) == summary["num_examples"] == 6
  for record in records:
    relative_path = record["image/relative_path"][0].decode()
    assert record["image/filename"] == [f"{folder}/{relative_path}".encode()]
    label = LABELS[relative_path.split("/")[0]]
    assert record["image/class_name"] == [label.encode()]
    assert record["label"] == [SORTED_LABELS.index(label)]
  manifest = manifest_rows(read_gcs(out + "/manifest.csv"))
  assert collections.Counter(r["class_name"] for r in manifest) == {
      label: 2 for label in SORTED_LABELS}
  assert "ant/img_000.jpg" not in {r["relative_path"] for r in manifest}
  errors = manifest_rows(read_gcs(out + "/errors.csv"))
  assert sorted((e["relative_path"], e["reason"]) for e in errors) == [
      ("../../../escape.jpg", f"line 12: '../../../escape.jpg' climbs above the bucket of "
                           f"'{folder}'"),
      ("ant/img_000.jpg", "listed under 2 labels: 'zebra' (line 2), 'sea lion' (line 11); "
                          "not used"),
  ]
  assert all(e["source_path"] == list_path for e in errors)


@pytest.fixture(scope="module")
def gcs_tree(gcs, tree) -> Tuple[str, List[str]]:  # noqa: F811
  """The 3 x 3 tree at gs://exemplar-in/listformats/images."""
  root, relative = tree
  upload_tree(gcs.client(), root, IN_BUCKET, "listformats/images/")
  return f"gs://{IN_BUCKET}/listformats/images", relative


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_list_format_on_gcs_gives_k_labelled_images_per_class(name, gcs,  # noqa: F811
                                                                   gcs_tree):
  """The same list files as test_each_list_format_..., every path and the
  list file on the emulator, the dataset written there too."""
  root, relative = gcs_tree
  list_path, text = FORMATS[name](root, relative, f"gs://{IN_BUCKET}/listformats/{name}")
  bucket, key = list_path[len("gs://"):].split("/", 1)
  assert bucket == IN_BUCKET
  gcs.client().bucket(bucket).blob(key).upload_from_string(text.encode())
  out = f"gs://{OUT_BUCKET}/listformats/{name}"
  assert run_cli(["--input_list", list_path, "--output_dir", out,
                  "--samples_per_class", "2", "--seed", "1", *SIZE]) == 0

  label_of = {f"{root}/{rel}": LABELS[rel.split("/")[0]] for rel in relative}
  assert read_gcs(out + "/_SUCCESS") is not None
  assert read_gcs(out + "/class_names.txt").decode() == "".join(
      n + "\n" for n in SORTED_LABELS)
  manifest = manifest_rows(read_gcs(out + "/manifest.csv"))
  assert collections.Counter(r["class_name"] for r in manifest) == {
      label: 2 for label in SORTED_LABELS}
  assert len({r["source_path"] for r in manifest}) == len(manifest) == 6
  for row in manifest:
    assert label_of[row["source_path"]] == row["class_name"], row
    assert int(row["label"]) == SORTED_LABELS.index(row["class_name"])
    assert row["relative_path"] == expected_relative_path(row["source_path"], list_path)
  summary = json.loads(read_gcs(out + "/summary.json"))
  assert summary["num_examples"] == 6 and summary["num_failed"] == 0
  assert [c["files_seen"] for c in summary["per_class"]] == [3, 3, 3]
  assert summary["classes_short"] == []
  assert manifest_rows(read_gcs(out + "/errors.csv")) == []
  by_source = {row["source_path"]: row for row in manifest}
  records = [example for shard in summary["shards"]
             for example in examples(read_gcs(f"{out}/{shard['file']}"))]
  assert len(records) == 6
  for record in records:
    source = record["image/filename"][0].decode()
    assert record["image/class_name"] == [label_of[source].encode()]
    assert record["label"] == [SORTED_LABELS.index(label_of[source])]
    assert record["image/relative_path"] == [by_source[source]["relative_path"].encode()]
