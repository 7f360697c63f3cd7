"""The decode step's pieces on their own: in_order on a real thread pool, and
TaskDecoder on real files (ranks, spares, thumbnails, draws from a re-listing)."""

import io
import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_tree
from exemplar.transforms import decode_tasks, decoding, sampling
from exemplar.transforms.decode_tasks import DecodeTask
from exemplar.transforms.decoding import ImageSettings


def test_in_order_keeps_order_bounds_lookahead_and_raises_errors():
  pool = decode_tasks.decode_pool()
  running, most = [0], [0]
  lock = threading.Lock()

  def work(item):
    with lock:
      running[0] += 1
      most[0] = max(most[0], running[0])
    time.sleep(0.002 * (item % 3))  # finish out of order
    with lock:
      running[0] -= 1
    if item == 13:
      raise ValueError("item 13 is bad")
    return item * 10

  try:
    assert list(decode_tasks.in_order(pool, work, range(12), lookahead=3)) == [
        i * 10 for i in range(12)]
    assert most[0] <= 3
    results = decode_tasks.in_order(pool, work, range(20), lookahead=3)
    with pytest.raises(ValueError, match="item 13"):
      for value in results:
        assert value < 130
  finally:
    pool.shutdown(wait=True)


def test_task_decoder_ranks_spares_thumbnails_and_more_candidates(tmp_path):
  root = str(tmp_path / "tree")
  make_tree(root, {"c": 12})
  paths = sorted(f"c/{n}" for n in os.listdir(os.path.join(root, "c")))
  order = [p for _, p in sampling.sample_paths(paths, 0, len(paths)).candidates]
  with open(os.path.join(root, order[3]), "wb") as f:
    f.write(b"broken")
  decode = decode_tasks.TaskDecoder(root, decoding.ImageDecoder(ImageSettings(16, 16)),
                                seed=0, thumbnail_ranks=3, thumbnail_size=8)
  # Ranks 1, 3, 5 of a class of 6 planned, holding no spare: order[3] fails,
  # so the task lists the class again and draws the next of its own sequence
  # (its spares are seeded positions 6 + 1, + 3, + 5: order[7] first).
  task = DecodeTask("c", 0, [], need=3, first_rank=1, seen=12, stride=2,
                    spare_start=7, spare_stride=2)
  task = task._replace(candidates=decode_tasks.task_candidates(order[:6], task))
  assert task.candidates == [order[1], order[3], order[5]]
  events = decode(task)
  assert [(kind, getattr(value, "relative_path", None)) for kind, _, value in events] == [
      ("decoded", order[1]), ("failed", order[3]), ("decoded", order[5]),
      ("refill", None), ("decoded", order[7])]
  decoded = [value for kind, _, value in events if kind == "decoded"]
  assert [d.rank for d in decoded] == [1, 3, 5]
  # A thumbnail only below rank 3: a small JPEG of at most 8 x 8.
  assert decoded[0].thumbnail and not decoded[1].thumbnail and not decoded[2].thumbnail
  thumb = Image.open(io.BytesIO(decoded[0].thumbnail))
  assert thumb.format == "JPEG" and max(thumb.size) <= 8


@pytest.mark.parametrize("color_mode", ["grayscale", "rgba"])
def test_thumbnails_of_grayscale_and_rgba_images(tmp_path, color_mode):
  rng = np.random.default_rng(0)
  colourful = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
  path = str(tmp_path / "x.png")
  Image.fromarray(colourful).save(path)
  decoder = decoding.ImageDecoder(ImageSettings(20, 20, color_mode=color_mode))
  result = decoder.decode(open(path, "rb").read(), thumbnail_size=40)
  thumb = np.asarray(Image.open(io.BytesIO(result.thumbnail)))
  assert thumb.shape == (40, 40, 3)  # RGB, scaled up by a whole factor
  spread = thumb.astype(int).max(axis=2) - thumb.astype(int).min(axis=2)
  if color_mode == "grayscale":
    assert spread.max() <= 2  # grey stays grey
  else:
    assert spread.max() > 50  # opaque colours stay colours
