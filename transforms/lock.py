"""One writer at a time per output folder: `<output_dir>/.exemplar-lock`.

A run takes the lock before it touches anything in the folder and holds it
until its commit is done, so two runs into one folder (a scheduled job that
overlaps the previous one) never interleave: the second is refused with
`OutputLocked`, naming the holder.

  * Local disk: an exclusive `flock` on the lock file. The kernel drops it
    when the holding process dies, so a lock left by a killed run is taken
    over at once (the holder it names is logged).
  * gs://: an object created with the precondition "only if absent"
    (`ifGenerationMatch=0`) and deleted by its generation. A lock whose holder
    ran on this host and whose process is gone, or that is older than
    `STALE_AFTER_SECONDS`, was left by a killed run and is taken over; with
    `overwrite` (the CLI's --overwrite) so is any other lock, except one whose
    holder is a live process on this host. A take-over replaces the lock
    object only if it is still the generation that was read, so of several
    runs taking over one lock exactly one wins; the others are refused,
    naming it. A run whose lock was taken over cannot commit (its commit
    finds the lock no longer names it and is refused).
  * Other Beam file systems: no atomic create is known, so the lock is a plain
    file, checked then written (a warning says so).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import socket
import time
import uuid
from typing import Optional

from apache_beam.io.filesystems import FileSystems

from exemplar.transforms import fileio
from exemplar.transforms.names import LOCK_FILE

# A gs:// lock older than this is taken for one left by a killed run.
STALE_AFTER_SECONDS = 24 * 3600

_LOGGER = logging.getLogger(__name__)


class OutputLocked(Exception):
  """Another run holds the output folder's lock."""

  def __init__(self, output_dir: str, holder: "Holder", local: bool = False):
    # A local lock is the kernel's: held only while its process lives, so
    # there is nothing to remove by hand (removing it would let a second
    # writer in beside the live one).
    advice = ("wait for it to finish" if local else
              f"wait for it to finish, or remove {FileSystems.join(output_dir, LOCK_FILE)} "
              "if that run is gone")
    super().__init__(f"{output_dir} is being written by another exemplar run "
                     f"({holder.describe()}); {advice}")
    self.output_dir = output_dir
    self.holder = holder


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds a lock: written into the lock file as JSON."""
  host: str
  pid: int
  started: str  # ISO 8601, UTC
  token: str

  @classmethod
  def this_process(cls) -> "Holder":
    return cls(socket.gethostname(), os.getpid(),
               datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               uuid.uuid4().hex)

  @classmethod
  def parse(cls, data: bytes) -> "Holder":
    try:
      fields = json.loads(data.decode("utf-8"))
      return cls(str(fields["host"]), int(fields["pid"]), str(fields["started"]),
                 str(fields.get("token", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
      return cls("unknown host", 0, "unknown time", "")

  def to_bytes(self) -> bytes:
    return json.dumps(dataclasses.asdict(self), sort_keys=True).encode("utf-8")

  def describe(self) -> str:
    return f"host {self.host}, pid {self.pid}, started {self.started}"

  def _runs_here(self) -> Optional[bool]:
    """None when the holder ran on another host (or names no process), else
    whether its process still runs (a pid we may not signal runs)."""
    if self.host != socket.gethostname() or self.pid <= 0:
      return None
    try:
      os.kill(self.pid, 0)
    except ProcessLookupError:
      return False
    except PermissionError:
      return True
    return True

  def is_gone(self) -> bool:
    """True when the holder ran on this host and its process has ended."""
    return self._runs_here() is False

  def is_alive_here(self) -> bool:
    """True when the holder ran on this host and its process still runs."""
    return self._runs_here() is True

  def age_seconds(self) -> Optional[float]:
    try:
      started = datetime.datetime.fromisoformat(self.started)
    except ValueError:
      return None
    if started.tzinfo is None:  # written without an offset: taken as UTC
      started = started.replace(tzinfo=datetime.timezone.utc)
    return (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()


class OutputLock:
  """The lock of one output folder (the folder must exist).

      with OutputLock(output_dir):
        ...  # this process is the folder's only exemplar writer

  `acquire` raises OutputLocked when another live run holds it.
  """

  def __init__(self, output_dir: str, overwrite: bool = False):
    self.output_dir = output_dir
    # gs:// (and other stores): take over a lock of another host or a dead
    # process even when it is fresh (the CLI's --overwrite). On local disk the
    # kernel's flock says whether its holder lives; nothing to override.
    self.overwrite = overwrite
    self.path = FileSystems.join(output_dir, LOCK_FILE)
    self.holder = Holder.this_process()
    self._fd: Optional[int] = None
    self._generation: Optional[int] = None
    self._held = False

  @staticmethod
  def held_by(output_dir: str, token: str) -> bool:
    """Whether the folder's lock file names the holder token `token`."""
    path = FileSystems.join(output_dir, LOCK_FILE)
    try:
      with FileSystems.open(path) as f:
        return bool(token) and Holder.parse(f.read()).token == token
    except Exception:  # noqa: BLE001 - no lock file, or unreadable: not held
      return False

  def __enter__(self) -> "OutputLock":
    self.acquire()
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()

  def acquire(self) -> None:
    if self._held:
      return
    if fileio.is_local(self.path):
      self._acquire_local()
    elif fileio.is_gcs(self.path):
      self._acquire_gcs()
    else:
      self._acquire_plain()
    self._held = True

  def release(self) -> None:
    """Removes the lock file; a no-op when not held."""
    if not self._held:
      return
    self._held = False
    if self._fd is not None:
      # Removed while still locked: a run that opened the old file sees that
      # the path no longer names it and opens the new one (_acquire_local).
      try:
        if _names_open_file(self.path, self._fd):  # not a file someone put there since
          os.remove(self.path)
      finally:
        os.close(self._fd)
        self._fd = None
    elif self._generation is not None:
      from google.api_core import exceptions
      client, bucket, name = fileio.gcs_client_and_name(self.path)
      try:
        client.bucket(bucket).blob(name).delete(if_generation_match=self._generation)
      except (exceptions.NotFound, exceptions.PreconditionFailed):
        pass  # taken over as stale: the new holder's lock stays
      self._generation = None
    else:
      fileio.remove([self.path])

  # --- local disk -----------------------------------------------------------

  def _acquire_local(self) -> None:
    import fcntl
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _wait_for_holder(fd)
        os.close(fd)
        raise OutputLocked(self.output_dir, holder, local=True) from None
      if not _names_open_file(self.path, fd):  # released (removed) between open and flock
        os.close(fd)
        continue
      left = _read_fd(fd)
      if left.strip():
        _LOGGER.info("Taking over the lock of %s left by a run that ended "
                     "without releasing it (%s)", self.output_dir,
                     Holder.parse(left).describe())
      os.ftruncate(fd, 0)
      os.pwrite(fd, self.holder.to_bytes(), 0)
      os.fsync(fd)
      self._fd = fd
      return

  # --- gs:// ----------------------------------------------------------------

  def _acquire_gcs(self) -> None:
    from google.api_core import exceptions
    client, bucket_name, name = fileio.gcs_client_and_name(self.path)
    bucket = client.bucket(bucket_name)
    overwrite = self.overwrite
    for _ in range(5):
      blob = bucket.blob(name)
      try:
        blob.upload_from_string(self.holder.to_bytes(), if_generation_match=0)
        self._generation = blob.generation
        return
      except exceptions.PreconditionFailed:
        pass
      existing = bucket.get_blob(name)
      if existing is None:
        continue  # released meanwhile
      try:
        holder = Holder.parse(existing.download_as_bytes(
            if_generation_match=existing.generation))
      except (exceptions.NotFound, exceptions.PreconditionFailed):
        continue
      reason = _takeover_reason(holder, overwrite)
      if reason is None:
        raise OutputLocked(self.output_dir, holder)
      # Replaced only if still the lock read above: of several runs taking
      # over this lock, exactly one wins.
      blob = bucket.blob(name)
      try:
        blob.upload_from_string(self.holder.to_bytes(),
                                if_generation_match=existing.generation)
      except (exceptions.NotFound, exceptions.PreconditionFailed):
        # Released, or taken by another run meanwhile: --overwrite was about
        # the lock this run found, not the winner's; look again, without it.
        overwrite = False
        continue
      self._generation = blob.generation
      _LOGGER.warning("Took over the lock of %s from %s (%s)", self.output_dir,
                      holder.describe(), reason)
      return
    raise OutputLocked(self.output_dir, Holder("unknown host", 0, "unknown time", ""))

  # --- other file systems ---------------------------------------------------

  def _acquire_plain(self) -> None:
    _LOGGER.warning("%s has no atomic create: the output lock is best effort",
                    FileSystems.get_scheme(self.path))
    if fileio.exists(self.path):
      with FileSystems.open(self.path) as f:
        holder = Holder.parse(f.read())
      reason = _takeover_reason(holder, self.overwrite)
      if reason is None:
        raise OutputLocked(self.output_dir, holder)
      _LOGGER.warning("Took over the lock of %s from %s (%s)", self.output_dir,
                      holder.describe(), reason)
    with FileSystems.create(self.path) as f:
      f.write(self.holder.to_bytes())


