"""transforms/fileio.absolute: the folder a local path names, as the OS
resolves it (the output, input and list paths all go through it)."""

import os

from exemplar.transforms import fileio


def test_dot_dot_after_a_link_is_the_link_targets_sibling(tmp_path, monkeypatch):
  (tmp_path / "real" / "sub").mkdir(parents=True)
  (tmp_path / "a").mkdir()
  os.symlink(tmp_path / "real" / "sub", tmp_path / "a" / "link")
  monkeypatch.chdir(tmp_path / "a")
  # What `ls link/../out` and open() reach: real/out, not a/out.
  assert fileio.absolute("link/../out") == str(tmp_path / "real" / "out")
  assert fileio.absolute("link/../out/") == str(tmp_path / "real" / "out")
  assert fileio.absolute("./link/../x/./y") == str(tmp_path / "real" / "x" / "y")
  (tmp_path / "real" / "out").mkdir()
  assert os.path.samefile(fileio.absolute("link/../out"), "link/../out")


def test_links_without_dot_dot_are_kept_as_written(tmp_path, monkeypatch):
  (tmp_path / "real").mkdir()
  os.symlink(tmp_path / "real", tmp_path / "link")
  monkeypatch.chdir(tmp_path)
  assert fileio.absolute("link/out/") == str(tmp_path / "link" / "out")
  assert fileio.absolute("link//./out") == str(tmp_path / "link" / "out")
  assert fileio.absolute("gs://bucket/x/") == "gs://bucket/x"
  assert fileio.absolute("/") == "/"
