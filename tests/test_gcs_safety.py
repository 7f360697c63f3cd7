"""Output safety on gs://, against the emulator of tests/test_gcs.py: the
output lock (taken over when stale or with --overwrite, atomically), and
exemplar outputs inside a gs:// input tree, which are never classes.

Each test fails without the fix it covers: no --overwrite take-over of a
gs:// lock; a take-over that does not replace the lock by its generation; a
gs:// class listing that does not look for an exemplar output's markers.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import threading
from typing import List

import pytest

from tests.conftest import make_tree, run_cli
from tests import test_gcs
from tests.test_gcs import IN_BUCKET, OUT_BUCKET

gcs = test_gcs.gcs  # the emulator fixture (fake-gcs-server), one per module

pytestmark = pytest.mark.slow  # the GCS emulator: seconds each

SMALL = ["--image_size", "12", "16", "--num_shards", "2", "--samples_per_class", "2"]
LOCK = ".exemplar-lock"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp("gcs_safety") / "images")
  make_tree(root, {"ant": 2, "bee": 2}, size=(16, 24))
  return root


def stamp(hours_ago: float) -> str:
  return (datetime.datetime.now(datetime.timezone.utc)
          - datetime.timedelta(hours=hours_ago)).isoformat(timespec="seconds")


def put_lock(gcs, folder: str, started: str, host: str = "other-host", pid: int = 1) -> None:
  """A lock left in gs://OUT_BUCKET/<folder> by a run on another host."""
  gcs.client().bucket(OUT_BUCKET).blob(f"{folder}/{LOCK}").upload_from_string(json.dumps(
      {"host": host, "pid": pid, "started": started, "token": "x"}).encode())


def lock_object(gcs, folder: str):
  blob = gcs.client().bucket(OUT_BUCKET).get_blob(f"{folder}/{LOCK}")
  return None if blob is None else json.loads(blob.download_as_bytes())


def took_over(caplog, holder: str) -> List[str]:
  return [r.getMessage() for r in caplog.records
          if r.levelno == logging.WARNING and r.getMessage().startswith("Took over the lock")
          and holder in r.getMessage()]


def test_a_gcs_lock_older_than_the_limit_is_taken_over(gcs, caplog):
  from exemplar.transforms import lock
  started = stamp(lock.STALE_AFTER_SECONDS / 3600 + 1)
  put_lock(gcs, "stale", started)
  taken = lock.OutputLock(f"gs://{OUT_BUCKET}/stale")
  with caplog.at_level(logging.WARNING):
    taken.acquire()
  try:
    assert lock_object(gcs, "stale")["token"] == taken.holder.token
    assert took_over(caplog, f"host other-host, pid 1, started {started}"), caplog.text
  finally:
    taken.release()
  assert lock_object(gcs, "stale") is None


def test_a_fresh_gcs_lock_is_refused_in_one_line_naming_its_holder(gcs, tree, capsys):
  started = stamp(1)
  put_lock(gcs, "fresh", started)
  assert run_cli(["--input_dir", tree, "--output_dir", f"gs://{OUT_BUCKET}/fresh"]
                 + SMALL) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  assert f"(host other-host, pid 1, started {started})" in err[0], err
  assert lock_object(gcs, "fresh")["token"] == "x"  # left as it was


def test_overwrite_takes_over_a_fresh_gcs_lock_of_another_host(gcs, tree, caplog):
  from exemplar.transforms import commit
  started = stamp(1)
  put_lock(gcs, "forced", started)
  out = f"gs://{OUT_BUCKET}/forced"
  with caplog.at_level(logging.WARNING):
    assert run_cli(["--input_dir", tree, "--output_dir", out, "--overwrite"] + SMALL) == 0
  assert len(took_over(caplog, f"host other-host, pid 1, started {started}")) == 1, caplog.text
  assert commit.is_finished(out)
  assert lock_object(gcs, "forced") is None  # released by the run that took it


