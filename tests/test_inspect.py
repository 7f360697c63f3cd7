"""`exemplar-inspect` on datasets written by the real CLI."""

from __future__ import annotations

import csv
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from exemplar import inspect_cli as inspect
from exemplar import records
from tests.conftest import make_tree, run_cli, write_image
from exemplar.transforms import contact_sheet as cs

pytestmark = pytest.mark.slow  # datasets written by whole CLI runs: seconds each

SHARD0 = "exemplar-train.tfrecord-00000-of-00002"
SHARD1 = "exemplar-train.tfrecord-00001-of-00002"


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> str:
  """3 classes + one with a broken file, k=2, two shards."""
  base = tmp_path_factory.mktemp("small")
  root = str(base / "images")
  make_tree(root, {"apple": 5, "banana": 3, "cherry": 4})
  write_image(os.path.join(root, "damson", "good.png"),
              np.full((20, 20, 3), 90, dtype=np.uint8), "PNG")
  with open(os.path.join(root, "damson", "broken.jpg"), "wb") as f:
    f.write(b"\xff\xd8 this is not a jpeg")
  out = str(base / "out")
  assert run_cli(["--input_dir", root, "--output_dir", out, "--samples_per_class", "2",
                  "--image_size", "32", "48", "--num_shards", "2", "--seed", "5"]) == 0
  return out


@pytest.fixture(scope="module")
def thousand_classes(tmp_path_factory) -> str:
  """1,000 classes x 2 tiny PNGs, one picked per class."""
  base = tmp_path_factory.mktemp("thousand")
  rng = np.random.default_rng(0)
  for label in range(1000):
    folder = base / "images" / f"class_{label:04d}"
    folder.mkdir(parents=True)
    for i in range(2):
      Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
          folder / f"img_{i}.png")
  out = str(base / "out")
  assert run_cli(["--input_dir", str(base / "images"), "--output_dir", out,
                  "--image_size", "32", "32"]) == 0
  return out


def inspect_cli(argv, capsys):
  code = inspect.main(list(argv))
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_parse_args_defaults_and_one_line_errors():
  args = inspect.parse_args(["gs://bucket/out/"])
  assert args == inspect.InspectArgs(output_dir="gs://bucket/out")
  args = inspect.parse_args(["out", "--verify", "--contact_sheet", "s.png",
                             "--max_rows", "0", "--max_per_class", "3",
                             "--max_cells", "9", "--cell_size", "64"])
  assert (args.verify, args.contact_sheet, args.max_rows, args.max_per_class,
          args.max_cells, args.cell_size) == (True, "s.png", 0, 3, 9, 64)
  for argv, words in [([], "OUTPUT_DIR"), (["o", "--max_cells", "0"], "--max_cells"),
                      (["o", "--cell_size", "x"], "--cell_size"),
                      (["o", "--bogus"], "--bogus"), (["o", "--contact_sheet", "d/"], "file name")]:
    with pytest.raises(inspect.UsageError, match=words):
      inspect.parse_args(argv)


