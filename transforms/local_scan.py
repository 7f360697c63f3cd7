"""Stage 1's local-disk walker as plain functions: no Beam, no TensorFlow.

    walk_local(folder, relative_folder, problems) -> relative image paths

The listing rules (Keras's, see transforms/listing.py) applied with
`os.scandir`, which answers most type checks from the directory listing
itself. transforms/listing.py lists every file system with these rules and
uses this walker for local disk; it lives apart so that a process that has not
imported Beam (exemplar.prelist's listing child) lists exactly as the job
does.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Iterator, List, Optional, Tuple

from exemplar.transforms.names import FILES_RECORD, LOCK_FILE, STAGING_DIR

# The same logger as the rest of the listing stage.
_LOGGER = logging.getLogger("exemplar.transforms.listing")

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")

# Folders that operating systems, archivers and NAS boxes put into folder
# trees: never a class, never images of one. Skipped like hidden names, at
# every depth, matched without regard to case (Windows and NAS shares are
# case-insensitive: '$Recycle.Bin' on a system drive, '$RECYCLE.BIN' on others).
SYSTEM_FOLDERS = frozenset({
    "__MACOSX",                   # macOS Archive Utility / Finder zips: '._' resource forks
    "$RECYCLE.BIN",               # Windows Recycle Bin (Vista and later), per drive
    "RECYCLER",                   # Windows Recycle Bin (2000, XP)
    "System Volume Information",  # Windows restore points and indexing, per drive
    "lost+found",                 # ext2/3/4 fsck: orphaned files
    "@eaDir",                     # Synology DSM thumbnails and metadata
    "#recycle",                   # Synology shared-folder Recycle Bin
    "#snapshot",                  # Synology snapshots, shown on SMB shares
    "@Recycle",                   # QNAP Network Recycle Bin
    "Network Trash Folder",       # macOS AFP shares
    "Temporary Items",            # macOS AFP shares
})
_SYSTEM_FOLDERS_LOWER = frozenset(name.lower() for name in SYSTEM_FOLDERS)


def is_image_name(name: str) -> bool:
  """True for a visible file name with one of Keras's image extensions."""
  return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def is_skipped_folder(name: str) -> bool:
  """True for a folder name the listing never enters: hidden ('.x') or one of
  the `SYSTEM_FOLDERS`."""
  return name.startswith(".") or name.lower() in _SYSTEM_FOLDERS_LOWER


# What marks a folder as an exemplar output: its files record, its lock, its
# staging folder (the last two while, or after, a run writes it).
OUTPUT_MARKERS = (FILES_RECORD, STAGING_DIR, LOCK_FILE)


def is_exemplar_output(folder: str) -> bool:
  """Whether a local folder holds an exemplar output (by its marker files)."""
  return any(os.path.lexists(os.path.join(folder, marker)) for marker in OUTPUT_MARKERS)


# Paths of one folder are handed on in lists of at most this many, so a flat
# folder of millions of files never sits in memory whole.
LOCAL_CHUNK = 4096


def walk_local(folder: str, relative_folder: str,
                problems: Optional[List[Tuple[str, str]]]) -> Iterator[str]:
  # chain.from_iterable flattens the per-folder lists in C: no generator
  # resumption per file (listing costs ~1 us per file; every 50 ns counts).
  return itertools.chain.from_iterable(_scan_local(folder, relative_folder, problems))


def _scan_local(folder: str, relative_folder: str,
                problems: Optional[List[Tuple[str, str]]] = None) -> Iterator[List[str]]:
  """Yields lists of the relative image paths below `folder`, folder by folder.

  The type checks are ordered so a plain file costs no system call: DirEntry
  answers is_file / is_dir / is_symlink from the directory listing itself, and
  is_file() only stats a link's target. The rules are those of the loop
  this replaced: a visible entry that is a folder (not a link, not one of the
  `SYSTEM_FOLDERS`) is walked; one
  with an image extension that is a file or a link to anything but a folder (a
  dangling one too, so decoding records it) is listed; links to folders are
  never followed, as in Keras's os.walk.
  """
  system_folders = _SYSTEM_FOLDERS_LOWER  # looked up for folders only
  stack = [(folder, relative_folder)]
  while stack:
    path, relative = stack.pop()
    prefix = relative + "/"
    try:
      entries = os.scandir(path)
    except OSError as e:
      _LOGGER.warning("Skipping folder %s: %s", path, e)
      if problems is not None:
        problems.append((relative, f"unreadable folder: {error_line(e)}"))
      continue
    files: List[str] = []
    append = files.append
    with entries:
      try:
        for entry in entries:
          name = entry.name
          if name[0] == ".":
            continue
          if not name.isascii() and not is_utf8(name):
            _skip_undecodable(entry, prefix + name, problems)
            continue
          try:
            if name.lower().endswith(IMAGE_EXTENSIONS):
              if entry.is_file() or (entry.is_symlink() and not entry.is_dir()):
                append(prefix + name)
                if len(files) >= LOCAL_CHUNK:
                  yield files
                  files = []
                  append = files.append
              elif entry.is_dir(follow_symlinks=False):  # a folder named x.jpg
                stack.append((entry.path, prefix + name))
            elif (entry.is_dir() and not entry.is_symlink()
                  and name.lower() not in system_folders
                  and not is_exemplar_output(entry.path)):  # a few stats per sub-folder
              stack.append((entry.path, prefix + name))
          except OSError as e:  # a vanished entry or an unreadable link
            _LOGGER.warning("Skipping %s: %s", entry.path, e)
      except OSError as e:  # the folder failed mid-listing
        _LOGGER.warning("Stopped listing folder %s: %s", path, e)
        if problems is not None:
          problems.append((relative, f"folder listing stopped: {error_line(e)}"))
    if files:
      yield files


def is_utf8(name: str) -> bool:
  """Whether a name listed from local disk is valid UTF-8 (Python lists the
  bytes of one that is not as lone surrogates, which no file exemplar
  writes can hold: the manifest, the records, the sampling hash)."""
  try:
    name.encode("utf-8")
  except UnicodeEncodeError:
    return False
  return True


def printable(name: str) -> str:
  """A name with its undecodable bytes shown as U+FFFD."""
  return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _skip_undecodable(entry: os.DirEntry, relative: str,
                      problems: Optional[List[Tuple[str, str]]]) -> None:
  """Skips an image file or a folder whose name is not valid UTF-8, recording
  it in `problems` (errors.csv) instead of failing the whole job."""
  try:
    is_folder = entry.is_dir(follow_symlinks=False)
  except OSError:
    is_folder = False
  if not is_folder and not entry.name.lower().endswith(IMAGE_EXTENSIONS):
    return
  what = "folder" if is_folder else "file"
  _LOGGER.warning("Skipping %s %s: its name is not valid UTF-8", what, printable(entry.path))
  if problems is not None:
    problems.append((printable(relative), f"{what} name is not valid UTF-8"))


def error_line(error: Exception) -> str:
  """An error's first line, at most 300 characters (for errors.csv)."""
  lines = str(error).strip().splitlines()
  return lines[0][:300] if lines else type(error).__name__