def test_overwrite_never_takes_a_gcs_lock_from_a_live_process_here(gcs):
  from exemplar.transforms import lock
  out = f"gs://{OUT_BUCKET}/live"
  held = lock.OutputLock(out)
  held.acquire()
  try:
    with pytest.raises(lock.OutputLocked, match=f"pid {os.getpid()},"):
      lock.OutputLock(out, overwrite=True).acquire()
    assert lock_object(gcs, "live")["token"] == held.holder.token
  finally:
    held.release()


@pytest.mark.parametrize("case", ["stale", "overwrite"])
def test_racing_takeovers_of_one_gcs_lock_admit_exactly_one(gcs, monkeypatch, case):
  """Four runs read the same lock before any replaces it (a barrier right
  after the read): exactly one replaces it; the others are refused naming
  the winner, and the winner's lock stays."""
  from exemplar.transforms import lock
  folder = f"race-{case}"
  put_lock(gcs, folder, stamp(lock.STALE_AFTER_SECONDS / 3600 + 1 if case == "stale" else 1))
  out = f"gs://{OUT_BUCKET}/{folder}"
  runs = 4
  barrier = threading.Barrier(runs, timeout=60)
  waited = threading.local()
  parse = lock.Holder.parse.__func__

  def parse_after_all_read(cls, data):  # each run's first read of the lock
    if not getattr(waited, "done", False):
      waited.done = True
      barrier.wait()
    return parse(cls, data)
  monkeypatch.setattr(lock.Holder, "parse", classmethod(parse_after_all_read))

  locks = [lock.OutputLock(out, overwrite=case == "overwrite") for _ in range(runs)]
  for index, run in enumerate(locks):  # as runs on other hosts: none is 'alive here'
    run.holder = dataclasses.replace(run.holder, host=f"racer-{index}")
  outcomes = [None] * runs

  def take(index: int) -> None:
    try:
      locks[index].acquire()
      outcomes[index] = "held"
    except lock.OutputLocked as e:
      outcomes[index] = e
  threads = [threading.Thread(target=take, args=(i,)) for i in range(runs)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(timeout=120)
  winners = [i for i, outcome in enumerate(outcomes) if outcome == "held"]
  assert len(winners) == 1, outcomes
  winner = locks[winners[0]].holder
  assert lock_object(gcs, folder)["token"] == winner.token
  for outcome in outcomes:
    if outcome != "held":
      assert isinstance(outcome, lock.OutputLocked), outcomes
      assert outcome.holder.token == winner.token, outcomes
  locks[winners[0]].release()
  assert lock_object(gcs, folder) is None


def test_an_exemplar_output_in_a_gcs_input_tree_is_not_a_class(gcs, tmp_path):
  """Folders holding an exemplar output (its files record, its lock, its
  staging folder) are not classes on gs://, as on local disk; a class with a
  marker's name deeper down, or a look-alike name, still is."""
  from exemplar.transforms import listing
  from tests.conftest import touch
  names = ["ant/a.jpg", "bee/b.png",
           "aaa_out/exemplar_files.json", "aaa_out/contact_sheet.png",
           "aaa_out/exemplar-train.tfrecord-00000-of-00001",
           "locked/.exemplar-lock", "locked/contact_sheet.png",
           "staged/.exemplar-staging/run/contact_sheet.png",
           "cat[1]/c.jpg", "cat[1]/sub/exemplar_files.json",
           "dog/d.jpg", "dog/.exemplar-lock-notes/x.png", "dog/exemplar_files.json.bak"]
  local = str(tmp_path / "images")
  bucket = gcs.client().bucket(IN_BUCKET)
  for name in names:
    touch(local, name)
    bucket.blob("outputs_inside/" + name).upload_from_string(b"x")
  expected = ["ant", "bee", "cat[1]", "dog"]
  assert listing.list_class_folders(local) == expected
  assert listing.list_class_folders(f"gs://{IN_BUCKET}/outputs_inside") == expected
