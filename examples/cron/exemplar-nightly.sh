#!/usr/bin/env bash
# A nightly exemplar run for cron. Crontab line (02:15 every night; cron mails
# what the script prints to stderr, its one-line summaries go to the log):
#
#   15 2 * * *  EXEMPLAR_INPUT_DIR=gs://MY_BUCKET/images EXEMPLAR_OUTPUT_DIR=gs://MY_BUCKET/exemplar/nightly /opt/exemplar/examples/cron/exemplar-nightly.sh >>/var/log/exemplar/nightly.log
#
# What a night does:
#   - unchanged tree and options: exemplar exits 0 at once (--skip_if_unchanged),
#     writing nothing;
#   - changed: a new dataset replaces the old one atomically (--overwrite);
#     changes.csv in the output folder lists the images added, removed, moved;
#   - every run leaves its JSON result (--result_file) and its full log in
#     $EXEMPLAR_STATE_DIR, and latest.json pointing at the newest result.
#
# Exit codes are exemplar's: 0 done or skipped, 1 the job failed, 2 refused
# (bad flag, or another run holds the output folder's lock), 3 a short or
# empty class (--fail_on_short). A night that starts while the previous one
# still runs is skipped by flock before it lists anything.
#
# Settings (environment variables; the defaults are placeholders):
#   EXEMPLAR_INPUT_DIR, EXEMPLAR_OUTPUT_DIR   local paths or gs:// URIs
#   EXEMPLAR_ARGS     more flags, e.g. "--samples_per_class 5 --seed 7" or
#                     "--config configs/dataflow.yaml --project P --region R"
#   EXEMPLAR_BIN      the exemplar command (default: exemplar on PATH, e.g. a venv's)
#   EXEMPLAR_STATE_DIR  results, logs and the lock file (default ~/.local/state/exemplar)
set -uo pipefail

INPUT_DIR="${EXEMPLAR_INPUT_DIR:-gs://MY_BUCKET/images}"
OUTPUT_DIR="${EXEMPLAR_OUTPUT_DIR:-gs://MY_BUCKET/exemplar/nightly}"
EXTRA_ARGS="${EXEMPLAR_ARGS:-}"
EXEMPLAR_BIN="${EXEMPLAR_BIN:-exemplar}"
STATE_DIR="${EXEMPLAR_STATE_DIR:-$HOME/.local/state/exemplar}"
KEEP_DAYS=30

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
result_file="$STATE_DIR/result-$stamp.json"
run_log="$STATE_DIR/exemplar-$stamp.log"
mkdir -p "$STATE_DIR" || exit 1

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) exemplar-nightly: $*"; }
alert() { log "$*"; echo "exemplar-nightly: $* (log: $run_log)" >&2; }

# One night at a time. exemplar's own lock on the output folder would refuse
# a second run too (exit 2), but only after that run has listed the tree.
exec 9>"$STATE_DIR/nightly.lock"
if ! flock -n 9; then
  log "the previous run still holds $STATE_DIR/nightly.lock; skipping tonight"
  exit 0
fi

log "start: $INPUT_DIR -> $OUTPUT_DIR"
# $EXTRA_ARGS is unquoted on purpose: it holds several flags.
# shellcheck disable=SC2086
"$EXEMPLAR_BIN" \
  --input_dir "$INPUT_DIR" \
  --output_dir "$OUTPUT_DIR" \
  --skip_if_unchanged \
  --overwrite \
  --fail_on_short \
  --result_file "$result_file" \
  $EXTRA_ARGS \
  >"$run_log" 2>&1
rc=$?

# One line from the result JSON (absent when exemplar stopped before writing it).
summary="no result file" short=0
if [ -s "$result_file" ]; then
  ln -sfn "$result_file" "$STATE_DIR/latest.json"
  summary="$(python3 - "$result_file" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"short={len(r.get('classes_short') or [])} status={r['status']} "
      f"examples={r.get('num_examples')} per_split={r.get('per_split')} "
      f"failed={r.get('num_failed')} duration={r.get('duration_sec')}s "
      f"dataset={r.get('dataset_fingerprint')}")
PY
)"
  short="${summary#short=}" && short="${short%% *}"
fi

case "$rc" in
  # A skipped night keeps the dataset as it was: one with short classes is
  # still reported (it exits 0, as the night it was written exited 3).
  0) if [ "$short" != 0 ]; then alert "ok, but the dataset has $short short class(es): $summary"
     else log "ok: $summary"; fi ;;
  3) alert "done, but with short or empty classes (exit 3): $summary" ;;
  2) alert "refused (exit 2): $(tail -n 1 "$run_log")" ;;
  1) alert "the job failed (exit 1): $(grep -m 1 'exemplar: error' "$run_log")" ;;
  *) alert "exemplar ended with exit code $rc: $(tail -n 1 "$run_log")" ;;
esac

# Old results and logs go after KEEP_DAYS days.
find "$STATE_DIR" -maxdepth 1 -type f \( -name 'result-*.json' -o -name 'exemplar-*.log' \) \
  -mtime +"$KEEP_DAYS" -delete
exit "$rc"
