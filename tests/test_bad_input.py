"""Bad and odd input files: every file is either stored or recorded with a reason.

One tree holds every odd file we know of and goes through one real pipeline run
(`--samples_per_class all`, so every file is attempted); finer checks call
`ImageDecoder` directly. Pixels of the odd-but-valid files are compared with
what Keras's `image_dataset_from_directory` gives for the same files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from typing import Dict, List, Tuple

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.conftest import noise_image, run_cli, write_image
from exemplar.transforms import sampling
from exemplar.transforms.decoding import DecodeResult, ImageDecoder, ImageSettings

EXEMPLAR = os.path.join(os.path.dirname(sys.executable), "exemplar")
SIZE = (24, 20)  # --image_size for the runs: small, and not square
ORIENTATION = 0x0112


# --- crafting odd files -------------------------------------------------------

def encoded(image: Image.Image, fmt: str, **save_args) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **save_args)
  return buffer.getvalue()


def rgb(seed: int, height: int = 32, width: int = 40) -> np.ndarray:
  return noise_image(np.random.default_rng(seed), height, width)


def asymmetric(height: int = 40, width: int = 64) -> np.ndarray:
  """Dark, with a bright block in the top-left corner: shows any rotation."""
  array = np.full((height, width, 3), 30, np.uint8)
  array[:height // 3, :width // 4] = (250, 200, 20)
  array[-4:, :, 2] = 180  # a blue stripe along the bottom edge
  return array


def with_orientation(array: np.ndarray, fmt: str, orientation: int = 6) -> bytes:
  exif = Image.Exif()
  exif[ORIENTATION] = orientation
  return encoded(Image.fromarray(array), fmt, exif=exif.tobytes())


def png_chunk(kind: bytes, data: bytes) -> bytes:
  return (struct.pack(">I", len(data)) + kind + data
          + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def huge_png(width: int = 100_000, height: int = 100_000) -> bytes:
  """A valid PNG signature and IHDR (right CRC) claiming huge dimensions,
  with a few bytes of pixel data: a decompression bomb's header."""
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
          + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def huge_bmp(width: int = 100_000, height: int = 100_000) -> bytes:
  pixels = b"\0" * 64
  header = struct.pack("<2sIHHI", b"BM", 14 + 40 + len(pixels), 0, 0, 54)
  info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels),
                     2835, 2835, 0, 0)
  return header + info + pixels


def big_jpeg(width: int = 12_000, height: int = 12_000) -> bytes:
  """A tiny JPEG whose SOF0 header claims width x height. TF does decode it
  (grey-filled) when asked: 2 s and ~0.5 GB here, so the header check matters."""
  raw = bytearray(encoded(Image.fromarray(rgb(1, 8, 8)), "JPEG"))
  sof = raw.find(b"\xff\xc0")
  struct.pack_into(">HH", raw, sof + 5, height, width)
  return bytes(raw)


def animated_gif() -> bytes:
  frames = [Image.fromarray(rgb(10 + i)) for i in range(3)]
  return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:],
                 duration=50, loop=0)


def palette_with_transparency() -> bytes:
  image = Image.fromarray(rgb(5)).convert("P", palette=Image.Palette.ADAPTIVE)
  return encoded(image, "PNG", transparency=0)


