"""The floor: a raw os.scandir walk of a <class>/<files> tree, counting files.

    python benchmarks/baselines/scandir_walk.py ROOT

No filtering, hashing or sampling: the least any listing of the tree can cost.
"""

import os
import sys
import time


def walk(root: str) -> int:
  count = 0
  stack = [root]
  while stack:
    with os.scandir(stack.pop()) as entries:
      for entry in entries:
        if entry.is_dir(follow_symlinks=False):
          stack.append(entry.path)
        else:
          count += 1
  return count


if __name__ == "__main__":
  started = time.perf_counter()
  files = walk(sys.argv[1])
  print(f"STAGE files={files} seconds={time.perf_counter() - started:.3f}")
