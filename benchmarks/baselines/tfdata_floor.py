"""The floor for `--samples_per_class all`: a plain tf.data pipeline.

    python benchmarks/baselines/tfdata_floor.py ROOT --output DIR [--shards N]
        [--image_format png|jpeg] [--encode_in map|loop]

What exemplar's `all` must do, and nothing else: list the same files, decode
and resize them with the same ops, encode with the same encoder and write
TFRecords with `tf.io.TFRecordWriter`. No sampling, no seeded order, no
sha256, thumbnails, contact sheet, manifest or metadata, no resume.

  * listing: the class folders of ROOT (sorted, hidden and system folders
    skipped), every file below each one with one of exemplar's image
    extensions (`exemplar.transforms.listing.IMAGE_EXTENSIONS`, read from
    that module's source), labels = sorted class index; plain os.walk;
  * decode + resize: `tf.data.Dataset.from_tensor_slices((paths, labels))
    .map(read_file + exemplar's decoding.decode_and_resize + to_uint8,
    num_parallel_calls=AUTOTUNE)`: the same ops as exemplar, including its
    `plain` fast path for JPEG/PNG bytes (picked in the graph by magic bytes,
    as `decoding.is_plain` does);
  * encode: exemplar's `decoding.encode(pixels, settings)` (PNG: numpy + libdeflate
    in transforms/png_encoder.py, outside the TF graph; JPEG: tf.io.encode_jpeg);
  * write: `tf.train.Example` {image/encoded, image/class/label} into N shard
    files, consecutive runs of the listing order, through tf.io.TFRecordWriter.

Where the encode runs (`--encode_in`): `map` (default) wraps encode +
serialize in `tf.numpy_function` in a second parallel map, so tf.data's
threads decode, resize, encode and serialize on both cores and the Python
loop only writes. `loop` encodes in the Python loop that consumes the decoded
pixels instead. On this 2-core machine (loaded, 2026-11-30) `map` was ~2x
faster on the 10,000 photos (256 vs 116 images/s, 39 vs 86 s of pipeline),
though decode + resize alone ran at ~350 images/s and the PNG encode took
~1.9 ms an image on one thread: with `loop` the one consuming thread seems to
be starved by tf.data's decode threads, so decode and encode take turns
instead of overlapping (not investigated further). The floor takes the
faster.

Shards (default): as many as exemplar picks for the same images, format and
size: writing.auto_num_shards (~128 MiB each, at its size estimate), so 9 PNG
or 3 JPEG shards for 10,000 256x256 RGB images.

Beam is not imported: `import exemplar` is lazy and decoding.py imports only
TF, numpy, deflate and Pillow, as a plain tf.data script would.

Prints `STAGE images=N seconds=S images_per_second=R ...`: S runs from the
start of the listing to the last shard closed (imports and TF start-up are
outside it, tracing the map functions inside; the harness measures the whole
process, which the `all` target compares).
"""

import os
import time

_STARTED = time.perf_counter()

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402

import tensorflow as tf  # noqa: E402


from exemplar.transforms import decoding  # noqa: E402  (imports TF, not Beam)

# As exemplar's listing rules (transforms/listing.py, which imports Beam): its
# IMAGE_EXTENSIONS, hidden entries skipped; the benchmark trees hold no
# operating-system junk folders.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


# writing.TARGET_SHARD_BYTES and its stored-size estimate per pixel byte
# (writing.py imports Beam, so auto_num_shards is restated here).
TARGET_SHARD_BYTES = 128 << 20
COMPRESSION_ESTIMATE = {"png": 0.6, "jpeg": 0.15}


def auto_num_shards(num_images: int, settings) -> int:
  height, width, channels = settings.shape
  estimate = num_images * height * width * channels * COMPRESSION_ESTIMATE[
      settings.image_format]
  return max(1, min(num_images, math.ceil(estimate / TARGET_SHARD_BYTES)))


