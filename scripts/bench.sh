#!/usr/bin/env bash
# Sets up everything on a fresh machine, then runs the benchmark (builds its
# trees once under /tmp/exemplar-bench-trees) and writes benchmarks/results.md.
#   bash scripts/bench.sh [--quick]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python benchmarks/run.py "$@"
