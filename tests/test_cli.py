"""pipeline/options.py and the `exemplar` entry point, without running a job."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import List, Sequence

import pytest
from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions,
                                                  StandardOptions)

from exemplar.options import UsageError, parse_args

EXEMPLAR = os.path.join(os.path.dirname(sys.executable), "exemplar")


def write_config(tmp_path, text: str, name: str = "config.yaml") -> str:
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return str(path)


def beam_view(beam_args: Sequence[str]) -> PipelineOptions:
  return PipelineOptions(list(beam_args))


def test_defaults():
  config, beam_args = parse_args([])
  assert config.samples_per_class == 1 and not config.sample_all
  assert config.seed == 0
  assert (config.image.height, config.image.width) == (256, 256)
  assert config.image.interpolation == "bilinear"
  assert config.image.color_mode == "rgb" and config.image.channels == 3
  assert config.image.image_format == "png"
  assert config.image.crop_to_aspect_ratio is False
  assert config.input_dir is None and config.output_dir == "exemplar_output"
  assert config.class_names is None and config.num_shards is None
  assert config.spares == 4
  # The shipped config names the in-process runner, never Prism.
  assert beam_view(beam_args).view_as(StandardOptions).runner == "local"


def test_flags_set_every_value():
  config, _ = parse_args([
      "--input_dir", "/data/x", "--output_dir", "/tmp/o", "--samples_per_class", "ALL",
      "--seed", "-12", "--image_size", "32", "48", "--interpolation", "Nearest",
      "--crop_to_aspect_ratio", "--color_mode", "grayscale", "--image_format", "jpg",
      "--class_names", " b , a ", "--num_shards", "3", "--spares", "0"])
  assert config.input_dir == "/data/x" and config.output_dir == "/tmp/o"
  assert config.samples_per_class == "all" and config.sample_all
  assert config.seed == -12
  assert config.image.shape == (32, 48, 1)
  assert config.image.interpolation == "nearest"
  assert config.image.crop_to_aspect_ratio is True
  assert config.image.image_format == "jpeg"
  assert config.class_names == ("b", "a")
  assert config.num_shards == 3 and config.spares == 0


def test_yaml_config_sets_values_and_flags_override_it(tmp_path):
  path = write_config(tmp_path, "\n".join([
      "samples_per_class: 3", "seed: 7", "image_size: [64, 32]",
      "interpolation: bicubic", "crop_to_aspect_ratio: true", "color_mode: rgba",
      "class_names: [dog, cat]", "num_shards: 2",
      "pipeline_options:", "  runner: FnApiRunner", "  direct_num_workers: 3", ""]))
  config, beam_args = parse_args(["--config", path])
  assert config.samples_per_class == 3 and config.seed == 7
  assert config.image.shape == (64, 32, 4)
  assert config.image.interpolation == "bicubic" and config.image.crop_to_aspect_ratio
  assert config.class_names == ("dog", "cat") and config.num_shards == 2
  assert config.config_file == path
  options = beam_view(beam_args)
  assert options.view_as(StandardOptions).runner == "FnApiRunner"
  assert options.view_as(DirectOptions).direct_num_workers == 3

  config, beam_args = parse_args([
      f"--config={path}", "--seed", "8", "--image_size", "10", "20",
      "--samples_per_class", "1", "--direct_num_workers", "2"])
  assert config.seed == 8 and config.samples_per_class == 1
  assert config.image.shape == (10, 20, 4)
  assert config.image.interpolation == "bicubic"  # still from the file
  assert beam_view(beam_args).view_as(DirectOptions).direct_num_workers == 2


def test_beam_options_pass_through():
  _, beam_args = parse_args([
      "--runner", "DirectRunner", "--direct_num_workers", "2",
      "--direct_running_mode", "multi_processing", "--seed", "1"])
  options = beam_view(beam_args)
  assert options.view_as(StandardOptions).runner == "DirectRunner"
  assert options.view_as(DirectOptions).direct_num_workers == 2
  assert options.view_as(DirectOptions).direct_running_mode == "multi_processing"
  assert "--seed" not in beam_args


BAD_ARGS = [
    (["--sampels_per_class", "3"], "--sampels_per_class"),
    (["--samples_per_class", "0"], "--samples_per_class"),
    (["--samples_per_class", "x"], "--samples_per_class"),
    (["--samples_per_class", "-2"], "--samples_per_class"),
    (["--image_size", "0", "10"], "--image_size"),
    (["--image_size", "10"], "--image_size"),
    (["--image_size", "10", "x"], "--image_size"),
    (["--interpolation", "cubic"], "--interpolation"),
    (["--color_mode", "cmyk"], "--color_mode"),
    (["--seed", "abc"], "--seed"),
    (["--seed", "1.5"], "--seed"),
    (["--seed", " 3"], "--seed"),
    (["--seed", "1_0"], "--seed"),
    (["--seed", "\u0663"], "--seed"),  # ARABIC-INDIC DIGIT THREE: int() takes it
    (["--num_shards", "0x10"], "--num_shards"),
    (["--image_format", "gif"], "--image_format"),
    (["--image_format", "jpeg", "--color_mode", "rgba"], "--image_format"),
    (["--num_shards", "0"], "--num_shards"),
    (["--png_compression", "13"], "--png_compression"),
    (["--png_compression", "fast"], "--png_compression"),
    (["--jpeg_quality", "101"], "--jpeg_quality"),
    (["--spares", "-1"], "--spares"),
    (["--class_names", ","], "--class_names"),
    (["--direct_running_mode", "bogus"], "--direct_running_mode"),
    (["--direct_num_workers", "two"], "--direct_num_workers"),
    (["--input_dir"], "--input_dir"),
    (["stray_positional"], "stray_positional"),
]


@pytest.mark.parametrize("argv,flag", BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_bad_values_raise_one_line_usage_error_naming_the_flag(argv, flag):
  with pytest.raises(UsageError) as info:
    parse_args(argv)
  message = str(info.value)
  assert flag in message
  assert "\n" not in message.strip()


def test_bad_yaml_raises_usage_error(tmp_path):
  path = write_config(tmp_path, "samples_per_class: [1, 2\nseed: 3\n")
  with pytest.raises(UsageError, match="not valid YAML") as info:
    parse_args(["--config", path])
  assert "\n" not in str(info.value)


@pytest.mark.parametrize("text,match", [
    ("sampels_per_class: 3\n", "sampels_per_class"),
    ("config: other.yaml\n", "config"),
    ("runner: local\n", "runner"),  # Beam options belong under pipeline_options:
    ("- a\n- b\n", "mapping"),
    ("pipeline_options: [runner]\n", "pipeline_options"),
    ("pipeline_options:\n  no_such_beam_option: 1\n", "no_such_beam_option"),
    ("samples_per_class: 0\n", "--samples_per_class"),
    # YAML 1.1 reads these as integers (16, 10, 90); here they are refused.
    ("num_shards: 0x10\n", "--num_shards"),
    ("spares: 1_0\n", "--spares"),
    ("seed: 1:30\n", "--seed"),
])
def test_bad_config_contents_raise_usage_error(tmp_path, text, match):
  with pytest.raises(UsageError, match=match):
    parse_args(["--config", write_config(tmp_path, text)])


def test_missing_config_file_raises_usage_error(tmp_path):
  with pytest.raises(UsageError, match="cannot be read"):
    parse_args(["--config", str(tmp_path / "nope.yaml")])


@pytest.mark.parametrize("value,seed", [("012", 12), ("+3", 3), ("-4", -4), ("'15'", 15)])
def test_config_integers_read_as_on_the_command_line(tmp_path, value, seed):
  """YAML 1.1 would read 012 as octal 10; the command line reads 12."""
  from_file, _ = parse_args(["--config", write_config(tmp_path, f"seed: {value}\n")])
  from_flag, _ = parse_args(["--seed", value.strip("'")])
  assert from_file.seed == from_flag.seed == seed


@pytest.mark.parametrize("value,meant", [("64", (64, 64)), ("'128 96'", (128, 96)),
                                         ("[1, 2, 3]", None)])
def test_config_image_size_is_never_silently_misread(tmp_path, value, meant):
  """Either a usage error naming image_size, or the size the user meant."""
  path = write_config(tmp_path, f"image_size: {value}\n")
  try:
    config, _ = parse_args(["--config", path])
  except UsageError as e:
    assert "image_size" in str(e)
    return
  assert meant is not None, f"accepted {value} as {config.image.shape}"
  assert (config.image.height, config.image.width) == meant


# --- the real entry point -------------------------------------------------


def assert_one_line_usage_error(code: int, stderr: str, *needles: str) -> None:
  assert code == 2, stderr
  lines = stderr.strip().splitlines()
  assert len(lines) == 1, stderr
  assert lines[0].startswith("exemplar: error: "), stderr
  assert "Traceback" not in stderr
  for needle in needles:
    assert needle in lines[0]


def run_main(argv: List[str], capsys):
  from exemplar.main import main
  code = main(argv)
  captured = capsys.readouterr()
  return code, captured.out, captured.err


@pytest.fixture
def no_class_folders(tmp_path) -> str:
  root = tmp_path / "flat"
  root.mkdir()
  (root / "a.jpg").write_bytes(b"x")
  (root / ".hidden").mkdir()
  return str(root)


@pytest.mark.parametrize("argv,flag", BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_main_reports_bad_flags_in_one_line_with_exit_2(argv, flag, capsys, tmp_path):
  code, out, err = run_main(argv + ["--output_dir", str(tmp_path / "o")], capsys)
  assert_one_line_usage_error(code, err, flag)
  assert out == ""
  assert not (tmp_path / "o").exists()


def test_main_reports_bad_input_dirs_in_one_line(capsys, tmp_path, no_class_folders):
  out_dir = str(tmp_path / "o")
  code, _, err = run_main(["--input_dir", str(tmp_path / "missing"), "--output_dir", out_dir],
                          capsys)
  assert_one_line_usage_error(code, err, "--input_dir", "missing")
  code, _, err = run_main(["--input_dir", no_class_folders, "--output_dir", out_dir], capsys)
  assert_one_line_usage_error(code, err, "--input_dir", "no class folders")
  os.makedirs(os.path.join(no_class_folders, "cat"))
  code, _, err = run_main(["--input_dir", no_class_folders, "--output_dir", out_dir,
                           "--class_names", "cat,dog"], capsys)
  assert_one_line_usage_error(code, err, "--class_names", "dog")
  assert not os.path.exists(out_dir)


@pytest.mark.slow
def test_console_script_exits_2_with_one_line(tmp_path, no_class_folders):
  """The installed `exemplar` command, as a user runs it (run concurrently)."""
  assert os.path.exists(EXEMPLAR), EXEMPLAR
  out_dir = str(tmp_path / "o")
  bad = tmp_path / "bad.yaml"
  bad.write_text("seed: [1\n")
  cases = [
      (["--sampels_per_class", "3"], "--sampels_per_class"),
      (["--samples_per_class", "0"], "--samples_per_class"),
      (["--image_size", "10"], "--image_size"),
      (["--config", str(bad)], "YAML"),
      (["--input_dir", str(tmp_path / "missing")], "--input_dir"),
      (["--input_dir", no_class_folders], "no class folders"),
  ]
  procs = [
      subprocess.Popen([EXEMPLAR] + argv + ["--output_dir", out_dir],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       cwd=str(tmp_path))
      for argv, _ in cases]
  for proc, (argv, needle) in zip(procs, cases):
    out, err = proc.communicate(timeout=120)
    assert_one_line_usage_error(proc.returncode, err, needle)
    assert out == "", argv
  assert not os.path.exists(out_dir)


def test_unknown_runner_is_a_usage_error(capsys, tmp_path):
  root = tmp_path / "tree" / "cat"
  root.mkdir(parents=True)
  (root / "a.jpg").write_bytes(b"x")
  try:
    code, _, err = run_main(["--input_dir", str(tmp_path / "tree"), "--output_dir",
                             str(tmp_path / "o"), "--runner", "NoSuchRunner"], capsys)
  except ValueError as e:
    pytest.fail(f"raised {e!r}")
  assert_one_line_usage_error(code, err, "--runner")


@pytest.mark.parametrize("argv,size", [
    (["--image_size", "224", "200"], (224, 200)),
    (["--image_size", "224,200"], (224, 200)),
    (["--image_size", "224x200"], (224, 200)),
    (["--image_size", "224 X 200"], (224, 200)),
])
def test_image_size_forms(argv, size):
  config, _ = parse_args(argv)
  assert (config.image.height, config.image.width) == size


@pytest.mark.parametrize("argv,message", [
    (["--image_size", "224"], "--image_size takes HEIGHT WIDTH"),
    (["--image_size", "1", "2", "3"], "--image_size takes HEIGHT WIDTH"),
    (["--sampels_per_class", "3"], "--sampels_per_class; did you mean --samples_per_class?"),
    (["--runer", "DaskRunner"], "--runer; did you mean --runner?"),
    (["--qwertyuiop"], "unrecognized argument: --qwertyuiop"),
])
def test_bad_forms_and_a_suggestion_for_a_mistyped_flag(argv, message):
  with pytest.raises(UsageError) as caught:
    parse_args(argv)
  assert message in str(caught.value)
  if argv[0] == "--qwertyuiop":
    assert "did you mean" not in str(caught.value)


def test_a_flag_overrides_the_config_file_across_samples_and_splits(tmp_path):
  config = tmp_path / "c.yaml"
  config.write_text("samples_per_class: 3\n")
  parsed, _ = parse_args(["--config", str(config), "--splits", " train = 2 ,validation=1"])
  assert parsed.splits == "train=2,validation=1"
  config.write_text("splits: [train=2, validation=1]\n")
  assert parse_args(["--config", str(config)])[0].splits == "train=2,validation=1"
  parsed, _ = parse_args(["--config", str(config), "--samples_per_class", "4"])
  assert parsed.splits is None and parsed.samples_per_class == 4
  with pytest.raises(UsageError, match="not both"):
    parse_args(["--samples_per_class", "4", "--splits", "train=1"])


def test_the_command_gives_each_tf_call_one_thread_unless_the_user_chose():
  """console_main's hook sets TF's inter- and intra-op pools to one thread
  (the decode stage brings its own threads); a user's TF_NUM_*_THREADS, or
  a TF already started, is left alone. Fresh interpreters: the setting is
  process-wide and TF takes it once."""
  script = ("import tensorflow as tf; from exemplar import main; {before}"
            "main._one_tf_thread_per_call(); t = tf.config.threading; "
            "print(t.get_inter_op_parallelism_threads(), "
            "t.get_intra_op_parallelism_threads())")

  def threads(before: str = "", **env) -> str:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TF_NUM_")}
    return subprocess.run(
        [sys.executable, "-c", script.format(before=before)], env={**environ, **env},
        capture_output=True, text=True, check=True).stdout.split("\n")[-2]

  assert threads() == "1 1"
  assert threads(TF_NUM_INTRAOP_THREADS="2") == "0 0"
  assert threads(before="tf.constant(1) + 1; ") == "0 0"  # TF has started


def test_the_other_formats_setting_is_checked_but_changes_nothing():
  """--png_compression with jpeg (or --jpeg_quality with png) writes the same
  bytes, so it is kept at its default: the resume keys and the config
  fingerprint (--skip_if_unchanged) do not move."""
  jpeg, _ = parse_args(["--image_format", "jpeg", "--png_compression", "5"])
  assert jpeg.image == parse_args(["--image_format", "jpeg"])[0].image
  png, _ = parse_args(["--jpeg_quality", "20"])
  assert png.image == parse_args([])[0].image
  with pytest.raises(UsageError, match="--png_compression"):
    parse_args(["--image_format", "jpeg", "--png_compression", "13"])
