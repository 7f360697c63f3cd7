"""The decode step's pieces on their own: in_order on a real thread pool, and
TaskDecoder on real files (ranks, spares, thumbnails, draws from a re-listing)."""

import concurrent.futures
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


def _encoded(image: np.ndarray, fmt: str, **options) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, fmt, **options)
  return buffer.getvalue()


@pytest.mark.parametrize("image_format,color_mode,interpolation,crop", [
    ("png", "rgb", "bilinear", False), ("jpeg", "rgb", "bilinear", False),
    ("png", "grayscale", "bicubic", True), ("png", "rgba", "lanczos3", False),
    ("jpeg", "grayscale", "area", True)])
def test_decode_batch_gives_what_decode_gives_file_by_file(image_format, color_mode,
                                                           interpolation, crop):
  rng = np.random.default_rng(1)
  photo = lambda h, w: rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)  # noqa: E731
  upright = Image.Exif()
  upright[0x0112] = 6  # rotated 90 degrees clockwise
  raws = [
      _encoded(photo(30, 40), "JPEG"),
      _encoded(photo(25, 20), "PNG"),
      _encoded(photo(12, 18), "BMP"),  # not PNG or JPEG: decoded alone
      _encoded(photo(20, 30), "JPEG", exif=upright.tobytes()),
      b"",  # refused before decoding
      _encoded(photo(400, 400), "PNG"),  # over max_pixels
      _encoded(photo(33, 17), "PNG")[:60],  # truncated: fails the batch's call
      _encoded(photo(16, 16), "JPEG"),
  ]
  settings = ImageSettings(24, 20, image_format=image_format, color_mode=color_mode,
                           interpolation=interpolation, crop_to_aspect_ratio=crop)
  decoder = decoding.ImageDecoder(settings, max_pixels=100_000, exif_transpose=True)
  sizes = [8, 0, 8, 0, 0, 8, 8, 0]
  one_by_one = [decoder.decode(raw, size) for raw, size in zip(raws, sizes)]
  assert [isinstance(r, str) for r in one_by_one] == [
      False, False, False, False, True, True, True, False]
  assert decoder.decode_batch(raws, sizes) == one_by_one
  # Without the broken file, the PNGs and JPEGs go through one call (of a
  # new decoder: this one now takes fewer files a call, see the next test).
  good = [0, 1, 2, 3, 7]
  decoder = decoding.ImageDecoder(settings, max_pixels=100_000, exif_transpose=True)
  calls = []
  batch_function = decoder._function("batch")
  decoder._concrete["batch"] = lambda *args: calls.append(len(args[0])) or batch_function(*args)
  assert decoder.decode_batch([raws[i] for i in good], [sizes[i] for i in good]) == [
      one_by_one[i] for i in good]
  # The PNGs, and the JPEGs unless asked for with alpha (libjpeg gives none,
  # so those are decoded and converted alone); a lone file needs no batch.
  together = 1 if color_mode == "rgba" else 4
  assert calls == ([together] if together > 1 else [])


def test_decode_batch_takes_fewer_files_a_call_after_a_call_fails():
  rng = np.random.default_rng(2)
  good = [_encoded(rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8), "PNG")
          for _ in range(8)]
  broken = good[0][:70]
  decoder = decoding.ImageDecoder(ImageSettings(8, 8))
  calls = []
  batch_function = decoder._function("batch")
  decoder._concrete["batch"] = lambda *args: calls.append(len(args[0])) or batch_function(*args)
  assert isinstance(decoder.decode_batch(good[:7] + [broken])[7], str)
  assert calls == [8]  # it failed: its files went one by one
  one_by_one = [decoder.decode(raw) for raw in good]
  assert decoder.decode_batch(good) == one_by_one
  assert calls == [8, 4, 4]  # halved, then one more after each call that worked
  assert decoder.decode_batch(good) == one_by_one
  assert calls == [8, 4, 4, 6, 2]
  with pytest.raises(ValueError, match="one thumbnail size per file"):
    decoder.decode_batch(good, [0])
  assert decoder.decode_batch(good[:2], np.array([8, 0])) == [
      decoder.decode(good[0], 8), decoder.decode(good[1])]


