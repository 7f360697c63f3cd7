"""What a written shard holds, kept beside it in the staging folder, so a run
killed mid-way and started again reuses every shard already complete.

After a shard is written whole, `.done-<shard>.json` records its key (a hash
of everything that fixes its bytes: its decode tasks, image settings, seed),
its size and CRC-32, and what the rest of the job needs from it: its
manifest rows, its failures and its contact-sheet thumbnails. A resumed run
(transforms/commit.py moves a killed run's shards into its staging folder)
reuses a shard only when the key matches and the file's size and checksum
are the recorded ones; otherwise it decodes the shard again. The records are
hidden files: never committed, removed with the staging folder.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems

from exemplar.transforms.commit import SHARD_DONE_PREFIX
from exemplar.transforms.decoding import DecodedImage, DecodeFailure
from exemplar.transforms import fileio
from exemplar.transforms.fileio import write_file_atomically

_READ_CHUNK = 8 << 20
_LOGGER = logging.getLogger(__name__)


def record_name(shard_name: str) -> str:
  return f"{SHARD_DONE_PREFIX}{shard_name}.json"


class Crc32:
  """A running CRC-32 of a shard's bytes: tells a shard a killed run wrote
  whole from one changed since. libdeflate's CRC runs many times faster
  than sha256 (~1.7 GB/s), which cost `all` runs ~2-4 s of thread time with
  the GIL contended (1.1 GB of shards for 10,000 images)."""

  def __init__(self):
    self.value = 0

  def update(self, data) -> None:
    import deflate
    self.value = deflate.crc32(data, self.value)

  def hexdigest(self) -> str:
    return f"{self.value:08x}"


def hashed(chunks: Iterable[bytes], checksum: Crc32) -> Iterator[bytes]:
  """Passes `chunks` on, adding each to `checksum`."""
  for chunk in chunks:
    checksum.update(chunk)
    yield chunk


def record(folder: str, shard_name: str, key: str, num_bytes: int, crc32: str,
           rows: Sequence[Sequence], failures: Sequence[DecodeFailure],
           sheet: Sequence[DecodedImage]) -> None:
  """Writes the shard's record (after the shard itself is in place)."""
  data = {
      "key": key, "bytes": num_bytes, "crc32": crc32,
      "rows": [list(row) for row in rows],
      "failures": [list(failure) for failure in failures],
      "sheet": [dict(image._asdict(), encoded="",
                     thumbnail=base64.b64encode(image.thumbnail).decode("ascii"))
                for image in sheet],
  }
  write_file_atomically(FileSystems.join(folder, record_name(shard_name)),
                        [json.dumps(data).encode("utf-8", "surrogatepass")])


def _crc32(path: str) -> str:
  digest = Crc32()
  with FileSystems.open(path) as f:
    while True:
      chunk = f.read(_READ_CHUNK)
      if not chunk:
        return digest.hexdigest()
      digest.update(chunk)


def reuse(folder: str, shard_name: str, key: str
          ) -> Optional[Tuple[List[list], List[DecodeFailure], List[DecodedImage], int]]:
  """(manifest rows as lists, failures, sheet images, bytes) of a complete
  shard of this key already in `folder`, else None."""
  record_path = FileSystems.join(folder, record_name(shard_name))
  shard_path = FileSystems.join(folder, shard_name)
  try:
    if not FileSystems.exists(record_path):
      return None
    with FileSystems.open(record_path) as f:
      data = json.loads(f.read().decode("utf-8", "surrogatepass"))
    if data.get("key") != key:
      _LOGGER.info("Not reusing %s: other work (key %s, now %s)", shard_name,
                   str(data.get("key"))[:12], key[:12])
      return None
    if (not FileSystems.exists(shard_path)
        or fileio.size(shard_path) != data["bytes"]
        or _crc32(shard_path) != data.get("crc32")):
      _LOGGER.warning("Not reusing %s: its size or checksum is not the recorded one; "
                      "writing it again", shard_name)
      return None
    failures = [DecodeFailure(*failure) for failure in data["failures"]]
    sheet = [DecodedImage(**dict(image, encoded=b"",
                                 thumbnail=base64.b64decode(image["thumbnail"])))
             for image in data["sheet"]]
    return data["rows"], failures, sheet, int(data["bytes"])
  except Exception as e:  # noqa: BLE001 - a damaged record: decode the shard again
    _LOGGER.warning("Not reusing %s: its record cannot be read (%s); writing it again",
                    shard_name, e)
    return None
