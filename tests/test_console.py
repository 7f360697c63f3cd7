"""What a person sees: quiet stderr by default, progress bars on a terminal
(a real pseudo-terminal with a window size), everything with --verbose."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from typing import List, Tuple

import pytest

from tests.conftest import make_tree

pytestmark = pytest.mark.slow  # real CLI runs in subprocesses

EXEMPLAR = os.path.join(os.path.dirname(sys.executable), "exemplar")
NOISE = re.compile(r"oneDNN|cuda|cuInit|absl::InitializeLog|JPEG data|"
                   r"JPEG library|retracing|^[IWE]\d{4} ", re.MULTILINE)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> str:
  """Three classes, with a truncated JPEG in each (libjpeg complains)."""
  root = str(tmp_path_factory.mktemp("console") / "images")
  make_tree(root, {"ant": 4, "bee": 4, "cat": 4}, size=(24, 24))
  for name in ("ant", "bee", "cat"):
    path = os.path.join(root, name, "img_000.jpg")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
  return root


def run_on_pty(argv: List[str], columns: int = 120) -> Tuple[int, str]:
  """Runs exemplar with stdout and stderr on a pseudo-terminal."""
  master, slave = os.openpty()
  fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
  proc = subprocess.Popen([EXEMPLAR, *argv], stdin=subprocess.DEVNULL, stdout=slave,
                          stderr=slave, close_fds=True)
  os.close(slave)
  out = b""
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline:
    ready, _, _ = select.select([master], [], [], 0.2)
    if ready:
      try:
        data = os.read(master, 65536)
      except OSError:  # the terminal closed: the process is done
        break
      if not data:
        break
      out += data
    elif proc.poll() is not None:
      break
  proc.wait(timeout=60)
  os.close(master)
  return proc.returncode, out.decode("utf-8", "replace")


def test_a_terminal_gets_bars_with_totals_and_no_noise(tree, tmp_path):
  code, text = run_on_pty(["--input_dir", tree, "--output_dir", str(tmp_path / "out"),
                           "--samples_per_class", "all", "--image_size", "16", "16"])
  assert code == 0, text
  assert NOISE.search(text) is None, text
  screens = text.replace("\r", "\n")
  assert re.search(r"classes listed: 100%\|.*\| 3/3", screens), screens
  assert re.search(r"images decoded: *\d+%\|.*\| 9/12", screens), screens  # 3 broken
  assert re.search(r"shards written: 100%\|.*\| 1/1", screens), screens
  # The bars end before the report starts.
  assert screens.rindex("shards written") < screens.index("exemplar: 9 images")


def test_a_log_gets_only_exemplars_lines(tree, tmp_path):
  out = str(tmp_path / "out")
  proc = subprocess.run([EXEMPLAR, "--input_dir", tree, "--output_dir", out,
                         "--samples_per_class", "all", "--image_size", "16", "16"],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stderr.splitlines()
  assert lines and all(" INFO exemplar" in line for line in lines), proc.stderr
  assert "\r" not in proc.stderr  # no bars in a log
  errors = open(os.path.join(out, "errors.csv")).read()
  assert errors.count("cannot decode") == 3  # what libjpeg said is recorded here


def test_verbose_shows_everything(tree, tmp_path):
  proc = subprocess.run([EXEMPLAR, "--input_dir", tree, "--output_dir", str(tmp_path / "o"),
                         "--samples_per_class", "all", "--image_size", "16", "16",
                         "--verbose"], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert "JPEG" in proc.stderr  # libjpeg's own words
