"""`exemplar-inspect OUTPUT_DIR`: describe a written dataset (see issue 6)."""

import sys


def main(argv=None) -> int:
  print("exemplar-inspect: not built yet", file=sys.stderr)
  return 2