def truncated_jpeg() -> bytes:
  raw = encoded(Image.fromarray(rgb(6)), "JPEG")
  return raw[:len(raw) * 3 // 4]


# Files that must decode (like Keras): relative name -> bytes.
def good_odd_files() -> Dict[str, bytes]:
  gray16 = (np.random.default_rng(7).integers(0, 65536, (32, 40))).astype(np.uint16)
  return {
      "png_named.jpg": encoded(Image.fromarray(rgb(2)), "PNG"),
      "cmyk.jpg": encoded(Image.fromarray(rgb(3)).convert("CMYK"), "JPEG"),
      "gray16.png": encoded(Image.fromarray(gray16), "PNG"),
      "bilevel.png": encoded(Image.fromarray(rgb(4)).convert("1"), "PNG"),
      "palette_alpha.png": palette_with_transparency(),
      "animated.gif": animated_gif(),
      "plain.bmp": encoded(Image.fromarray(rgb(8)), "BMP"),
      "exif6.jpg": with_orientation(asymmetric(), "JPEG"),
      "exif6.png": with_orientation(asymmetric(), "PNG"),
      "UPPER.JPEG": encoded(Image.fromarray(rgb(9)), "JPEG"),
  }


# Names that must round-trip through manifest.csv, errors.csv and the records.
ODD_NAMES = ["with space.jpg", "ünïcødé 猫.png", "quote\"d 'single'.jpg",
             "comma, semi;colon.png", "tab\there.jpg", "#hash %41 $HOME.png"]
ODD_CLASS = "crème brûlée 'q\" x"

# Files that must be recorded, with the start of the reason.
BAD_FILES = {
    "odd/truncated.jpg": "cannot decode: jpeg::Uncompress failed",
    "odd/empty.jpg": "empty file",
    "odd/text.jpg": "cannot decode: Unknown image file format",
    "odd/big_header.jpg": "too large: header says 12000x12000",
    "odd/huge_header.png": "too large: header says 100000x100000",
    "odd/huge_header.bmp": "too large: header says 100000x100000",
    "odd/dangling.jpg": "unreadable",
    "odd/nested/deeper/dangling link.png": "unreadable",
    # Unreadable even for root: reading /proc/self/mem at offset 0 fails (EIO).
    "odd/proc_mem.jpg": "unreadable: [Errno 5]",
}


def build_odd_tree(root: str) -> List[str]:
  """Writes the tree; returns the relative paths of the files that must decode."""
  good = []
  for name, raw in good_odd_files().items():
    os.makedirs(os.path.join(root, "odd"), exist_ok=True)
    with open(os.path.join(root, "odd", name), "wb") as f:
      f.write(raw)
    good.append("odd/" + name)
  files = {
      "odd/truncated.jpg": truncated_jpeg(),
      "odd/empty.jpg": b"",
      "odd/text.jpg": b"this is a text file, not a JPEG\n" * 4,
      "odd/big_header.jpg": big_jpeg(),
      "odd/huge_header.png": huge_png(),
      "odd/huge_header.bmp": huge_bmp(),
  }
  for rel, raw in files.items():
    with open(os.path.join(root, rel), "wb") as f:
      f.write(raw)
  os.makedirs(os.path.join(root, "odd", "nested", "deeper"))
  os.symlink(os.path.join(root, "odd", "no-such-file.jpg"),
             os.path.join(root, "odd", "dangling.jpg"))
  os.symlink("gone.png", os.path.join(root, "odd", "nested", "deeper", "dangling link.png"))
  os.symlink("/proc/self/mem", os.path.join(root, "odd", "proc_mem.jpg"))
  # Folder links back up the tree: listing must neither follow nor hang on them.
  os.symlink("..", os.path.join(root, "odd", "nested", "deeper", "up"))
  os.symlink(root, os.path.join(root, "odd", "root_loop"))
  os.symlink("..", os.path.join(root, "odd", "nested", "folder_link.jpg"))
  # A real folder named like an image is a folder: its images are listed.
  write_image(os.path.join(root, "odd", "album.jpg", "inside.jpg"), rgb(12), "JPEG")
  good.append("odd/album.jpg/inside.jpg")
  # A file link to a good image is listed under its own name.
  write_image(os.path.join(root, "odd", "nested", "real.png"), rgb(11), "PNG")
  good.append("odd/nested/real.png")
  os.symlink("real.png", os.path.join(root, "odd", "nested", "linked.png"))
  good.append("odd/nested/linked.png")
  # Odd names, in an odd class name.
  for i, name in enumerate(ODD_NAMES):
    fmt = "PNG" if name.endswith(".png") else "JPEG"
    write_image(os.path.join(root, ODD_CLASS, name), rgb(20 + i), fmt)
    good.append(f"{ODD_CLASS}/{name}")
  # A class with no images: only a non-image, a hidden image and an empty folder.
  os.makedirs(os.path.join(root, "no_images", "empty_sub"))
  with open(os.path.join(root, "no_images", "readme.txt"), "w") as f:
    f.write("not an image\n")
  write_image(os.path.join(root, "no_images", ".hidden.jpg"), rgb(30), "JPEG")
  return sorted(good)


# --- reading an output folder -------------------------------------------------

def read_csv(path: str) -> List[Dict[str, str]]:
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f))


