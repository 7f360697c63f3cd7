"""examples/: the orchestrator examples parse, use only flags exemplar knows,
and handle its exit codes as they say.

Neither Airflow nor (unless installed) kfp is a test dependency: the DAG is
checked through its AST and by running its bash command, which holds all of
its exemplar logic; the KFP pipeline is compiled only when kfp is importable.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Set

import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions

from exemplar.options import build_parser
from tests.conftest import make_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
DAG = os.path.join(EXAMPLES, "airflow", "exemplar_dag.py")
CRON = os.path.join(EXAMPLES, "cron", "exemplar-nightly.sh")
KFP = os.path.join(EXAMPLES, "kfp", "exemplar_component.py")
PYTHON_EXAMPLES = [DAG, KFP]
SHELL_EXAMPLES = [CRON]
BIN = os.path.dirname(sys.executable)

# The flags the scheduling contract adds (README, "Running on a schedule").
CONTRACT_FLAGS = {"--skip_if_unchanged", "--result_file", "--fail_on_short", "--compare_to"}
# What every example's exemplar command must pass.
SCHEDULE_FLAGS = {"--input_dir", "--output_dir", "--skip_if_unchanged", "--overwrite",
                  "--result_file", "--fail_on_short"}
LONG_FLAG = re.compile(r"(?<![\w-])--[A-Za-z][A-Za-z0-9_]*")


def read(path: str) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


def known_flags() -> Set[str]:
  exemplar_flags = {s for a in build_parser()._actions for s in a.option_strings}
  beam_flags = {f"--{name}" for name in PipelineOptions([]).get_all_options()}
  return exemplar_flags | CONTRACT_FLAGS | beam_flags


def module_string(path: str, name: str) -> str:
  """The value of a module-level `NAME = "..."` in a Python file."""
  for node in ast.parse(read(path)).body:
    if (isinstance(node, ast.Assign) and len(node.targets) == 1
        and getattr(node.targets[0], "id", None) == name):
      return ast.literal_eval(node.value)
  raise AssertionError(f"{name} not found in {path}")


def fake_exemplar(tmp_path, exit_code: int, status: str, classes_short=()) -> str:
  """An `exemplar` that writes --result_file as the real one does and exits
  with `exit_code` (a refusal before parsing writes no result file)."""
  result = {"status": status, "exit_code": exit_code, "output_dir": "/out",
            "skipped": status == "skipped", "input_fingerprint": "i",
            "config_fingerprint": "c", "dataset_fingerprint": "d", "num_examples": 8,
            "per_split": {"train": 8}, "classes_short": list(classes_short),
            "num_failed": 0, "started": "2026-01-01T00:00:00Z",
            "finished": "2026-01-01T00:00:01Z", "duration_sec": 1.0,
            "versions": {"exemplar": "0", "apache-beam": "2.77.0"}}
  folder = tmp_path / f"fake-{exit_code}-{status}"
  folder.mkdir()
  path = folder / "exemplar"
  path.write_text(
      "#!/usr/bin/env bash\n"
      f'echo "$@" > {folder}/argv\n'
      "while [ $# -gt 0 ]; do\n"
      '  if [ "$1" = --result_file ]; then\n'
      f"    cat > \"$2\" <<'JSON'\n{json.dumps(result)}\nJSON\n"
      "  fi\n"
      "  shift\n"
      "done\n"
      f"echo 'exemplar: error: fake exit {exit_code}' >&2\n"
      f"exit {exit_code}\n", encoding="utf-8")
  path.chmod(0o755)
  return str(path)


# ---- every example parses -------------------------------------------------


@pytest.mark.parametrize("path", PYTHON_EXAMPLES, ids=os.path.basename)
def test_python_example_compiles(path):
  compile(read(path), path, "exec")


@pytest.mark.parametrize("path", SHELL_EXAMPLES, ids=os.path.basename)
def test_shell_example_parses(path):
  assert os.access(path, os.X_OK), f"{path} is not executable"
  subprocess.run(["bash", "-n", path], check=True)


def test_embedded_shell_scripts_parse():
  # The DAG's bash command and the KFP step's `sh -c` script.
  for path, name, shell in [(DAG, "EXEMPLAR_COMMAND", "bash"), (KFP, "_RUN", "sh")]:
    subprocess.run([shell, "-n"], input=module_string(path, name), text=True, check=True)


def test_examples_readme_names_every_example():
  text = read(os.path.join(EXAMPLES, "README.md"))
  for path in PYTHON_EXAMPLES + SHELL_EXAMPLES:
    assert os.path.relpath(path, EXAMPLES) in text


# ---- flags ------------------------------------------------------------------


@pytest.mark.parametrize("path", PYTHON_EXAMPLES + SHELL_EXAMPLES, ids=os.path.basename)
def test_examples_use_only_known_flags(path):
  # Every --flag in the file, comments and docstrings included: those are
  # instructions people copy.
  used = set(LONG_FLAG.findall(read(path)))
  unknown = used - known_flags()
  assert not unknown, f"{os.path.basename(path)} uses flags exemplar does not know: {unknown}"
  missing = SCHEDULE_FLAGS - used
  assert not missing, f"{os.path.basename(path)} does not pass {missing}"


def test_known_flags_cover_the_beam_flags_the_examples_name():
  assert {"--runner", "--project", "--region", "--temp_location", "--job_name",
          "--setup_file", "--sdk_container_image"} <= known_flags()


# ---- the Airflow DAG, through its AST -----------------------------------------


def calls(tree: ast.AST, name: str) -> List[ast.Call]:
  return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
          and (getattr(n.func, "id", None) == name or getattr(n.func, "attr", None) == name)]


def keywords(call: ast.Call) -> Dict[str, ast.AST]:
  return {k.arg: k.value for k in call.keywords}


def test_dag_structure():
  tree = ast.parse(read(DAG))
  imports = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
             for a in n.names}
  assert ("airflow", "DAG") in imports
  assert ("airflow.operators.bash", "BashOperator") in imports

  [dag] = calls(tree, "DAG")
  kw = keywords(dag)
  assert ast.literal_eval(kw["dag_id"]) == "exemplar_daily"
  assert ast.literal_eval(kw["schedule"]) == "@daily"
  assert ast.literal_eval(kw["catchup"]) is False
  assert ast.literal_eval(kw["max_active_runs"]) == 1
  params = {ast.literal_eval(k) for k in kw["params"].keys}
  assert {"input_dir", "output_dir", "samples_per_class", "seed", "beam_args",
          "fail_on_short"} <= params

  [bash] = calls(tree, "BashOperator")
  bash_kw = keywords(bash)
  assert ast.literal_eval(bash_kw["task_id"]) == "run_exemplar"
  assert getattr(bash_kw["bash_command"], "id", None) == "EXEMPLAR_COMMAND"
  assert ast.literal_eval(bash_kw["do_xcom_push"]) is True
  env = {ast.literal_eval(k) for k in bash_kw["env"].keys}
  assert {"EXEMPLAR_BIN", "INPUT_DIR", "OUTPUT_DIR", "BEAM_ARGS"} <= env

  tasks = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
  assert {"read_result", "check_short"} <= tasks
  empties = {ast.literal_eval(keywords(c)["task_id"]) for c in calls(tree, "EmptyOperator")}
  assert empties == {"published", "short_classes"}
  # The branch returns task ids that exist.
  [branch] = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
              and n.name == "check_short"]
  returned = {c.value for c in ast.walk(branch) if isinstance(c, ast.Constant)
              and isinstance(c.value, str)}
  assert returned <= empties | {None} and returned
  # Its dependencies: branch >> [published, short_classes].
  shifts = [n for n in ast.walk(tree) if isinstance(n, ast.BinOp)
            and isinstance(n.op, ast.RShift)]
  assert any(getattr(s.left, "id", None) == "branch"
             and {e.id for e in s.right.elts} == {"published", "short_classes"}
             for s in shifts)


def run_dag_command(tmp_path, exemplar_bin: str, **env) -> subprocess.CompletedProcess:
  # As BashOperator runs it: `bash -c COMMAND` with the rendered env added.
  full_env = dict(os.environ, EXEMPLAR_BIN=exemplar_bin, INPUT_DIR=str(tmp_path / "in"),
                  OUTPUT_DIR=str(tmp_path / "out"), SAMPLES_PER_CLASS="1", SEED="0",
                  BEAM_ARGS="")
  full_env.update(env)
  return subprocess.run(["bash", "-c", module_string(DAG, "EXEMPLAR_COMMAND")],
                        env=full_env, capture_output=True, text=True)


@pytest.mark.parametrize("code, status, task_code", [
    (0, "done", 0), (0, "skipped", 0), (3, "short", 0), (1, "failed", 1), (2, "refused", 2)])
def test_dag_command_exit_codes(tmp_path, code, status, task_code):
  fake = fake_exemplar(tmp_path, code, status, ["cat"] if code == 3 else [])
  done = run_dag_command(tmp_path, fake)
  assert done.returncode == task_code, done.stderr
  if task_code == 0:
    # The XCom: the last stdout line is the whole result JSON.
    assert json.loads(done.stdout.strip().splitlines()[-1])["status"] == status
  argv = open(os.path.join(os.path.dirname(fake), "argv")).read().split()
  assert SCHEDULE_FLAGS <= set(argv)


def test_dag_command_passes_beam_args_as_separate_flags(tmp_path):
  fake = fake_exemplar(tmp_path, 0, "done")
  done = run_dag_command(tmp_path, fake, BEAM_ARGS="--runner DataflowRunner --region r")
  assert done.returncode == 0, done.stderr
  argv = open(os.path.join(os.path.dirname(fake), "argv")).read().split()
  assert argv[-4:] == ["--runner", "DataflowRunner", "--region", "r"]


@pytest.mark.slow
def test_dag_command_with_the_real_cli(tmp_path):
  """done, then skipped (nothing written), with the real exemplar."""
  make_tree(str(tmp_path / "in"), {"a": 2, "b": 2})
  exemplar_bin = os.path.join(BIN, "exemplar")
  first = run_dag_command(tmp_path, exemplar_bin)
  assert first.returncode == 0, first.stderr
  result = json.loads(first.stdout.strip().splitlines()[-1])
  assert (result["status"], result["num_examples"], result["exit_code"]) == ("done", 2, 0)
  second = run_dag_command(tmp_path, exemplar_bin)
  assert second.returncode == 0, second.stderr
  again = json.loads(second.stdout.strip().splitlines()[-1])
  assert again["status"] == "skipped" and again["skipped"] is True
  assert again["dataset_fingerprint"] == result["dataset_fingerprint"]


# ---- the cron script ----------------------------------------------------------


def run_cron(tmp_path, exemplar_bin: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, EXEMPLAR_BIN=exemplar_bin, EXEMPLAR_INPUT_DIR=str(tmp_path / "in"),
             EXEMPLAR_OUTPUT_DIR=str(tmp_path / "out"),
             EXEMPLAR_STATE_DIR=str(tmp_path / "state"), EXEMPLAR_ARGS="--seed 7")
  return subprocess.run([CRON], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("code, status, classes_short, alerted", [
    (0, "done", [], False), (0, "skipped", ["cat"], True), (3, "short", ["cat"], True),
    (1, "failed", [], True), (2, "refused", [], True)])
def test_cron_script_exit_codes(tmp_path, code, status, classes_short, alerted):
  done = run_cron(tmp_path, fake_exemplar(tmp_path, code, status, classes_short))
  assert done.returncode == code
  assert bool(done.stderr) == alerted, done.stderr   # cron mails stderr
  # One log line: the result's fields, or for a failure exemplar's error line.
  assert (f"status={status}" if code in (0, 3) else f"(exit {code}): exemplar: error") \
      in done.stdout
  assert json.load(open(tmp_path / "state" / "latest.json"))["status"] == status


def test_cron_script_skips_a_night_while_the_last_one_runs(tmp_path):
  (tmp_path / "state").mkdir()
  lock = tmp_path / "state" / "nightly.lock"
  with open(lock, "w") as held:
    import fcntl
    fcntl.flock(held, fcntl.LOCK_EX)
    done = run_cron(tmp_path, fake_exemplar(tmp_path, 1, "failed"))
  assert done.returncode == 0 and "skipping tonight" in done.stdout
  assert not os.path.exists(tmp_path / "state" / "latest.json")


# ---- the KFP pipeline (needs kfp) ---------------------------------------------


@pytest.mark.parametrize("code, fail_on_short, step_code", [
    (0, "false", 0), (3, "false", 0), (3, "true", 3), (1, "false", 1), (2, "true", 2)])
def test_kfp_step_exit_codes(tmp_path, code, fail_on_short, step_code):
  fake = fake_exemplar(tmp_path, code, "x")
  env = dict(os.environ, PATH=os.path.dirname(fake) + os.pathsep + os.environ["PATH"])
  done = subprocess.run(["sh", "-c", module_string(KFP, "_RUN"), fail_on_short,
                         "--result_file", str(tmp_path / "r.json")],
                        env=env, capture_output=True, text=True)
  assert done.returncode == step_code, done.stderr


@pytest.mark.slow
def test_kfp_pipeline_compiles_and_its_command_runs(tmp_path):
  """Compiles the pipeline to YAML, then runs the exemplar step's compiled
  command line, as the KFP launcher would, with the real exemplar."""
  pytest.importorskip("kfp", minversion="2")
  from kfp import compiler
  spec = importlib.util.spec_from_file_location("exemplar_kfp_example", KFP)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  package = tmp_path / "pipeline.yaml"
  compiler.Compiler().compile(module.exemplar_pipeline, package_path=str(package))
  compiled = yaml.safe_load(package.read_text())

  container = compiled["deploymentSpec"]["executors"]["exec-exemplar"]["container"]
  assert container["image"] == module.EXEMPLAR_IMAGE
  assert container["command"][:2] == ["sh", "-c"]
  assert container["command"][2] == module._RUN
  args = container["args"]
  flags = {a for a in args if a.startswith("--")}
  assert SCHEDULE_FLAGS <= flags and flags <= known_flags()
  assert args[args.index("--result_file") + 1] == \
      "{{$.outputs.parameters['result'].output_file}}"
  tasks = compiled["root"]["dag"]["tasks"]
  assert set(tasks) == {"exemplar", "read-result"}
  assert tasks["read-result"]["inputs"]["parameters"]["result"]["taskOutputParameter"] == \
      {"outputParameterKey": "result", "producerTask": "exemplar"}
  assert not tasks["exemplar"]["cachingOptions"].get("enableCache")

  # The launcher's substitutions; the in-process runner instead of Dataflow.
  make_tree(str(tmp_path / "in"), {"a": 2, "b": 2})
  result_path = tmp_path / "outputs" / "result"
  values = {"input_dir": str(tmp_path / "in"), "output_dir": str(tmp_path / "out"),
            "samples_per_class": "1", "seed": "0", "fail_on_short": "false",
            "runner": "DirectRunner", "project": "p", "region": "r",
            "temp_location": str(tmp_path / "tmp")}

  def substitute(arg: str) -> str:
    arg = arg.replace("{{$.outputs.parameters['result'].output_file}}", str(result_path))
    return re.sub(r"\{\{\$\.inputs\.parameters\['(\w+)'\]\}\}",
                  lambda m: values[m.group(1)], arg)

  argv = [substitute(a) for a in container["command"] + args]
  env = dict(os.environ, PATH=BIN + os.pathsep + os.environ["PATH"])
  for status in ("done", "skipped"):
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(result_path.read_text())
    assert result["status"] == status and result["num_examples"] == 2

  # read_result, on that JSON (the launcher passes the output parameter's text).
  read_result = module.read_result.python_func
  assert tuple(read_result(result_path.read_text())) == ("skipped", 2, [])
  short = json.dumps(dict(result, classes_short=["a"]))
  assert read_result(short).classes_short == ["a"]
  with pytest.raises(RuntimeError, match="short"):
    read_result(short, fail_on_short=True)


# ---- README ---------------------------------------------------------------------


def test_readme_schedule_section():
  text = read(os.path.join(ROOT, "README.md")).split("## Running on a schedule", 1)[1]
  text = text.split("\n## ", 1)[0]
  example = json.loads(re.search(r"```json\n(.*?)```", text, re.S).group(1))
  assert set(example) == {
      "status", "exit_code", "output_dir", "skipped", "input_fingerprint",
      "config_fingerprint", "dataset_fingerprint", "num_examples", "per_split",
      "classes_short", "num_failed", "started", "finished", "duration_sec", "versions"}
  for code in "0123":
    assert f"\n| {code} |" in text
  for path in PYTHON_EXAMPLES + SHELL_EXAMPLES:
    assert os.path.relpath(path, EXAMPLES) in text
