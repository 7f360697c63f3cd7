"""Roots and class names holding glob characters on an object store that is
neither local disk nor gs:// (S3, HDFS, Azure: Beam lists them by prefix and
filters with FileSystems.match's patterns). A store of that kind is made
here over a local folder, so the listing code runs as it would on S3."""

import os
import warnings

from apache_beam.io.filesystem import FileMetadata, FileSystem

from exemplar.transforms import fileio, fingerprint, listing

SCHEME = "exemplarflat"


class FlatStore(FileSystem):
  """Local files seen as a flat object store: no folders, prefix listings;
  read-only. (Beam picks a file system by scheme among FileSystem's
  subclasses.)"""

  @classmethod
  def scheme(cls):
    return SCHEME

  def has_dirs(self):
    return False

  def join(self, base, *paths):
    return "/".join([base.rstrip("/"), *paths])

  def split(self, path):
    head, _, tail = path.rpartition("/")
    return head, tail

  def exists(self, path):
    return os.path.exists(path[len(SCHEME) + 3:])

  def _read_only(self, *args, **kwargs):
    raise NotImplementedError("a read-only test store")

  mkdirs = create = open = copy = rename = delete = _read_only
  size = last_updated = metadata = _read_only

  def _list(self, prefix):
    local = prefix[len(SCHEME) + 3:]
    top = local if local.endswith("/") else os.path.dirname(local)
    for folder, _, files in os.walk(top):
      for name in files:
        path = os.path.join(folder, name)
        if path.startswith(local):
          yield FileMetadata(f"{SCHEME}://{path}", os.path.getsize(path), 0)


def _touch(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(b"x")


def test_glob_characters_in_a_root_or_a_class_name_match_only_themselves(tmp_path):
  # What the patterns 'data[1]' and 'a[b]' would match instead: 'data1', 'ab'.
  for relative in ("data[1]/a[b]/x.jpg", "data[1]/a[b]/sub/y.png", "data[1]/ab/z.jpg",
                   "data1/ab/w.jpg", "data1/other/v.jpg", "data[1]/*/u.jpg"):
    _touch(str(tmp_path / relative))
  root = f"{SCHEME}://{tmp_path}/data[1]"

  with warnings.catch_warnings():
    # Beam's pattern translation of an escaped '[' once gave re a '[[' to
    # warn about ("Possible nested set").
    warnings.simplefilter("error", FutureWarning)
    assert listing.list_class_folders(root) == ["*", "a[b]", "ab"]
  assert sorted(listing.walk_class_folder(root, "a[b]")) == ["a[b]/sub/y.png", "a[b]/x.jpg"]
  assert sorted(listing.walk_class_folder(root, "*")) == ["*/u.jpg"]
  assert sorted(e[0] for e in fingerprint.class_entries(root, "a[b]")) == [
      "a[b]/sub/y.png", "a[b]/x.jpg"]
  assert fileio.files_under(f"{root}/ab") == [f"{root}/ab/z.jpg"]