def read_records(out: str) -> Dict[str, Tuple[np.ndarray, Dict]]:
  """relative_path -> (stored pixels, other features), from the real shards."""
  import tensorflow as tf
  files = sorted(tf.io.gfile.glob(os.path.join(out, "exemplar-train.tfrecord-*")))
  found = {}
  for serialized in tf.data.TFRecordDataset(files).as_numpy_iterator():
    example = tf.train.Example.FromString(serialized).features.feature
    relative = example["image/relative_path"].bytes_list.value[0].decode("utf-8")
    assert relative not in found, relative
    pixels = tf.io.decode_image(example["image"].bytes_list.value[0]).numpy()
    found[relative] = (pixels, {
        "filename": example["image/filename"].bytes_list.value[0].decode("utf-8"),
        "source_height": example["image/source_height"].int64_list.value[0],
        "source_width": example["image/source_width"].int64_list.value[0],
    })
  return found


def keras_pixels(files: Dict[str, bytes], size=SIZE) -> Dict[str, np.ndarray]:
  """What Keras's image_dataset_from_directory gives for each file, rounded
  to uint8 as exemplar stores it."""
  import keras
  root = tempfile.mkdtemp(prefix="keras-tree-")
  try:
    for name, raw in files.items():
      os.makedirs(os.path.join(root, "c"), exist_ok=True)
      with open(os.path.join(root, "c", name), "wb") as f:
        f.write(raw)
    ds = keras.utils.image_dataset_from_directory(
        root, image_size=size, batch_size=None, shuffle=False, labels=None,
        interpolation="bilinear")
    return {
        os.path.basename(path): np.clip(np.round(np.asarray(image)), 0, 255).astype(np.uint8)
        for path, image in zip(ds.file_paths, ds)}
  finally:
    shutil.rmtree(root)


def expected_pixels(array: np.ndarray, size=SIZE) -> np.ndarray:
  """Keras's resize of already-decoded pixels, rounded as exemplar stores them."""
  import tensorflow as tf
  resized = tf.image.resize(tf.constant(array), size, method="bilinear")
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()


def assert_no_scratch_left(out: str) -> None:
  left = [os.path.join(d, n) for d, dirs, names in os.walk(out)
          for n in dirs + names if n.startswith((".exemplar-", ".tmp-"))]
  assert left == []


# --- the one run over every odd file ----------------------------------------

@pytest.fixture(scope="module")
def odd_run_once(tmp_path_factory):
  """The odd tree and one `--samples_per_class all` run over it."""
  base = tmp_path_factory.mktemp("odd")
  root, out = str(base / "images"), str(base / "out")
  good = build_odd_tree(root)
  started = time.monotonic()
  code = run_cli(["--input_dir", root, "--output_dir", out, "--samples_per_class", "all",
                  "--image_size", str(SIZE[0]), str(SIZE[1]), "--num_shards", "2"])
  seconds = time.monotonic() - started
  return {"root": root, "out": out, "good": good, "code": code, "seconds": seconds}


@pytest.fixture
def odd_run(request):
  """odd_run_once, for slow tests only: it is a whole CLI run (~30 s), which
  the fast tier (`-m "not slow"`) must not pay for."""
  if request.node.get_closest_marker("slow") is None:
    pytest.fail(f"{request.node.name} uses odd_run, a whole CLI run: mark it "
                "@pytest.mark.slow", pytrace=False)
  return request.getfixturevalue("odd_run_once")


