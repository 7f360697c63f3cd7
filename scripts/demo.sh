#!/usr/bin/env bash
# Sets up everything on a fresh machine, then runs exemplar on its embedded demo
# tree (one image per class) into ./exemplar_output, and refreshes the README's
# contact sheet (docs/contact_sheet.png) from that run so it stays true.
#   bash scripts/demo.sh [exemplar flags]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exemplar --output_dir exemplar_output --overwrite "$@"
if [ -f exemplar_output/contact_sheet.png ]; then
  cp exemplar_output/contact_sheet.png docs/contact_sheet.png
fi
ls -l exemplar_output