def _skipped(name: str) -> bool:
  return name.startswith(".")


def list_files(root: str):
  """(paths, labels): every image below each class folder, classes sorted."""
  classes = sorted(e.name for e in os.scandir(root)
                   if e.is_dir() and not _skipped(e.name))
  paths, labels = [], []
  for label, class_name in enumerate(classes):
    for folder, dirs, files in os.walk(os.path.join(root, class_name)):
      dirs[:] = [d for d in dirs if not _skipped(d)]
      for name in files:
        if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
          paths.append(os.path.join(folder, name))
          labels.append(label)
  return paths, labels


_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def decode_fn(settings):
  def plain(raw):  # decoding.is_plain, in the graph
    return tf.logical_or(
        tf.equal(tf.strings.substr(raw, 0, len(_PNG_MAGIC)), _PNG_MAGIC),
        tf.logical_and(tf.equal(tf.strings.substr(raw, 0, 3), _JPEG_MAGIC),
                       settings.channels != 4))

  def decode(path, label):
    raw = tf.io.read_file(path)
    image = tf.cond(
        plain(raw),
        lambda: decoding.decode_and_resize(raw, settings, plain=True)[0],
        lambda: decoding.decode_and_resize(raw, settings)[0])
    return decoding.to_uint8(image), label
  return decode


def example_bytes(encoded: bytes, label: int) -> bytes:
  return tf.train.Example(features=tf.train.Features(feature={
      "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
      "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
  })).SerializeToString()


def records(paths, labels, settings, encode_in: str):
  """Serialized Examples, in listing order."""
  ds = tf.data.Dataset.from_tensor_slices((paths, labels))
  ds = ds.map(decode_fn(settings), num_parallel_calls=tf.data.AUTOTUNE)
  if encode_in == "map":
    def encode_serialize(pixels, label):
      return example_bytes(decoding.encode(pixels, settings), int(label))
    ds = ds.map(lambda pixels, label: tf.numpy_function(
        encode_serialize, [pixels, label], tf.string, stateful=False),
        num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    for record in ds.as_numpy_iterator():
      yield record
  else:
    ds = ds.prefetch(tf.data.AUTOTUNE)
    for pixels, label in ds:
      yield example_bytes(decoding.encode(pixels, settings), int(label))


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("root")
  parser.add_argument("--output", required=True, help="folder for the shard files")
  parser.add_argument("--shards", type=int, default=0,
                      help="number of shard files (default: as exemplar picks)")
  parser.add_argument("--image_format", choices=("png", "jpeg"), default="png")
  parser.add_argument("--encode_in", choices=("map", "loop"), default="map")
  args = parser.parse_args()
  settings = decoding.ImageSettings(image_format=args.image_format)
  os.makedirs(args.output, exist_ok=True)
  imported = time.perf_counter()

  paths, labels = list_files(args.root.rstrip("/") or "/")
  listed = time.perf_counter()
  total = len(paths)
  shards = args.shards or auto_num_shards(total, settings)
  written = 0
  writer, shard = None, -1
  for record in records(paths, labels, settings, args.encode_in):
    target = written * shards // total  # consecutive runs, equal to within one
    if target != shard:
      if writer:
        writer.close()
      shard = target
      writer = tf.io.TFRecordWriter(os.path.join(
          args.output, f"data.tfrecord-{shard:05d}-of-{shards:05d}"))
    writer.write(record)
    written += 1
  if writer:
    writer.close()
  done = time.perf_counter()
  seconds = done - imported
  print(f"STAGE images={written} seconds={seconds:.3f} "
        f"images_per_second={written / seconds:.1f} shards={shards} "
        f"list_seconds={listed - imported:.3f} import_seconds={imported - _STARTED:.3f} "
        f"beam_imported={int('apache_beam' in sys.modules)} encode_in={args.encode_in}")
  return 0 if written == total else 1


if __name__ == "__main__":
  sys.exit(main())