def _tasks_over(root: str, classes, broken=()):
  """One task per class holding all its files, need = half of them."""
  tasks = []
  for label, name in enumerate(classes):
    files = sorted(f"{name}/{n}" for n in os.listdir(os.path.join(root, name)))
    tasks.append(DecodeTask(name, label, files, need=len(files) // 2, first_rank=0))
  for path in broken:
    with open(os.path.join(root, path), "wb") as f:
      f.write(b"not an image")
  return tasks


def _events(pool, decoder, tasks, **group):
  return [[(kind, getattr(value, "relative_path", None), getattr(value, "rank", None),
            getattr(value, "encoded", None), getattr(value, "thumbnail", None))
           for kind, _, value in step]
          for step in decode_tasks.in_record_order(pool, decoder, tasks, lookahead=3,
                                                   **group)]


@pytest.mark.parametrize("batch_bytes", [decode_tasks.DECODE_BATCH_BYTES, 1])
def test_in_record_order_in_groups_gives_the_events_of_one_step_at_a_time(
    tmp_path, monkeypatch, batch_bytes):
  # batch_bytes 1: every file is over the budget, so each call decodes one.
  monkeypatch.setattr(decode_tasks, "DECODE_BATCH_BYTES", batch_bytes)
  root = str(tmp_path / "tree")
  make_tree(root, {"a": 10, "b": 6, "c": 8, "d": 2})
  # Broken first picks and a broken spare: a step goes on to its task's next
  # candidates, and the task's later steps start further on.
  tasks = _tasks_over(root, "abcd", broken=["a/img_000.jpg", "b/img_001.png",
                                             "b/img_003.png", "c/img_002.jpg"])
  decoder = decode_tasks.TaskDecoder(root, decoding.ImageDecoder(ImageSettings(16, 16)),
                                     seed=0, thumbnail_ranks=2, thumbnail_size=8)
  batches, calls = [], []
  decode_many = decoder.decode_many
  decoder.decode_many = lambda picks: batches.append(len(picks)) or decode_many(picks)
  decode_batch = decoder._decoder.decode_batch
  decoder._decoder.decode_batch = lambda raws, sizes: (
      calls.append(len(raws)) or decode_batch(raws, sizes))
  pool = decode_tasks.decode_pool()
  try:
    alone = _events(pool, decoder, tasks, batch=1)
    assert not batches  # groups of one step: no call for several files
    grouped = _events(pool, decoder, tasks, threads=1, batch=4)
  finally:
    pool.shutdown(wait=True)
  assert batches and max(batches) > 1
  assert max(calls) == (1 if batch_bytes == 1 else max(batches))
  assert grouped == alone
  kinds = [kind for step in alone for kind, *_ in step]
  assert kinds.count("decoded") == sum(t.need for t in tasks)
  assert kinds.count("failed") == 4
  # Record order: rank, then label.
  decoded = [(rank, path.split("/")[0]) for step in alone
             for kind, path, rank, _, _ in step if kind == "decoded"]
  assert decoded == sorted(decoded)


def test_a_group_that_raises_fails_the_shard_without_leaving_threads_waiting(tmp_path):
  # Two tasks of 4 steps, groups of 2 ([a0 b0] [a1 b1] ...), two groups in
  # flight: the second group waits for the first one's turns, which the first
  # must pass on when its decode_many raises.
  root = str(tmp_path / "tree")
  make_tree(root, {name: 8 for name in "ab"})
  tasks = _tasks_over(root, "ab")
  decoder = decode_tasks.TaskDecoder(root, decoding.ImageDecoder(ImageSettings(16, 16)),
                                     seed=0)
  decode_many = decoder.decode_many

  def failing(picks):
    if any(path == "a/img_000.jpg" for _, path, _ in picks):
      time.sleep(0.5)  # the next group is waiting for this one's turns by now
      raise MemoryError("no room for a/img_000.jpg")
    return decode_many(picks)

  decoder.decode_many = failing
  pool = decode_tasks.decode_pool()
  try:
    with pytest.raises(MemoryError, match="a/img_000.jpg"):
      _events(pool, decoder, tasks, threads=1, batch=2)
  finally:
    finished = threading.Thread(target=pool.shutdown, kwargs={"wait": True},
                                daemon=True)
    finished.start()
    finished.join(timeout=30)
  assert not finished.is_alive()  # every group still queued ran out


@pytest.mark.parametrize("short_classes", [0, 12])
def test_a_few_long_tasks_still_decode_on_every_thread(tmp_path, short_classes):
  """Four long tasks (every file of a class), alone or after many short ones:
  the steps of the long tasks overlap on the pool's threads, in groups or not."""
  root = str(tmp_path / "tree")
  short = [f"s{i:02d}" for i in range(short_classes)]
  make_tree(root, dict({name: 6 for name in "abcd"}, **{name: 2 for name in short}))
  tasks = [t._replace(need=len(t.candidates))
           for t in _tasks_over(root, ["a", "b", "c", "d", *short])]
  decoder = decode_tasks.TaskDecoder(root, decoding.ImageDecoder(ImageSettings(16, 16)),
                                     seed=0)
  spans = []  # (start, end) of each call decoding only ranks >= 2 (long tasks' tails)
  lock = threading.Lock()

  def slow(method, ranks):
    def timed(*args):
      started = time.monotonic()
      time.sleep(0.05)  # a slow file system
      try:
        return method(*args)
      finally:
        if min(ranks(*args)) >= 2:
          with lock:
            spans.append((started, time.monotonic()))
    return timed

  decoder._decode = slow(decoder._decode, lambda task, path, rank: [rank])
  decoder.decode_many = slow(decoder.decode_many, lambda picks: [p[2] for p in picks])
  # Four workers whatever the host (decode_pool has 2 on one core).
  pool = concurrent.futures.ThreadPoolExecutor(4)
  try:
    events = _events(pool, decoder, tasks, threads=4, batch=8)
  finally:
    pool.shutdown(wait=True)
  assert sum(kind == "decoded" for step in events for kind, *_ in step) == 24 + 2 * short_classes
  overlapping = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
  assert overlapping >= 3


def test_groups_are_smaller_for_large_images():
  assert decode_tasks.batch_size((256, 256, 3)) == decode_tasks.DECODE_BATCH
  assert decode_tasks.batch_size((1024, 1024, 3)) == 2  # 3 MiB each: two in 8 MiB
  assert decode_tasks.batch_size((2048, 2048, 4)) == 1
