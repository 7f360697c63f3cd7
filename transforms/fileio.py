"""Literal file operations on any Beam file system.

Beam's `FileSystems.match` takes glob patterns, and `FileSystems.delete`
matches its arguments as patterns too (local disk and gs:// alike), so a path
holding '*', '?' or '[' names other files, or none: `out[1]` matches nothing,
`x/?out` matches its sibling `x/aout`. exemplar never hands a user's path to
them. These functions name files exactly: local disk through `os`, gs://
through the job's GCS client (the one GcsIO builds, with its credentials and
retries), and any other Beam file system through its own API with every glob
character escaped. `write_file_atomically` writes a file all or nothing.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import uuid
from typing import Dict, Iterable, List

from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem

from exemplar.transforms import beam_internals

_GLOB_CHARACTERS = "*?["


def is_local(path: str) -> bool:
  return isinstance(FileSystems.get_filesystem(path), LocalFileSystem)


def is_gcs(path: str) -> bool:
  return FileSystems.get_scheme(path) == "gs"


def escape_glob(path: str) -> str:
  """`path` as a Beam/fnmatch pattern that matches only itself.

  Each glob character becomes a one-character set: '[*]', '[?]', and for
  '[' the set of NUL (which no path holds) and '[': fnmatch's '[[]' becomes
  the regex '[[]' in Beam's own translation (object stores), which Python's
  re warns about as a possible nested set."""
  return "".join(("[\0[]" if c == "[" else f"[{c}]") if c in _GLOB_CHARACTERS else c
                 for c in path)


def gcs_client_and_name(path: str):
  """(the job's google.cloud.storage client, bucket name, object name)."""
  from apache_beam.io.gcp import gcsio
  bucket, name = gcsio.parse_gcs_path(path, object_optional=True)
  return beam_internals.gcs_client(path), bucket, name


def exists(path: str) -> bool:
  """Whether a file exists at exactly `path` (Beam's exists is literal)."""
  return FileSystems.exists(path)


def remove(paths: Iterable[str]) -> None:
  """Deletes exactly these files; one that is already gone is no error."""
  for path in paths:
    if is_local(path):
      try:
        os.remove(path)
      except FileNotFoundError:
        pass
    elif is_gcs(path):
      from google.api_core import exceptions
      client, bucket, name = gcs_client_and_name(path)
      try:
        client.bucket(bucket).blob(name).delete()
      except exceptions.NotFound:
        pass
    elif FileSystems.exists(path):
      FileSystems.delete([escape_glob(path)])


def sizes_under(folder: str) -> Dict[str, int]:
  """{path: size in bytes} of every file below `folder`, any depth ({} if
  there is none). Local links are not followed into folders."""
  folder = folder.rstrip("/")
  found: Dict[str, int] = {}
  if is_local(folder):
    for root, dirs, files in os.walk(folder):
      for name in files:
        path = os.path.join(root, name)
        try:
          found[path] = os.lstat(path).st_size
        except FileNotFoundError:
          pass
    return found
  if is_gcs(folder):
    client, bucket, name = gcs_client_and_name(folder + "/")
    for blob in client.list_blobs(bucket, prefix=name, fields="items(name,size),nextPageToken"):
      if not blob.name.endswith("/"):  # a 'folder' placeholder object
        found[f"gs://{bucket}/{blob.name}"] = int(blob.size or 0)
    return found
  for metadata in match_below(folder + "/"):
    found[metadata.path] = metadata.size_in_bytes
  return found


def match_below(prefix: str) -> List:
  """Beam FileMetadata of every file whose path starts with `prefix` (a
  folder's path ending in '/'), literally: Beam's FileSystems.match reads
  '[', '*' and '?' in a path as a pattern, so they are escaped."""
  return [metadata for metadata in FileSystems.match([escape_glob(prefix) + "**"])[0].metadata_list
          if metadata.path.startswith(prefix)]


def files_under(folder: str) -> List[str]:
  """Every file below `folder`, sorted ([] if there is none)."""
  return sorted(sizes_under(folder))


def remove_tree(folder: str) -> None:
  """Deletes `folder` and everything below it. Object stores have no folders,
  only names with a common prefix: there every object below it is deleted."""
  if is_local(folder):
    if os.path.isdir(folder):
      shutil.rmtree(folder)
    return
  remove(files_under(folder))


def size(path: str) -> int:
  """The size of the file at exactly `path`; FileNotFoundError if none."""
  if is_local(path):
    return os.stat(path).st_size
  if is_gcs(path):
    client, bucket, name = gcs_client_and_name(path)
    blob = client.bucket(bucket).get_blob(name)
    if blob is None:
      raise FileNotFoundError(path)
    return int(blob.size)
  if not FileSystems.exists(path):
    raise FileNotFoundError(path)
  return FileSystems.metadata(path).size_in_bytes


def absolute(path: str) -> str:
  """A local path made absolute (symbolic links kept), without a trailing
  separator; any other URI without its trailing '/' (kept for 'gs://b/').

  A '..' is resolved as the OS resolves it: after the links before it
  ('link/../out' is the link target's sibling 'out', where the shell's `ls`
  finds it, not './out', which `os.path.abspath`'s string rule gives).
  """
  if is_local(path):
    expanded = os.path.expanduser(path)
    parts = expanded.split(os.sep)
    if ".." not in parts:
      return os.path.abspath(expanded)
    last = len(parts) - 1 - parts[::-1].index("..")
    head = os.path.realpath(os.sep.join(parts[:last + 1]) or os.sep)
    return os.path.abspath(os.path.join(head, *parts[last + 1:]))
  stripped = path.rstrip("/")
  return path if stripped.endswith(":") or stripped.endswith(":/") else stripped


def is_within(path: str, root: str) -> bool:
  """Whether `path` is `root` or lies below it (local paths compared with
  their links resolved)."""
  if is_local(path) != is_local(root):
    return False
  if is_local(path):
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
  path, root = path.rstrip("/"), root.rstrip("/")
  return path == root or path.startswith(root + "/")


def csv_text(header, rows) -> str:
  """CSV text, one record per '\\n'-ended line, that csv.reader reads back
  exactly. Python's writer quotes a field holding '\\n' but not one holding
  a lone '\\r' when the line terminator is '\\n' (a file named 'a\\rb.jpg'),
  and its reader then fails on the whole file: a record with a '\\r' in a
  field is written with every field quoted."""
  buffer = io.StringIO()
  plain = csv.writer(buffer, lineterminator="\n")
  quoted = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
  for row in [header, *rows]:
    (quoted if any("\r" in str(field) for field in row) else plain).writerow(row)
  return buffer.getvalue()


def write_file_atomically(path: str, chunks: Iterable[bytes]) -> int:
  """Writes `chunks` to `path` all or nothing; returns the bytes written.

  On gs:// the object is written directly: it only appears when its upload
  completes, and a failed upload is cancelled, so nothing partial or temporary
  is ever visible (a GCS rename is a batched copy + delete: twice the traffic,
  and emulators lack batch requests). Every other file system gets a hidden
  temporary name beside `path`, renamed into place once whole. A second
  attempt of the same write (a retry, a lost worker's task) replaces the file
  with the same bytes.
  """
  written = 0
  if FileSystems.get_scheme(path) == "gs":
    f = FileSystems.create(path)
    try:
      for chunk in chunks:
        f.write(chunk)
        written += len(chunk)
    except BaseException:
      # close() would publish what was uploaded so far; this cancels it.
      try:
        beam_internals.cancel_upload(f)
      except Exception:  # noqa: BLE001 - the upload is abandoned either way
        pass
      raise
    f.close()
    return written
  directory, name = FileSystems.split(path)
  temp_path = FileSystems.join(directory, f".tmp-{uuid.uuid4().hex}-{name}")
  try:
    with FileSystems.create(temp_path) as f:
      for chunk in chunks:
        f.write(chunk)
        written += len(chunk)
    FileSystems.rename([temp_path], [path])
  except BaseException:
    remove([temp_path])
    raise
  return written