@pytest.mark.slow
def test_every_odd_file_is_stored_or_recorded(odd_run):
  out, root = odd_run["out"], odd_run["root"]
  assert odd_run["code"] == 0
  assert os.path.exists(os.path.join(out, "_SUCCESS"))
  assert_no_scratch_left(out)

  manifest = read_csv(os.path.join(out, "manifest.csv"))
  errors = read_csv(os.path.join(out, "errors.csv"))
  stored = [row["relative_path"] for row in manifest]
  assert sorted(stored) == odd_run["good"]
  assert len(stored) == len(set(stored))
  for row in manifest:  # names round-trip, source paths point at the files
    assert row["source_path"] == os.path.join(root, *row["relative_path"].split("/"))
    assert os.path.exists(row["source_path"])
    assert row["class_name"] == row["relative_path"].split("/", 1)[0]

  reasons = {row["relative_path"]: row["reason"] for row in errors}
  assert set(reasons) == set(BAD_FILES)
  for relative, start in BAD_FILES.items():
    assert reasons[relative].startswith(start), (relative, reasons[relative])
    assert reasons[relative].strip() and "\n" not in reasons[relative]
  assert "Permission denied" not in "".join(reasons.values())
  for row in errors:
    assert row["class_name"] == "odd"
    assert row["source_path"] == os.path.join(root, *row["relative_path"].split("/"))
  # Dangling links say what is missing.
  assert "No such file" in reasons["odd/dangling.jpg"]

  # The records carry the same (unicode, quoted, spaced) names as the manifest.
  records = read_records(out)
  assert set(records) == set(stored)
  for row in manifest:
    assert records[row["relative_path"]][1]["filename"] == row["source_path"]


@pytest.mark.slow
def test_summary_names_the_empty_and_failing_classes(odd_run):
  out = odd_run["out"]
  assert (open(os.path.join(out, "class_names.txt"), encoding="utf-8").read()
          == f"{ODD_CLASS}\nno_images\nodd\n")
  summary = json.load(open(os.path.join(out, "summary.json"), encoding="utf-8"))
  per_class = {c["class_name"]: c for c in summary["per_class"]}
  assert per_class["no_images"] == {"class_name": "no_images", "label": 1,
                                    "files_seen": 0, "sampled": 0, "failed": 0,
                                    "per_split": {"train": 0}}
  odd_good = [p for p in odd_run["good"] if p.startswith("odd/")]
  assert per_class["odd"]["files_seen"] == len(odd_good) + len(BAD_FILES)
  assert per_class["odd"]["sampled"] == len(odd_good)
  assert per_class["odd"]["failed"] == len(BAD_FILES)
  assert per_class[ODD_CLASS]["sampled"] == len(ODD_NAMES)
  assert per_class[ODD_CLASS]["failed"] == 0
  assert summary["classes_short"] == ["no_images", "odd"]
  assert summary["num_failed"] == len(BAD_FILES)
  text = open(os.path.join(out, "summary.txt"), encoding="utf-8").read()
  assert "no_images" in text.split("classes short")[1]


@pytest.mark.slow
def test_odd_but_valid_files_decode_like_keras(odd_run):
  """CMYK JPEG, 16-bit, 1-bit and palette+tRNS PNG, animated GIF (first frame),
  BMP, a PNG named .jpg and EXIF-rotated images (not rotated, as Keras)."""
  records = read_records(odd_run["out"])
  files = good_odd_files()
  keras = keras_pixels(files)
  assert set(keras) == set(files)
  for name in files:
    stored, features = records["odd/" + name]
    assert stored.shape == (*SIZE, 3), name
    np.testing.assert_array_equal(stored, keras[name], err_msg=name)
  # EXIF orientation is ignored by default: source size is the stored size.
  for name in ("exif6.jpg", "exif6.png"):
    features = records["odd/" + name][1]
    assert (features["source_height"], features["source_width"]) == (40, 64)
  # The animated GIF gives its first frame.
  first_frame = np.asarray(Image.open(io.BytesIO(files["animated.gif"])).convert("RGB"))
  np.testing.assert_array_equal(records["odd/animated.gif"][0],
                                expected_pixels(first_frame))


@pytest.mark.slow
def test_odd_run_is_quick(odd_run):
  # Huge headers are refused before decoding: no multi-second, multi-GB decode.
  assert odd_run["seconds"] < 45, odd_run["seconds"]


# --- EXIF orientation --------------------------------------------------------