def _takeover_reason(holder: Holder, overwrite: bool) -> Optional[str]:
  """Why a lock held by `holder` (on a store without flock) may be taken
  over, or None when it may not: its holder is gone, it is stale, or
  `overwrite` was asked for and its holder is not a live process here."""
  if holder.is_gone():
    return "its process has ended"
  age = holder.age_seconds()
  if age is not None and age > STALE_AFTER_SECONDS:
    return f"older than {STALE_AFTER_SECONDS // 3600} hours"
  if overwrite and not holder.is_alive_here():
    return "overwrite asked for"
  return None


def _names_open_file(path: str, fd: int) -> bool:
  """Whether `path` still names the file open as `fd`."""
  try:
    named, opened = os.stat(path), os.fstat(fd)
  except FileNotFoundError:
    return False
  return (named.st_ino, named.st_dev) == (opened.st_ino, opened.st_dev)


def _wait_for_holder(fd: int, seconds: float = 2.0) -> Holder:
  """The holder named in a locked file; the holder writes its name right
  after it takes the lock, so an empty file is read again for a moment."""
  deadline = time.monotonic() + seconds
  while True:
    data = _read_fd(fd)
    if data.strip() or time.monotonic() > deadline:
      return Holder.parse(data)
    time.sleep(0.02)


def _read_fd(fd: int) -> bytes:
  chunks = []
  offset = 0
  while True:
    chunk = os.pread(fd, 65536, offset)
    if not chunk:
      return b"".join(chunks)
    chunks.append(chunk)
    offset += len(chunk)
