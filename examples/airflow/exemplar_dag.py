"""A daily exemplar run as an Airflow 2.x DAG.

    run_exemplar -> read_result -> check_short -> published | short_classes

`run_exemplar` runs the exemplar command on the Airflow worker, which must
have exemplar installed (in its environment, or in a virtualenv whose
`exemplar` the `exemplar_bin` param names). With `--runner DataflowRunner`
(the `beam_args` param) the worker only launches the job and waits for it;
Dataflow's workers read and write the images.

Every run is idempotent: `--skip_if_unchanged` exits 0 at once when the
output already holds a finished dataset of the same files and options, and a
changed tree replaces the dataset atomically (`--overwrite`; readers see the
old dataset or the new one, never a mix). Exit codes: 0 done or skipped;
1 the job failed; 2 refused (a bad flag, or another run holds the output
folder's lock); 3 finished, with a short or empty class (`--fail_on_short`).

Settings: the DAG params below, overridden per run by "Trigger DAG w/
config"; an empty input_dir / output_dir falls back to the Airflow Variables
`exemplar_input_dir` / `exemplar_output_dir`.
"""

from __future__ import annotations

import json

import pendulum

from airflow import DAG
from airflow.decorators import task
from airflow.exceptions import AirflowFailException
from airflow.models.param import Param
from airflow.operators.bash import BashOperator
from airflow.operators.empty import EmptyOperator

# Exit 0 and 3 succeed here (read_result decides what a short class means);
# 1 and 2 fail the task, and Airflow retries it. $BEAM_ARGS is unquoted on
# purpose: it holds several flags.
EXEMPLAR_COMMAND = r"""
set -u
result_file="$(mktemp)"
"$EXEMPLAR_BIN" \
  --input_dir "$INPUT_DIR" \
  --output_dir "$OUTPUT_DIR" \
  --samples_per_class "$SAMPLES_PER_CLASS" \
  --seed "$SEED" \
  --skip_if_unchanged \
  --overwrite \
  --fail_on_short \
  --result_file "$result_file" \
  $BEAM_ARGS
rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
  echo "exemplar failed with exit code $rc; its result:" >&2
  cat "$result_file" >&2
  exit "$rc"
fi
# The last line of stdout becomes this task's XCom: the result JSON, one line.
python3 -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$result_file"
rm -f "$result_file"
"""

with DAG(
    dag_id="exemplar_daily",
    description="Re-sample an image tree into TFRecords when it has changed",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,        # a run samples the tree as it is now: no backfill
    max_active_runs=1,    # exemplar's lock would refuse a second run (exit 2)
    default_args={"retries": 1, "retry_delay": pendulum.duration(minutes=10)},
    params={
        "input_dir": Param("", type="string"),    # "": Variable exemplar_input_dir
        "output_dir": Param("", type="string"),   # "": Variable exemplar_output_dir
        "samples_per_class": Param("1", type="string"),  # k, "all" or "10%"
        "seed": Param(0, type="integer"),
        # Beam flags, e.g. "--runner DataflowRunner --project P --region
        # us-central1 --temp_location gs://MY_BUCKET/tmp --setup_file ./setup.py"
        "beam_args": Param("", type="string"),
        "exemplar_bin": Param("exemplar", type="string"),
        # True: a short or empty class fails the run (no retry); False: the
        # dataset is published and the short_classes branch runs.
        "fail_on_short": Param(False, type="boolean"),
    },
    tags=["exemplar"],
) as dag:

  run_exemplar = BashOperator(
      task_id="run_exemplar",
      bash_command=EXEMPLAR_COMMAND,
      # Values reach bash as environment variables, never pasted into the
      # script, so paths with spaces or quotes are safe.
      env={
          "EXEMPLAR_BIN": "{{ params.exemplar_bin }}",
          "INPUT_DIR": "{{ params.input_dir or var.value.get('exemplar_input_dir', "
                       "'gs://MY_BUCKET/images') }}",
          "OUTPUT_DIR": "{{ params.output_dir or var.value.get('exemplar_output_dir', "
                        "'gs://MY_BUCKET/exemplar/daily') }}",
          "SAMPLES_PER_CLASS": "{{ params.samples_per_class }}",
          "SEED": "{{ params.seed }}",
          "BEAM_ARGS": "{{ params.beam_args }}",
      },
      append_env=True,    # keep PATH, credentials, ...
      do_xcom_push=True,  # the command's last line: the result JSON
  )

  @task(multiple_outputs=True)
  def read_result(result_line: str, params=None) -> dict:
    """The --result_file's JSON; each key returned is an XCom of its own."""
    result = json.loads(result_line)
    short = result.get("classes_short") or []
    print(f"exemplar {result['status']}: {result['num_examples']} examples in "
          f"{result['output_dir']} ({result['duration_sec']} s); short: {short}")
    # Checked here, not on exit 3 alone: a retry (or tomorrow's run) of an
    # unchanged short dataset is "skipped" with exit 0, and must fail too.
    if short and params["fail_on_short"]:
      raise AirflowFailException(f"short or empty classes: {', '.join(short[:10])}")
    return {
        "status": result["status"],          # done | skipped | short
        "num_examples": result["num_examples"],
        "per_split": result["per_split"],
        "classes_short": short,
        "dataset_fingerprint": result["dataset_fingerprint"],
    }

  @task.branch
  def check_short(classes_short: list) -> str:
    return "short_classes" if classes_short else "published"

  result = read_result(run_exemplar.output)
  branch = check_short(result["classes_short"])

  # Stand-ins for what your team does next: an e-mail or Slack operator for
  # short classes; a TriggerDagRunOperator for training when status is "done".
  published = EmptyOperator(task_id="published")
  short_classes = EmptyOperator(task_id="short_classes")
  branch >> [published, short_classes]