@pytest.mark.slow
def test_exif_transpose_turns_images_upright(tmp_path):
  root, out = str(tmp_path / "images"), str(tmp_path / "out")
  os.makedirs(os.path.join(root, "c"))
  for name, fmt in (("e.png", "PNG"), ("e.jpg", "JPEG")):
    with open(os.path.join(root, "c", name), "wb") as f:
      f.write(with_orientation(asymmetric(), fmt))
  assert run_cli(["--input_dir", root, "--output_dir", out, "--samples_per_class", "all",
                  "--image_size", str(SIZE[0]), str(SIZE[1]), "--exif_transpose"]) == 0
  records = read_records(out)
  # Lossless source: pixels equal Pillow's exif_transpose then Keras's resize.
  upright = np.asarray(ImageOps.exif_transpose(Image.open(os.path.join(root, "c", "e.png"))))
  assert upright.shape == (64, 40, 3)
  np.testing.assert_array_equal(records["c/e.png"][0], expected_pixels(upright))
  for name in ("c/e.png", "c/e.jpg"):
    stored, features = records[name]
    assert (features["source_height"], features["source_width"]) == (64, 40)
    # Orientation 6 = turn 90 degrees clockwise: the bright block that was top
    # left is now top right, the blue bottom stripe is now the left edge.
    assert stored[:4, -3:, 0].mean() > 200 and stored[:4, :3, 0].mean() < 80
    assert stored[:, :2, 2].mean() > 150 and stored[:, -2:, 2].mean() < 100
  manifest = {r["relative_path"]: r for r in read_csv(os.path.join(out, "manifest.csv"))}
  assert (manifest["c/e.jpg"]["source_height"], manifest["c/e.jpg"]["source_width"]) == (
      "64", "40")


@pytest.mark.slow
@pytest.mark.parametrize("orientation", range(1, 9))
def test_decoder_applies_every_exif_orientation_like_pillow(orientation):
  array = asymmetric(12, 20)
  raw = with_orientation(array, "PNG", orientation)
  upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(raw))))
  # Resizing to the source size is the identity, so pixels compare exactly.
  settings = ImageSettings(height=upright.shape[0], width=upright.shape[1])
  result = ImageDecoder(settings, exif_transpose=True).decode(raw)
  assert isinstance(result, DecodeResult)
  assert (result.source_height, result.source_width) == upright.shape[:2]
  import tensorflow as tf
  np.testing.assert_array_equal(tf.io.decode_png(result.encoded).numpy(), upright)
  plain = ImageDecoder(ImageSettings(height=12, width=20)).decode(raw)
  np.testing.assert_array_equal(tf.io.decode_png(plain.encoded).numpy(), array)


def test_nearest_interpolation_decodes():
  raw = encoded(Image.fromarray(asymmetric(12, 20)), "PNG")
  result = ImageDecoder(ImageSettings(height=6, width=10, interpolation="nearest")).decode(raw)
  assert isinstance(result, DecodeResult)


# --- ImageDecoder on single files --------------------------------------------

@pytest.fixture(scope="module")
def decoder():
  return ImageDecoder(ImageSettings(height=16, width=16), max_pixels=1 << 27)


def test_decoder_refuses_a_big_header_before_decoding(decoder):
  raw = big_jpeg(12_000, 12_000)
  started = time.monotonic()
  reason = decoder.decode(raw)
  assert time.monotonic() - started < 0.5
  assert isinstance(reason, str) and reason.startswith("too large")
  assert "144000000" in reason and "max_pixels 134217728" in reason
  # Under a higher limit it is let through (and TF decodes the grey fill).
  small = big_jpeg(2_000, 1_500)
  assert isinstance(ImageDecoder(ImageSettings(16, 16), max_pixels=4_000_000).decode(small),
                    DecodeResult)
  assert ImageDecoder(ImageSettings(16, 16), max_pixels=2_000_000).decode(small).startswith(
      "too large")


@pytest.mark.parametrize("raw", [huge_png(), huge_bmp(), big_jpeg(60_000, 60_000)],
                         ids=["png", "bmp", "jpeg"])
def test_decoder_refuses_enormous_headers_as_too_large(decoder, raw):
  started = time.monotonic()
  reason = decoder.decode(raw)
  assert time.monotonic() - started < 0.5
  assert isinstance(reason, str) and reason.startswith("too large"), reason


def test_decoder_never_allocates_for_enormous_headers(decoder):
  """The crafted headers fail fast and small."""
  import resource
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  for raw in (huge_png(), huge_bmp(), big_jpeg(60_000, 60_000), big_jpeg(12_000, 12_000)):
    started = time.monotonic()
    assert isinstance(decoder.decode(raw), str)
    assert time.monotonic() - started < 1.0
  grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
  assert grown_mb < 200, grown_mb


