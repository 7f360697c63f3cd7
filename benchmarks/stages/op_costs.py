"""What one image costs, op by op, on one thread: where `all`'s time goes.

    python benchmarks/stages/op_costs.py PHOTOS_ROOT [--limit N]

Times exemplar's own functions (transforms/decoding.py, contact_sheet.py,
writing.py) on the first N photos of the tree, one image at a time on one
thread, after one warm-up call of each (TF tracing outside the timing):

  decode_resize   the traced decode + resize: exactly the per-image work of
                  `image_dataset_from_directory` (what Keras iterating does)
  stored_png      decode + resize + round to uint8 + PNG encode: exemplar's
                  per-image TF work with the default --image_format png
  stored_jpeg     the same with --image_format jpeg (quality 95)
  thumbnail       the contact-sheet thumbnail of the stored pixels (JPEG)
  sha256          the source file's hash (in the manifest)
  serialize       tf.train.Example + TFRecord framing of the stored PNG
  png_encode_lN   the PNG encoder at `--png_compression N` (N = 0, 2, 6, 12;
                  png_encode is the default, 1), with png_bytes_lN the mean
                  size of the photos' PNGs at that level

Prints `STAGE name_ms=... png_bytes_lN=...` (milliseconds, bytes per image).
"""

import argparse
import hashlib
import os
import time

from exemplar.transforms import (contact_sheet, decode_tasks, decoding, listing, png_encoder,
                                 writing)


def per_image_ms(function, inputs) -> float:
  function(inputs[0])  # warm-up: tracing, first allocations
  started = time.perf_counter()
  for value in inputs:
    function(value)
  return (time.perf_counter() - started) / len(inputs) * 1000


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("root")
  parser.add_argument("--limit", type=int, default=300)
  args = parser.parse_args()
  import tensorflow as tf

  root = listing.normalize_root(args.root)
  paths = []
  for class_name in listing.list_class_folders(root):
    paths.extend(os.path.join(root, p) for p in sorted(listing.walk_class_folder(root, class_name)))
    if len(paths) >= args.limit:
      break
  raws = [decode_tasks.read_file(p) for p in paths[:args.limit]]
  settings = decoding.ImageSettings()
  jpeg_settings = decoding.ImageSettings(image_format="jpeg")
  spec = [tf.TensorSpec([], tf.string)]

  @tf.function(input_signature=spec)
  def decode_resize(raw):
    return decoding.decode_and_resize(raw, settings)[0]

  @tf.function(input_signature=spec)
  def decode_uint8(raw):
    return decoding.to_uint8(decoding.decode_and_resize(raw, settings)[0])

  def stored(image_settings):
    # As ImageDecoder: pixels from the graph, then decoding.encode (PNG:
    # transforms/png_encoder.py outside the graph; JPEG: tf.io.encode_jpeg).
    return lambda t: decoding.encode(decode_uint8(t), image_settings)

  stored_png, stored_jpeg = stored(settings), stored(jpeg_settings)
  tensors = [tf.constant(raw) for raw in raws]
  pixels = [decoding.to_uint8(decode_resize(t)).numpy() for t in tensors]
  result = decoding.ImageDecoder(settings).decode(raws[0])
  image = decode_tasks.decoded_image("c", 0, 0, "c/x.jpg", "/c/x.jpg", result)

  figures = {
      "decode_resize": per_image_ms(lambda t: decode_resize(t).numpy(), tensors),
      "stored_png": per_image_ms(stored_png, tensors),
      "stored_jpeg": per_image_ms(stored_jpeg, tensors),
      "png_encode": per_image_ms(lambda p: decoding.encode(p, settings), pixels),
      "thumbnail": per_image_ms(contact_sheet.thumbnail_jpeg, pixels),
      "sha256": per_image_ms(lambda raw: hashlib.sha256(raw).hexdigest(), raws),
      "serialize": per_image_ms(
          lambda _: list(writing.tfrecord_bytes(
              [writing.serialize_example(image, settings)])), raws),
  }
  sizes = {}
  for level in (0, 2, 6, 12):
    figures[f"png_encode_l{level}"] = per_image_ms(
        lambda p: png_encoder.encode_png(p, level), pixels)
  for level in (0, 1, 2, 6, 12):
    sizes[f"png_bytes_l{level}"] = round(
        sum(len(png_encoder.encode_png(p, level)) for p in pixels) / len(pixels))
  print("STAGE images=%d %s %s" % (len(raws), " ".join(
      f"{name}_ms={value:.3f}" for name, value in figures.items()), " ".join(
      f"{name}={value}" for name, value in sizes.items())))


if __name__ == "__main__":
  main()
