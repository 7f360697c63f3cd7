"""Fingerprints of a run's input and configuration, for `--skip_if_unchanged`,
resuming a killed run, and the result file.

The input fingerprint covers what the sampler would list, and how each file
was last written: for every image file below the classes (Keras's listing
rules, transforms/listing.py) its relative path, size and modification time
(local: st_mtime_ns; gs://: the object's generation; other file systems:
their last-updated time). So adding, removing, renaming or rewriting a file
changes it. It is order-free (a sum of per-file hashes), so listing order,
threads and memory do not matter: one pass, O(1) memory per class.

A list file (--input_list) is fingerprinted by its bytes: a listed image
rewritten in place under the same path is not seen.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
from typing import Dict, Iterable, Iterator, Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems

from exemplar.transforms import fileio, listing

_MODULUS = 1 << 128


def _file_hash(relative_path: str, size: int, version: int) -> int:
  digest = hashlib.blake2b(
      f"{relative_path}\0{size}\0{version}".encode("utf-8", "surrogatepass"),
      digest_size=16).digest()
  return int.from_bytes(digest, "big")


def combine(entries: Iterable[Tuple[str, int, int]]) -> Tuple[int, int]:
  """(relative path, size, version) entries -> (files, order-free sum)."""
  count, total = 0, 0
  for relative_path, size, version in entries:
    count += 1
    total = (total + _file_hash(relative_path, size, version)) % _MODULUS
  return count, total


def _local_entries(root: str, class_name: str) -> Iterator[Tuple[str, int, int]]:
  for relative in listing.walk_class_folder(root, class_name):
    path = os.path.join(root, relative)
    try:
      st = os.stat(path)
    except OSError:  # a dangling link: the link itself
      try:
        st = os.lstat(path)
      except OSError:
        continue  # vanished since listed
    yield relative, st.st_size, st.st_mtime_ns


def _gcs_entries(root: str, class_name: str) -> Iterator[Tuple[str, int, int]]:
  client, bucket, blob_prefix = fileio.gcs_client_and_name(root.rstrip("/") + "/")
  blobs = client.list_blobs(bucket, prefix=blob_prefix + class_name + "/",
                            fields="items(name,size,generation),nextPageToken")
  for blob in blobs:
    relative = blob.name[len(blob_prefix):]
    if listing._is_visible_image(relative):
      yield relative, int(blob.size or 0), int(blob.generation or 0)


def _other_entries(root: str, class_name: str) -> Iterator[Tuple[str, int, int]]:
  prefix = root.rstrip("/") + "/"
  for m in fileio.match_below(prefix + class_name + "/"):
    relative = m.path[len(prefix):]
    if listing._is_visible_image(relative):
      yield relative, int(m.size_in_bytes), int((m.last_updated_in_seconds or 0) * 1e9)


def class_entries(root: str, class_name: str) -> Iterator[Tuple[str, int, int]]:
  """(relative path, size, version) of each image file of one class."""
  root = listing.normalize_root(root)
  if fileio.is_local(root):
    return _local_entries(root, class_name)
  if FileSystems.get_scheme(root) == "gs":
    return _gcs_entries(root, class_name)
  return _other_entries(root, class_name)


def input_fingerprint(input_dir: Optional[str], class_names: Sequence[str],
                      input_list: Optional[str] = None, threads: int = 4) -> Dict:
  """{'fingerprint': hex, 'files': n} of the input (see the module docstring).

  Costs a listing with a stat per file (about 5-9 us per file on local disk:
  ~10 s for 1.3M files), spread over `threads` (the stats release the GIL).
  """
  if input_list is not None:
    with FileSystems.open(input_list) as f:
      digest = hashlib.sha256(f.read()).hexdigest()
    return {"fingerprint": "list-" + digest[:32], "files": None}
  with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
    per_class = list(pool.map(
        lambda name: combine(class_entries(input_dir, name)), class_names))
  outer = hashlib.sha256()
  for class_name, (count, total) in zip(class_names, per_class):
    outer.update(f"{class_name}\0{count}\0{total:032x}\n".encode("utf-8", "surrogatepass"))
  return {"fingerprint": outer.hexdigest()[:32],
          "files": sum(count for count, _ in per_class)}


# Keys of the run's configuration that do not change what it writes.
NOT_IN_CONFIG_FINGERPRINT = ("output_dir", "overwrite", "skip_if_unchanged", "result_file",
                             "fail_on_short", "compare_to", "config_file")


def config_fingerprint(config: Dict, version: str) -> str:
  """The configuration (plain data) and exemplar's version -> hex."""
  kept = {key: value for key, value in config.items()
          if key not in NOT_IN_CONFIG_FINGERPRINT}
  text = json.dumps({"config": kept, "exemplar": version}, sort_keys=True, default=str)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
