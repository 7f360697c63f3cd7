#!/usr/bin/env bash
# Sets up everything on a fresh machine, then runs exemplar on its embedded demo
# tree (one image per class) into ./exemplar_output.
#   bash scripts/demo.sh [exemplar flags]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec exemplar --output_dir exemplar_output --overwrite "$@"
