#!/usr/bin/env bash
# Sets up everything on a fresh machine, then runs the whole test suite.
#   bash scripts/test.sh [pytest args]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m pytest "$@"
