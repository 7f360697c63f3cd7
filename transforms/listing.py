"""Stage 1: list the image files of a `<root>/<class>/...` tree.

Listing rules follow `tf.keras.utils.image_dataset_from_directory`:
  * classes are the first-level folders of the root, sorted as plain strings;
  * every file below a class folder belongs to it, however deeply nested;
  * only Keras's image extensions count (.bmp .gif .jpeg .jpg .png, any case);
  * names starting with '.' (files or folders) are hidden and skipped, and so
    are the folders operating systems, archivers and NAS boxes leave in trees
    (`SYSTEM_FOLDERS`: '__MACOSX', '$RECYCLE.BIN', '@eaDir', ...), at every
    depth; Keras lists both.
Symbolic links to folders are not followed (as `os.walk` does by default), so a
link loop cannot hang the listing.

Remote paths go through Beam's `FileSystems` (gs:// through the GCS client),
so every Beam file system works unchanged. Local disk is walked with
`os.scandir` (transforms/local_scan.py, Beam-free), because
`LocalFileSystem.match` stats every file twice, which dominates listing time on
trees of millions of files.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems

from exemplar.transforms import fileio
from exemplar.transforms.fileio import is_local
# The local walker and the rules it shares with the remote listing are
# Beam-free (transforms/local_scan.py); these names are this module's too.
from exemplar.transforms.local_scan import (  # noqa: F401
    IMAGE_EXTENSIONS, LOCAL_CHUNK, OUTPUT_MARKERS, SYSTEM_FOLDERS, is_exemplar_output,
    is_image_name, is_skipped_folder, is_utf8, printable, walk_local)
from exemplar.transforms.names import FILES_RECORD, LOCK_FILE, STAGING_DIR

_LOGGER = logging.getLogger(__name__)

class ListingError(ValueError):
  """The input tree or its classes cannot be used: one of the errors below.
  Messages name the path or the names at fault, never a command-line flag
  (the `exemplar` command adds that)."""


class InputRootError(ListingError):
  """The input root is missing, is not a folder, cannot be listed, or holds
  no class folders. The message starts with the root."""


class ClassNamesError(ListingError):
  """The classes asked for do not fit the input: a name that is no class
  folder, or a name asked for twice. The message starts with the names."""


class UnstorableClassNameError(ListingError):
  """Class names that would not come back intact from the one-name-per-line
  files (`class_name_problem`); `names` holds them."""

  def __init__(self, message: str, names: Sequence[str]):
    super().__init__(message)
    self.names = list(names)


def normalize_root(root: str) -> str:
  """The root without a trailing separator (kept for bare 'gs://bucket/')."""
  stripped = root.rstrip("/")
  if stripped.endswith(":/") or stripped.endswith(":"):
    return root
  return stripped or root


def join(root: str, relative_path: str) -> str:
  """Joins a '/'-separated relative path onto a root of any file system. A
  path that is already whole (absolute, or a URI) is returned as it is, and
  so is any path with no root ('')."""
  if not root or is_whole_path(relative_path):
    return relative_path
  return FileSystems.join(root, *relative_path.split("/"))


def is_whole_path(path: str) -> bool:
  """An absolute local path or a URI ('gs://b/x.jpg'), not a relative one."""
  return path.startswith("/") or "://" in path


def list_class_folders(root: str) -> List[str]:
  """The sorted, visible first-level folder names of `root`.

  A folder holding an exemplar output (its files record, lock or staging
  folder: `is_exemplar_output`) is not a class, on local disk and on object
  stores alike: a dataset written into the input tree must not come back as
  training images. (A run refuses an output folder inside its input; this
  covers one made otherwise, e.g. moved or copied there.)
  Raises InputRootError if `root` does not exist or holds no class folders.
  """
  root = normalize_root(root)
  if is_local(root):
    if not os.path.isdir(root):
      raise InputRootError(f"{root!r} does not exist or is not a folder")
    with os.scandir(root) as entries:
      names = [
          e.name for e in entries
          if not is_skipped_folder(e.name) and e.is_dir(follow_symlinks=True)
          and not is_exemplar_output(e.path)
      ]
  else:
    names = _remote_class_folders(root)
  if not names:
    raise InputRootError(
        f"{root!r} holds no class folders: expected <class>/<images> below it")
  return sorted(names)


def is_output_marker(relative: str) -> bool:
  """Whether an object's path below a folder ('exemplar_files.json',
  '.exemplar-staging/run/x.png') is one of the `OUTPUT_MARKERS`."""
  return (relative in (FILES_RECORD, LOCK_FILE)
          or relative.startswith(STAGING_DIR + "/"))


# Class folders checked for markers at once on gs:// (two small requests each).
GCS_MARKER_THREADS = 16


def _gcs_output_folders(client, bucket: str, blob_prefix: str,
                        names: Sequence[str]) -> set:
  """Those of the first-level folders `names` below `blob_prefix` that hold
  an exemplar output. The delimited listing sees only the folders' names, so
  each folder is asked directly, by two listings of a few names each (run in
  parallel): its '.exemplar-' names, delimited (the lock, the staging
  folder), and the first name from `exemplar_files.json` on."""
  from concurrent.futures import ThreadPoolExecutor

  def is_output(name: str) -> bool:
    folder = blob_prefix + name + "/"
    hidden = client.list_blobs(bucket, prefix=folder + ".exemplar-", delimiter="/",
                               fields="items(name),prefixes,nextPageToken")
    for page in hidden.pages:
      if any(is_output_marker(blob.name[len(folder):]) for blob in page):
        return True
      if any(is_output_marker(p[len(folder):]) for p in page.prefixes):
        return True
    # The record's own name sorts first among the names it starts.
    record = client.list_blobs(bucket, prefix=folder + FILES_RECORD, max_results=1,
                               fields="items(name)")
    return any(blob.name == folder + FILES_RECORD for blob in record)

  if not names:
    return set()
  with ThreadPoolExecutor(min(GCS_MARKER_THREADS, len(names))) as pool:
    return {name for name, found in zip(names, pool.map(is_output, names)) if found}


def _remote_class_folders(root: str) -> List[str]:
  """First-level folders of an object-store root.

  Object stores have no folders, only key prefixes. On gs:// one delimited
  listing returns just the first-level prefixes (one request per 1000
  classes, not one per 1000 files of the whole tree); it does not see the
  folders' objects, so the folders are then checked for an exemplar
  output's marker objects (`_gcs_output_folders`). Other stores list every
  object through FileSystems.match and take the first path component; that
  listing sees the markers too, at no extra request.
  """
  prefix = root.rstrip("/") + "/"
  names = set()
  outputs = set()
  try:
    if FileSystems.get_scheme(prefix) == "gs":
      client, bucket, blob_prefix = _gcs_location(root)
      blobs = client.list_blobs(
          bucket, prefix=blob_prefix, delimiter="/",
          fields="prefixes,nextPageToken")
      for page in blobs.pages:
        names.update(p[len(blob_prefix):].rstrip("/") for p in page.prefixes)
      names = {n for n in names if n and not is_skipped_folder(n)}
      outputs = _gcs_output_folders(client, bucket, blob_prefix, sorted(names))
    else:
      for metadata in fileio.match_below(prefix):
        relative = metadata.path[len(prefix):]
        if "/" in relative:
          name, below = relative.split("/", 1)
          names.add(name)
          if is_output_marker(below):
            outputs.add(name)
  except Exception as e:  # noqa: BLE001 - any store's refusal, in one line
    raise InputRootError(f"{root!r} cannot be listed: {e}") from e
  for name in sorted(outputs):
    _LOGGER.info("Not a class: %s holds an exemplar output", prefix + name)
  return sorted(n for n in names
                if n and not is_skipped_folder(n) and n not in outputs)


def walk_class_folder(root: str, class_name: str,
                      problems: Optional[List[Tuple[str, str]]] = None) -> Iterator[str]:
  """Yields the relative paths ('class/sub/file.jpg') of a class's images.

  Order is unspecified; sampling does not depend on it. A folder that cannot
  be listed (permission denied, failed mid-listing) is skipped and, when
  `problems` is given, appended to it as (relative folder path, reason).
  """
  root = normalize_root(root)
  if is_local(root):
    return walk_local(os.path.join(root, class_name), class_name, problems)
  return _walk_remote(root, class_name)


def _walk_remote(root: str, class_name: str) -> Iterator[str]:
  """The class's image objects, by a plain prefix listing: a root or class
  name with glob characters ('[', '*', '?') lists only its own objects."""
  prefix = root.rstrip("/") + "/"
  if FileSystems.get_scheme(prefix) == "gs":
    # Names only, streamed page by page: no per-object metadata, no set of
    # every path held in memory (GcsIO.list_files keeps one).
    gcs = _GcsClass(root, class_name)
    blobs = gcs.client.list_blobs(
        gcs.bucket, prefix=gcs.class_prefix, fields="items(name),nextPageToken")
    relatives = (blob.name[len(gcs.blob_prefix):] for blob in blobs)
  else:
    relatives = (m.path[len(prefix):] for m in fileio.match_below(prefix + class_name + "/"))
  return (relative for relative in relatives if _is_visible_image(relative))


def _is_visible_image(relative: str) -> bool:
  """Whether an object's path below the root ('class/sub/x.jpg') is an image
  Keras would list: no hidden part, not in one of the `SYSTEM_FOLDERS`, not a
  'folder' object."""
  parts = relative.split("/")
  return (parts[-1] != "" and is_image_name(parts[-1])
          and not any(is_skipped_folder(part) for part in parts[:-1]))


def _gcs_location(root: str):
  """(the job's GCS client, bucket, object-name prefix) of a gs:// root; the
  client is the job's GcsIO's (its credentials and retry settings)."""
  return fileio.gcs_client_and_name(root.rstrip("/") + "/")


# --- a large gs:// class folder: listed in key ranges, in parallel ----------
#
# One gs:// listing stream returns roughly 5,000 names a second, so a class of
# millions of objects would keep one worker busy for minutes while the others
# wait. A class listing therefore stops after a budget of pages and cuts the
# names not yet listed into key ranges (GCS lists in name order and takes
# start/end offsets), which the pipeline spreads over workers; their partial
# samples merge into the same seeded sample as one listing would give.


@dataclasses.dataclass(frozen=True)
class RemoteListing:
  """How a gs:// class folder is listed: pages of `page_size` names; after
  `page_budget` pages the rest is cut into about `parts` key ranges, found
  with at most `max_probes` one-name listings. page_budget 0: never cut."""
  page_size: int = 1000
  page_budget: int = 20
  parts: int = 32
  max_probes: int = 120


class KeyRange(NamedTuple):
  """The objects of a class named in [start, end), or (start, end) when not
  `include_start`; end '' is the end of the class."""
  class_name: str
  start: str
  end: str
  include_start: bool


class ClassListing:
  """Iterates a class's relative image paths, like `walk_class_folder`.

  On gs:// with a page budget, a listing longer than the budget stops there;
  `rest` then holds key ranges that together cover exactly the names not yet
  listed (for `walk_key_range`, anywhere).
  """

  def __init__(self, root: str, class_name: str,
               problems: Optional[List[Tuple[str, str]]] = None,
               remote: RemoteListing = RemoteListing()):
    self._root = normalize_root(root)
    self._class_name = class_name
    self._problems = problems
    self._remote = remote
    self.rest: List[KeyRange] = []

  def __iter__(self) -> Iterator[str]:
    if (self._remote.page_budget <= 0 or is_local(self._root)
        or FileSystems.get_scheme(self._root) != "gs"):
      return walk_class_folder(self._root, self._class_name, self._problems)
    return self._walk_gcs()

  def _walk_gcs(self) -> Iterator[str]:
    gcs = _GcsClass(self._root, self._class_name)
    blobs = gcs.client.list_blobs(
        gcs.bucket, prefix=gcs.class_prefix, page_size=self._remote.page_size,
        fields="items(name),nextPageToken")
    last = None
    for number, page in enumerate(blobs.pages, 1):
      for blob in page:
        last = blob.name
        relative = gcs.relative_image(blob.name)
        if relative:
          yield relative
      if number >= self._remote.page_budget and blobs.next_page_token and last:
        self.rest, _ = split_key_space(
            gcs.first_name_from, self._class_name, gcs.class_prefix, last,
            self._remote.parts, self._remote.max_probes)
        return


def walk_key_range(root: str, key_range: KeyRange) -> Iterator[str]:
  """The relative image paths of a class's objects in one key range (gs://)."""
  gcs = _GcsClass(normalize_root(root), key_range.class_name)
  blobs = gcs.client.list_blobs(
      gcs.bucket, prefix=gcs.class_prefix, start_offset=key_range.start,
      end_offset=key_range.end or None, fields="items(name),nextPageToken")
  for blob in blobs:
    if blob.name == key_range.start and not key_range.include_start:
      continue
    relative = gcs.relative_image(blob.name)
    if relative:
      yield relative


class _GcsClass:
  """A gs:// class folder: its bucket, object-name prefix and the job's client."""

  def __init__(self, root: str, class_name: str):
    self.client, self.bucket, self.blob_prefix = _gcs_location(root)
    self.class_prefix = self.blob_prefix + class_name + "/"

  def relative_image(self, name: str) -> Optional[str]:
    """'class/sub/x.jpg' for a visible image object, else None."""
    relative = name[len(self.blob_prefix):]
    return relative if _is_visible_image(relative) else None

  def first_name_from(self, start: str, include_start: bool) -> Optional[str]:
    """The first object name of the class >= `start` (> when not
    `include_start`), by a listing of at most two names."""
    for blob in self.client.list_blobs(
        self.bucket, prefix=self.class_prefix, start_offset=start,
        max_results=2, fields="items(name)"):
      if include_start or blob.name != start:
        return blob.name
    return None


def split_key_space(first_name_from, class_name: str, class_prefix: str,
                    after: str, parts: int, max_probes: int
                    ) -> Tuple[List[KeyRange], int]:
  """Key ranges covering exactly the class's names after `after`, and the
  number of probes it took.

  `first_name_from(start, include_start)` returns the first name >= (or >)
  `start`, or None. The ranges are cut at name prefixes that exist: a skip
  scan lists the distinct prefixes one character longer at each level (one
  probe each), deepening until a level has at least `parts` of them; a level
  with more than 2 x `parts` is not used, nor are levels past the probe
  budget. Whatever the prefixes, the ranges cover every name after `after`
  once; the prefixes only decide how evenly. Evenness is a guess (GCS gives
  no counts): names with a common stem and a numbered or hashed tail
  ('img_0001234.jpg', 'n01440764_10026.JPEG') split evenly; a few odd names
  beside them ('notes.txt') can stop the scan at a level where one range
  holds nearly all.
  """
  probes = 0

  def probe(start: str, include_start: bool) -> Optional[str]:
    nonlocal probes
    probes += 1
    return first_name_from(start, include_start)

  best: List[str] = []
  depth = len(class_prefix) + 1
  while probes < max_probes:
    prefixes: List[str] = []
    name = probe(after, False)
    complete, deeper = True, False
    while name is not None:
      if len(prefixes) == 2 * parts or probes >= max_probes:
        complete = False
        break
      prefix = name[:depth]
      deeper = deeper or len(name) > depth
      if not prefixes or prefixes[-1] != prefix:  # 'c/a/' then 'c/a/1.jpg'
        prefixes.append(prefix)
      following = _successor(prefix) if len(name) > depth else None
      name = (probe(following, True) if following is not None
              else probe(name, False) if len(name) <= depth else None)
    if not complete:
      break
    best = prefixes
    if len(prefixes) >= parts or not deeper:
      break
    depth += 1
  boundaries = [b for b in best[1:] if b > after]
  ranges = [KeyRange(class_name, after, boundaries[0] if boundaries else "", False)]
  for start, end in zip(boundaries, boundaries[1:] + [""]):
    ranges.append(KeyRange(class_name, start, end, True))
  return ranges, probes


def _successor(prefix: str) -> Optional[str]:
  """The least string greater than every string that starts with `prefix`."""
  while prefix:
    code = ord(prefix[-1]) + 1
    if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be object names
      code = 0xE000
    if code <= 0x10FFFF:
      return prefix[:-1] + chr(code)
    prefix = prefix[:-1]
  return None


def names_list(argument: str, names) -> List[str]:
  """A list of class names from a library argument; a lone string (which
  would read as its letters) or a non-string item is a ValueError."""
  if isinstance(names, (str, bytes)) or not all(isinstance(n, str) for n in names):
    raise ValueError(f"{argument} must be a list of names (strings), got {names!r}")
  return list(names)


def resolve_classes(found: Sequence[str], requested: Sequence[str] | None) -> List[str]:
  """Applies the classes asked for (`requested`, None: all): restricts and
  orders the classes, like Keras's `class_names`.

  Raises ClassNamesError naming the requested classes that are not among
  `found` (or one asked for twice), and UnstorableClassNameError naming the
  classes used whose names would not come back intact (`class_name_problem`).
  """
  if not requested:
    classes = list(found)
  else:
    missing = [c for c in requested if c not in set(found)]
    if missing:
      raise ClassNamesError(
          f"{missing}: not class folders of the input; found: {list(found)[:20]}")
    counts = collections.Counter(requested)
    twice = [name for name, count in counts.items() if count > 1]
    if twice:
      raise ClassNamesError(f"{twice}: each asked for more than once")
    classes = list(requested)
  check_class_names(classes)
  return classes


def class_name_problem(name: str) -> Optional[str]:
  """Why a class name would not come back intact from the one-name-per-line
  files (class_names.txt, read with str.splitlines; TFDS's label.labels.txt,
  split on line breaks with each name stripped), or None if it would."""
  if name.splitlines() != [name]:
    return "holds a line break"  # '\n', '\r', '\v', '\f', '\x1c'-'\x1e', U+0085, U+2028, U+2029
  if name != name.strip():
    return "starts or ends with white space, which TFDS strips"
  try:
    name.encode("utf-8")
  except UnicodeEncodeError:  # undecodable bytes in a local file name
    return "is not valid UTF-8"
  return None


def check_class_names(classes: Sequence[str]) -> None:
  """Raises UnstorableClassNameError naming (with repr, so a line break
  shows) each class whose name would not come back intact, before any job
  starts."""
  bad = [(name, problem) for name in classes
         for problem in [class_name_problem(name)] if problem]
  if bad:
    shown = "; ".join(f"{name!r} {problem}" for name, problem in bad[:5])
    more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
    raise UnstorableClassNameError(
        f"class folder names that cannot be stored one per line in "
        f"class_names.txt and TFDS's label.labels.txt: {shown}{more}; rename "
        f"the folders, or leave them out of the classes asked for",
        [name for name, _ in bad])