def test_a_folder_that_is_not_a_finished_dataset_is_exit_2(tmp_path, capsys, small_dataset):
  unfinished = str(tmp_path / "copy")
  shutil.copytree(small_dataset, unfinished)
  os.remove(os.path.join(unfinished, "_SUCCESS"))
  for folder in (str(tmp_path), str(tmp_path / "missing"), unfinished):
    code, out, err = inspect_cli([folder, "--verify"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no _SUCCESS" in err and folder in err
  code, _, err = inspect_cli([str(tmp_path), "--max_rows", "-1"], capsys)
  assert code == 2 and err.startswith("exemplar-inspect: error: argument --max_rows")


def test_a_finished_dataset_with_unreadable_metadata_is_exit_1(tmp_path, capsys, small_dataset):
  copy = str(tmp_path / "copy")
  shutil.copytree(small_dataset, copy)
  os.remove(os.path.join(copy, "summary.json"))
  code, out, err = inspect_cli([copy], capsys)
  assert code == 1 and out == ""
  assert err.count("\n") == 1 and "cannot read" in err and "summary.json" in err


def table_rows(out: str):
  """{class: (seen, examples, failed)} from the printed class table."""
  rows = {}
  for line in out.splitlines():
    parts = line.split()
    if len(parts) == 5 and parts[0].isdigit() and parts[2].isdigit():
      rows[parts[1]] = tuple(int(x) for x in parts[2:])
  return rows


def test_inspect_prints_classes_counts_shards_errors_seed_and_config(small_dataset, capsys):
  code, out, _ = inspect_cli([small_dataset], capsys)
  assert code == 0
  assert table_rows(out) == {"apple": (5, 2, 0), "banana": (3, 2, 0),
                             "cherry": (4, 2, 0), "damson": (2, 1, 1)}
  assert "classes            4" in out
  assert "examples           7  (14 files seen, 1 failed, 1 classes short)" in out
  assert "seed               5" in out
  assert "image              32 x 48, rgb, png (bilinear)" in out
  sizes = {name: os.path.getsize(os.path.join(small_dataset, name)) for name in (SHARD0, SHARD1)}
  assert f"shards             2  ({sum(sizes.values()):,} bytes)" in out
  for name, size in sizes.items():
    assert f"{size:,}" in next(line for line in out.splitlines() if name in line)
  assert "errors             1  (errors.csv)" in out
  assert "damson/broken.jpg" in out and "cannot decode" in out
  assert "samples_per_class=2" in out and "image_size=[32, 48]" in out
  code, out, _ = inspect_cli([small_dataset, "--max_rows", "2"], capsys)
  assert list(table_rows(out)) == ["apple", "banana"] and "... and 2 more classes" in out


def test_verify_passes_on_a_good_dataset(small_dataset, capsys):
  code, out, err = inspect_cli([small_dataset, "--verify"], capsys)
  assert code == 0, out + err
  assert "verify: read 7 records from 2 shard(s), decoded 7 images" in out
  assert "verify: OK" in out


@pytest.mark.parametrize("where", ["length", "length_crc", "payload", "last_byte"])
def test_verify_names_the_shard_with_a_flipped_byte(small_dataset, tmp_path, capsys, where):
  copy = str(tmp_path / "copy")
  shutil.copytree(small_dataset, copy)
  shard = os.path.join(copy, SHARD1)
  data = bytearray(open(shard, "rb").read())
  position = {"length": 1, "length_crc": 9, "payload": len(data) // 2,
              "last_byte": len(data) - 1}[where]
  data[position] ^= 0x40
  open(shard, "wb").write(bytes(data))
  code, out, _ = inspect_cli([copy, "--verify"], capsys)
  assert code == 1
  report = out.split("verify: FAILED, 1 problem(s):\n")[1]
  assert report.startswith(f"  {SHARD1}: record ") and "CRC mismatch" in report, out


def test_verify_compares_with_manifest_and_summary(small_dataset, tmp_path, capsys):
  copy = str(tmp_path / "copy")
  shutil.copytree(small_dataset, copy)
  manifest = os.path.join(copy, "manifest.csv")
  rows = list(csv.DictReader(open(manifest)))
  with open(manifest, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[1:])  # drop the first stored image
  open(os.path.join(copy, "exemplar-train.tfrecord-00000-of-00003"), "wb").close()
  code, out, _ = inspect_cli([copy, "--verify"], capsys)
  assert code == 1
  assert f"{rows[0]['relative_path']} is not in manifest.csv" in out
  shard = rows[0]["shard"]
  assert f"{shard}: {sum(r['shard'] == shard for r in rows)} records, manifest.csv lists" in out
  assert "summary.json says 7 examples, manifest.csv lists 6" in out
  # The edited manifest no longer matches the dataset's files record; the
  # shard-like file beside it is not on the record, so not the dataset's.
  assert "manifest.csv: " in out and "bytes, exemplar_files.json says" in out
  assert "exemplar-train.tfrecord-00000-of-00003" not in out


def expected_sheet(output_dir: str, max_per_class: int = 10**9, **render_args):
  """The sheet rendered from the records, read back by TF, each image as the
  JPEG thumbnail a sheet's cells travel as."""
  from exemplar import load_dataset
  import json
  manifest = list(csv.DictReader(open(os.path.join(output_dir, "manifest.csv"))))
  rank = {row["source_path"]: int(row["rank"]) for row in manifest}
  relative = {row["source_path"]: row["relative_path"] for row in manifest}
  dataset = load_dataset(output_dir, batch_size=None, shuffle=False, dtype="uint8", verbose=False)
  images = [(image.numpy(), int(label)) for image, label in dataset]
  paths = dataset.file_paths  # record order (one shard)
  cells = [cs.SheetCell(dataset.class_names[label], label, rank[path],
                        cs.thumbnail_jpeg(image, cs.DEFAULT_CELL_SIZE), "", relative[path])
           for (image, label), path in zip(images, paths) if rank[path] < max_per_class]
  summary = json.load(open(os.path.join(output_dir, "summary.json")))
  title = cs.sheet_title(output_dir, summary["config"]["seed"], summary["samples_per_class"])
  return cs.render_contact_sheet(cells, title=title, **render_args)


def test_contact_sheet_from_an_existing_dataset(tmp_path, capsys):
  root = str(tmp_path / "images")
  make_tree(root, {"apple": 5, "banana": 3, "cherry": 4})
  out = str(tmp_path / "out")
  assert run_cli(["--input_dir", root, "--output_dir", out, "--samples_per_class", "2",
                  "--image_size", "32", "48"]) == 0
  capsys.readouterr()
  sheet = str(tmp_path / "sheets" / "sheet.png")
  code, printed, _ = inspect_cli([out, "--contact_sheet", sheet], capsys)
  assert code == 0 and f"contact sheet: 6 images on 1 page(s): {sheet}" in printed
  assert open(sheet, "rb").read() == expected_sheet(out)[0]
  width, height = Image.open(sheet).size
  assert 400 <= width < 1500 and 200 < height < 1500

  capped = str(tmp_path / "capped.png")
  assert inspect_cli([out, "--contact_sheet", capped, "--max_per_class", "1"], capsys)[0] == 0
  first_only = expected_sheet(out, max_per_class=1,
                              note=cs.cap_note(3, 6, 1, cs.DEFAULT_MAX_CELLS))
  assert open(capped, "rb").read() == first_only[0]


def test_thousand_classes_table_verify_and_paged_sheet(thousand_classes, tmp_path, capsys):
  code, out, _ = inspect_cli([thousand_classes], capsys)
  assert code == 0
  assert "classes            1000" in out and "examples           1000" in out
  assert len(table_rows(out)) == 50 and "... and 950 more classes" in out
  code, out, _ = inspect_cli([thousand_classes, "--max_rows", "0"], capsys)
  rows = table_rows(out)
  assert len(rows) == 1000 and set(rows.values()) == {(2, 1, 0)}

  sheet = str(tmp_path / "sheet.png")
  code, out, _ = inspect_cli([thousand_classes, "--verify", "--contact_sheet", sheet], capsys)
  assert code == 0, out
  assert "verify: read 1000 records" in out and "verify: OK" in out
  pages = sorted(os.listdir(tmp_path))
  assert pages == ["sheet-%03d.png" % i for i in range(2, 11)] + ["sheet.png"]
  for name in pages:
    width, height = Image.open(os.path.join(tmp_path, name)).size
    assert 1000 < width < 2000 and 1000 < height < 2500


def test_parse_example_reads_what_tensorflow_writes():
  import tensorflow as tf
  feature = tf.train.Feature
  example = tf.train.Example(features=tf.train.Features(feature={
      "b": feature(bytes_list=tf.train.BytesList(value=[b"x", b"", "é".encode()])),
      "i": feature(int64_list=tf.train.Int64List(value=[0, -1, 2**62, -(2**63)])),
      "f": feature(float_list=tf.train.FloatList(value=[1.5, -2.25])),
      "empty": feature(),
  }))
  parsed = records.parse_example(example.SerializeToString())
  assert parsed == {"b": [b"x", b"", "é".encode()], "i": [0, -1, 2**62, -(2**63)],
                    "f": [1.5, -2.25], "empty": []}
  with pytest.raises(ValueError):
    records.parse_example(b"\x0a\xff")


def test_the_pipeline_writes_the_same_sheet_as_inspect(small_dataset, tmp_path, capsys):
  written = os.path.join(small_dataset, "contact_sheet.png")
  assert os.path.exists(written)
  sheet = str(tmp_path / "sheet.png")
  assert inspect_cli([small_dataset, "--contact_sheet", sheet], capsys)[0] == 0
  assert open(written, "rb").read() == open(sheet, "rb").read()
