"""exemplar's shards read without TensorFlow: TFRecord framing and
tf.train.Example.

`read_records(path)` yields the records of one TFRecord file, each checked
against both of its masked CRC32C checksums (`CorruptRecord` at the first
damaged or truncated one). `parse_example` reads a serialized
tf.train.Example with the small protobuf reader below, and `read_example`
gives the fields exemplar stores (`StoredImage`). Files are read through
Beam's FileSystems, so gs:// works.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Dict, Iterator, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from exemplar.transforms import beam_internals


class CorruptRecord(Exception):
  def __init__(self, index: int, offset: int, reason: str):
    super().__init__(f"record {index} at byte {offset}: {reason}")
    self.index, self.offset, self.reason = index, offset, reason


def masked_crc32c(data: bytes) -> int:
  """TFRecord's checksum (crc32c, rotated and offset); Beam picks the fastest crc."""
  return beam_internals.masked_crc32c(data)


def _read_exactly(f, n: int) -> bytes:
  chunks, remaining = [], n
  while remaining:
    chunk = f.read(remaining)
    if not chunk:
      break
    chunks.append(chunk)
    remaining -= len(chunk)
  return b"".join(chunks)


def read_records(path: str, size: Optional[int] = None) -> Iterator[bytes]:
  """The records of one TFRecord file, each checked against both its CRCs.

  Raises CorruptRecord at the first damaged or truncated record (what follows
  cannot be framed reliably).
  """
  with FileSystems.open(path) as f:
    index, offset = 0, 0
    while True:
      header = _read_exactly(f, 12)
      if not header:
        return
      if len(header) < 12:
        raise CorruptRecord(index, offset, "truncated record header")
      length, length_crc = struct.unpack("<QI", header)
      if masked_crc32c(header[:8]) != length_crc:
        raise CorruptRecord(index, offset, "length CRC mismatch (corrupted)")
      if size is not None and offset + 16 + length > size:
        raise CorruptRecord(index, offset, f"truncated: record of {length} bytes "
                            f"runs past the end of the file ({size} bytes)")
      body = _read_exactly(f, length + 4)
      if len(body) < length + 4:
        raise CorruptRecord(index, offset, "truncated record")
      data, (data_crc,) = body[:length], struct.unpack("<I", body[length:])
      if masked_crc32c(data) != data_crc:
        raise CorruptRecord(index, offset, "data CRC mismatch (corrupted)")
      yield data
      index += 1
      offset += 16 + length


def _varint(buffer: bytes, position: int) -> Tuple[int, int]:
  result, shift = 0, 0
  while True:
    if position >= len(buffer) or shift > 63:
      raise ValueError("bad varint")
    byte = buffer[position]
    result |= (byte & 0x7F) << shift
    position += 1
    if not byte & 0x80:
      return result, position
    shift += 7


def _fields(buffer: bytes) -> Iterator[Tuple[int, int, object]]:
  """(field number, wire type, value) of a serialized protobuf message."""
  position = 0
  while position < len(buffer):
    key, position = _varint(buffer, position)
    number, wire = key >> 3, key & 7
    if wire == 0:
      value, position = _varint(buffer, position)
    elif wire == 1:
      value, position = buffer[position:position + 8], position + 8
    elif wire == 2:
      length, position = _varint(buffer, position)
      value, position = buffer[position:position + length], position + length
    elif wire == 5:
      value, position = buffer[position:position + 4], position + 4
    else:
      raise ValueError(f"unsupported wire type {wire}")
    if position > len(buffer):
      raise ValueError("truncated field")
    yield number, wire, value


def _signed64(value: int) -> int:
  return value - (1 << 64) if value >= 1 << 63 else value


def parse_example(data: bytes) -> Dict[str, list]:
  """A serialized tf.train.Example -> {key: [values]} (bytes, int or float).

  Raises ValueError for bytes that are not an Example.
  """
  features: Dict[str, list] = {}
  for number, wire, value in _fields(data):
    if number != 1 or wire != 2:
      continue
    for entry_number, entry_wire, entry in _fields(value):  # map<string, Feature>
      if entry_number != 1 or entry_wire != 2:
        continue
      key, feature = "", b""
      for n, w, v in _fields(entry):
        if n == 1 and w == 2:
          key = v.decode("utf-8")
        elif n == 2 and w == 2:
          feature = v
      features[key] = _feature_values(feature)
  return features


def _feature_values(feature: bytes) -> list:
  values: list = []
  for kind, wire, payload in _fields(feature):
    if wire != 2:
      continue
    for n, w, v in _fields(payload):
      if n != 1:
        continue
      if kind == 1 and w == 2:  # BytesList
        values.append(bytes(v))
      elif kind == 3 and w == 2:  # Int64List, packed
        position = 0
        while position < len(v):
          number, position = _varint(v, position)
          values.append(_signed64(number))
      elif kind == 3 and w == 0:
        values.append(_signed64(v))
      elif kind == 2 and w == 2:  # FloatList, packed
        values.extend(struct.unpack(f"<{len(v) // 4}f", v))
      elif kind == 2 and w == 5:
        values.append(struct.unpack("<f", v)[0])
  return values


def _single(features: Dict[str, list], key: str):
  values = features.get(key)
  if not values or len(values) != 1:
    raise ValueError(f"feature {key!r} missing or not a single value")
  return values[0]


@dataclasses.dataclass(frozen=True)
class StoredImage:
  label: int
  class_name: str
  relative_path: str
  sha256: str
  image: bytes


def read_example(data: bytes) -> StoredImage:
  features = parse_example(data)
  return StoredImage(
      label=int(_single(features, "label")),
      class_name=_single(features, "image/class_name").decode("utf-8"),
      relative_path=_single(features, "image/relative_path").decode("utf-8"),
      sha256=_single(features, "image/sha256").decode("ascii"),
      image=_single(features, "image"))