def test_decoder_reasons_for_broken_bytes(decoder):
  assert decoder.decode(b"") == "empty file"
  for raw in (truncated_jpeg(), b"plain text\n", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM"):
    reason = decoder.decode(raw)
    assert isinstance(reason, str) and reason.startswith("cannot decode: "), reason
    assert "\n" not in reason and len(reason) < 400


def test_decode_reasons_name_the_cause(decoder):
  assert "JPEG" in decoder.decode(truncated_jpeg())
  assert "Unknown image file format" in decoder.decode(b"plain text\n")
  assert "PNG" in decoder.decode(encoded(Image.fromarray(rgb(1)), "PNG")[:60])


def test_tf_decodes_cmyk_16bit_and_1bit_to_8bit_rgb(decoder):
  """What TF (so Keras, so exemplar) does with them: CMYK JPEG -> RGB (libjpeg
  converts), 16-bit PNG -> 8-bit (high byte, rounded), 1-bit PNG -> 0/255."""
  import tensorflow as tf
  files = good_odd_files()
  for name in ("cmyk.jpg", "gray16.png", "bilevel.png", "palette_alpha.png"):
    result = decoder.decode(files[name])
    assert isinstance(result, DecodeResult), name
    assert (result.source_height, result.source_width) == (32, 40)
    assert tf.io.decode_png(result.encoded).shape == (16, 16, 3)
  bilevel = tf.io.decode_image(files["bilevel.png"], channels=3).numpy()
  assert set(np.unique(bilevel)) <= {0, 255}
  gray16 = tf.io.decode_image(files["gray16.png"], channels=1).numpy()[..., 0]
  source = np.asarray(Image.open(io.BytesIO(files["gray16.png"]))).astype(np.int64)
  assert np.abs(gray16.astype(np.int64) - source / 257).max() <= 1


# --- unreadable files ---------------------------------------------------------

def _nobody_prefix(cwd: str, env: Dict[str, str]) -> List[str]:
  """How to run a command as a user who cannot read a mode-000 file: as
  'nobody' when we are root (root reads any file)."""
  if os.geteuid() != 0:
    return []
  setpriv = shutil.which("setpriv")
  if setpriv is None:
    pytest.skip("running as root without setpriv: mode 000 would not stop reads")
  prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
  # The virtualenv and the repo must be readable by 'nobody' (they are under
  # /work here; a checkout in a private home folder is not).
  probe = subprocess.run(prefix + [sys.executable, "-c", "import exemplar.main"],
                         capture_output=True, text=True, cwd=cwd, env=env, timeout=120)
  if probe.returncode != 0:
    pytest.skip(f"user nobody cannot run exemplar from here: {probe.stderr[-300:]}")
  return prefix


@pytest.mark.slow
# 'all' lists in the job; k=2 in exemplar.prelist's child, beside the imports.
@pytest.mark.parametrize("samples_per_class", ["all", "2"])
def test_permission_denied_is_recorded_not_fatal(samples_per_class):
  # pytest's tmp_path is private to root; this folder must be open to 'nobody'.
  base = tempfile.mkdtemp(prefix="exemplar-nobody-")
  try:
    os.chmod(base, 0o755)
    root, out, home = (os.path.join(base, n) for n in ("images", "out", "home"))
    write_image(os.path.join(root, "a", "ok.jpg"), rgb(1), "JPEG")
    write_image(os.path.join(root, "a", "locked.jpg"), rgb(2), "JPEG")
    write_image(os.path.join(root, "b", "ok.png"), rgb(3), "PNG")
    write_image(os.path.join(root, "b", "private", "hidden.png"), rgb(4), "PNG")
    os.chmod(os.path.join(root, "a", "locked.jpg"), 0)
    os.chmod(os.path.join(root, "b", "private"), 0)  # a sub-folder nobody can list
    for folder in (out, home):
      os.makedirs(folder)
      os.chmod(folder, 0o777)
    env = dict(os.environ, HOME=home, TF_CPP_MIN_LOG_LEVEL="2")
    prefix = _nobody_prefix(home, env)
    proc = subprocess.run(
        prefix + [EXEMPLAR, "--input_dir", root, "--output_dir", out,
                  "--samples_per_class", samples_per_class, "--image_size", "8", "8"],
        capture_output=True, text=True, env=env, cwd=home, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    errors = read_csv(os.path.join(out, "errors.csv"))
    assert [(e["relative_path"], e["reason"].split(":")[0]) for e in errors] == [
        ("a/locked.jpg", "unreadable"), ("b/private", "unreadable folder")]
    assert all("Permission denied" in e["reason"] for e in errors)
    stored = sorted(r["relative_path"] for r in read_csv(os.path.join(out, "manifest.csv")))
    assert stored == ["a/ok.jpg", "b/ok.png"]
  finally:
    shutil.rmtree(base, ignore_errors=True)


# --- spares replace failed picks ---------------------------------------------

@pytest.mark.slow
def test_broken_picks_are_replaced_by_the_next_candidates(tmp_path):
  """k=3 in a class of 7 whose 1st and 3rd seeded picks are corrupt: the
  next decodable candidates take their places, the same way every run."""
  root, seed, k = str(tmp_path / "images"), 5, 3
  rng = np.random.default_rng(0)
  names = {"many": 7, "short": 3}
  relative = {c: [f"{c}/img_{i}.{'png' if i % 2 else 'jpg'}" for i in range(n)]
              for c, n in names.items()}
  for paths in relative.values():
    for rel in paths:
      write_image(os.path.join(root, rel), noise_image(rng, 20, 28),
                  "PNG" if rel.endswith("png") else "JPEG")
  order = {c: [p for _, p in sampling.sample_paths(paths, seed,
                                                   sampling.capacity_for(k, 4)).candidates]
           for c, paths in relative.items()}
  broken = [order["many"][0], order["many"][2], order["short"][1]]
  for rel in broken:
    with open(os.path.join(root, rel), "wb") as f:
      f.write(b"corrupt")

  outs = [str(tmp_path / name) for name in ("out1", "out2")]
  for out in outs:
    assert run_cli(["--input_dir", root, "--output_dir", out, "--samples_per_class",
                    str(k), "--seed", str(seed), "--image_size", "16", "16"]) == 0
  manifest = read_csv(os.path.join(outs[0], "manifest.csv"))
  picked = {c: [r["relative_path"] for r in manifest if r["class_name"] == c]
            for c in names}
  assert [int(r["rank"]) for r in manifest if r["class_name"] == "many"] == [0, 1, 2]
  assert picked["many"] == [order["many"][1], order["many"][3], order["many"][4]]
  assert picked["short"] == [order["short"][0], order["short"][2]]
  errors = read_csv(os.path.join(outs[0], "errors.csv"))
  assert sorted(e["relative_path"] for e in errors) == sorted(broken)
  summary = json.load(open(os.path.join(outs[0], "summary.json")))
  assert summary["classes_short"] == ["short"]
  # Deterministic: a second run gives the same bytes.
  for name in sorted(os.listdir(outs[0])):
    if name.startswith("exemplar-train") or name in ("manifest.csv", "errors.csv"):
      assert open(os.path.join(outs[0], name), "rb").read() == open(
          os.path.join(outs[1], name), "rb").read(), name


def test_input_folder_without_classes_is_one_line_exit_2(tmp_path, capsys):
  """Images straight under the root and a hidden folder: no class. (A link to
  a folder would be a class, as in Keras, which follows first-level links.)"""
  root = tmp_path / "flat"
  write_image(str(root / "a.jpg"), rgb(1), "JPEG")
  write_image(str(root / ".hidden" / "b.jpg"), rgb(2), "JPEG")
  os.symlink("a.jpg", str(root / "link.jpg"))
  out = tmp_path / "out"
  code = run_cli(["--input_dir", str(root), "--output_dir", str(out)])
  err = capsys.readouterr().err
  lines = [line for line in err.splitlines() if line.strip() and " INFO " not in line]
  assert code == 2 and len(lines) == 1, err
  assert lines[0].startswith("exemplar: error: --input_dir") and "no class folders" in lines[0]
  assert "Traceback" not in err and not out.exists()
