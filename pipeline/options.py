"""Command-line and config-file options, parsed and validated apart from running.

`parse_args(argv)` turns a command line (plus an optional YAML config, which
flags override) into an `ExemplarConfig` and the Beam pipeline options, or
raises `UsageError` with a one-line message naming the bad flag or value. It
never touches the input or starts a job, so the CLI is testable on its own.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml
from apache_beam.options.pipeline_options import PipelineOptions

from exemplar.transforms import beam_internals, png_encoder
from exemplar.transforms import splits as split_specs
from exemplar.transforms.decoding import COLOR_MODES, IMAGE_FORMATS, INTERPOLATIONS, ImageSettings
from exemplar.transforms.sample_images import DEFAULT_SPARES, check_sample_args
from exemplar.transforms.write_dataset import DEFAULT_MAX_PIXELS, MAX_IMAGE_SIDE

DEFAULT_OUTPUT_DIR = "exemplar_output"


class UsageError(ValueError):
  """A bad flag, value or config file: reported in one line, exit code 2."""


@dataclasses.dataclass(frozen=True)
class ExemplarConfig:
  """Everything the pipeline needs, validated."""
  input_dir: Optional[str]  # None: the embedded demo tree
  output_dir: str
  samples_per_class: Union[int, str]  # k >= 1, "all", or "P%"
  seed: int
  image: ImageSettings
  class_names: Optional[Tuple[str, ...]]
  num_shards: Optional[int]
  spares: int
  overwrite: bool
  max_pixels: int  # 0: no limit
  exif_transpose: bool
  contact_sheet: bool
  config_file: Optional[str]
  input_list: Optional[str] = None  # a list file instead of class folders
  splits: Optional[str] = None  # 'train=5,validation=2' or 'train=80%,...'
  min_per_class: Optional[int] = None
  max_per_class: Optional[int] = None
  # Scheduled runs (README, "Running on a schedule").
  skip_if_unchanged: bool = False
  fail_on_short: bool = False
  result_file: Optional[str] = None
  compare_to: Optional[str] = None

  @property
  def sample_all(self) -> bool:
    return self.samples_per_class == "all"

  def describe(self) -> Dict[str, Any]:
    """The config as plain data, for summary.json."""
    return {
        "input_dir": self.input_dir,
        "input_list": self.input_list,
        "output_dir": self.output_dir,
        "samples_per_class": self.samples_per_class,
        "splits": self.splits,
        "min_per_class": self.min_per_class,
        "max_per_class": self.max_per_class,
        "seed": self.seed,
        "image_size": [self.image.height, self.image.width],
        "interpolation": self.image.interpolation,
        "crop_to_aspect_ratio": self.image.crop_to_aspect_ratio,
        "color_mode": self.image.color_mode,
        "image_format": self.image.image_format,
        "jpeg_quality": self.image.jpeg_quality,
        "png_compression": self.image.png_compression,
        "class_names": list(self.class_names) if self.class_names else None,
        "num_shards": self.num_shards,
        "spares": self.spares,
        "max_pixels": self.max_pixels,
        "exif_transpose": self.exif_transpose,
    }


def _add_exemplar_args(parser) -> None:
  add = parser.add_argument
  add("--config", default=None,
      help="YAML file of option values (keys are flag names); flags override it.")
  add("--input_dir", default=None,
      help="Root of the <class>/<images> tree, local or any Beam file system "
           "(gs://...). Default: the embedded demo tree.")
  add("--input_list", default=None,
      help="A list file instead of class folders: CSV path,label (or Vertex AI's "
           "[ML_USE,]GCS_FILE_PATH,LABEL) or JSONL; local or gs://. Relative "
           "paths are relative to its folder.")
  add("--output_dir", default=DEFAULT_OUTPUT_DIR,
      help="Where the shards and metadata go (default: ./%(default)s).")
  add("--samples_per_class", default=None,
      help="Images to pick per class (k >= 1, default 1), 'all' to convert every "
           "image, or a percentage of each class (10%%: the split train=10%%).")
  add("--splits", default=None,
      help="Stored TFDS splits per class: counts (train=5,validation=2: the seeded "
           "order cut in turn) or percentages (train=80%%,validation=20%%: each image "
           "placed by its own hash, so it never changes split as the tree grows).")
  add("--min_per_class", default=None,
      help="With percentages: a split with fewer images in a class is topped up "
           "from files in no split, else reported short.")
  add("--max_per_class", default=None,
      help="With percentages: take at most this many images per class and split.")
  add("--seed", default="0", help="Sampling seed (an integer; default 0).")
  add("--image_size", nargs="+", default=["256", "256"], metavar="HEIGHT WIDTH",
      help="Resize to HEIGHT WIDTH (default 256 256); also HEIGHT,WIDTH or HEIGHTxWIDTH.")
  add("--interpolation", default="bilinear",
      help="Resize method, as Keras: " + ", ".join(INTERPOLATIONS) + ".")
  add("--crop_to_aspect_ratio", default=False, action="store_true",
      help="Centre-crop to the target aspect ratio before resizing, as Keras.")
  add("--color_mode", default="rgb", help="rgb, grayscale or rgba.")
  add("--image_format", default="png",
      help="Stored encoding: png (lossless, default) or jpeg.")
  add("--jpeg_quality", default=str(ImageSettings.jpeg_quality),
      help="With --image_format jpeg: tf.io.encode_jpeg's quality, 0-100 (default 95).")
  add("--png_compression", default=str(ImageSettings.png_compression),
      help="With --image_format png: libdeflate's level, 0 (stored: fastest, ~2.2x "
           "the bytes) to 12 (smallest, slowest); default %(default)s (~1 ms per "
           "256x256 image).")
  add("--class_names", default=None,
      help='Comma-separated classes to keep, in label order (default: all, sorted); '
           'one CSV record: quote a name holding a comma, as a,"b,c",d.')
  add("--num_shards", default=None,
      help="TFRecord shards to write (default: sized automatically).")
  add("--spares", default=str(DEFAULT_SPARES),
      help="Extra candidates kept per class to replace undecodable picks.")
  add("--overwrite", default=False, action="store_true",
      help="Replace a finished dataset in --output_dir (refused otherwise).")
  add("--max_pixels", default=str(DEFAULT_MAX_PIXELS),
      help="Refuse, before decoding, images whose header claims more pixels "
           "(default %(default)s; 0: no limit).")
  add("--exif_transpose", default=False, action="store_true",
      help="Turn images upright by their EXIF orientation (Keras does not; "
           "off by default so pixels equal Keras's).")
  add("--no_contact_sheet", dest="contact_sheet", default=True,
      action="store_false", help="Do not write contact_sheet.png.")
  add("--verbose", default=False, action="store_true",
      help="Show everything: TensorFlow's C++ lines, libjpeg's messages, "
           "third-party warnings and INFO lines (kept out by default).")
  add("--skip_if_unchanged", default=False, action="store_true",
      help="Exit 0 at once, writing nothing, when --output_dir holds a finished "
           "dataset of the same input (files, sizes, modification times) and options.")
  add("--fail_on_short", default=False, action="store_true",
      help="Exit 3 when the finished dataset has a short or empty class.")
  add("--result_file", default=None,
      help="Write a small JSON result here (local or gs://): status, exit code, "
           "fingerprints, counts, times.")
  add("--compare_to", default=None,
      help="A finished dataset to compare the new one with in changes.csv "
           "(default: the dataset this run replaces).")


class _OneLineParser(argparse.ArgumentParser):
  def error(self, message):
    raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
  parser = _OneLineParser(
      prog="exemplar", allow_abbrev=False,
      description="Pick a seeded, balanced sample of images per class from a "
                  "<class>/<images> tree and write it as TFRecords with TFDS "
                  "metadata and a TFT transform graph. Any Beam pipeline option "
                  "(--runner, --direct_num_workers, --project, ...) is accepted.")
  _add_exemplar_args(parser)
  return parser


_YAML_INT = "tag:yaml.org,2002:int"


class _ConfigLoader(yaml.SafeLoader):
  """PyYAML's safe loader with YAML 1.2's integers: decimal digits only.

  PyYAML follows YAML 1.1, where `seed: 012` is octal (10), `1_000`, `0x1f`
  and `1:30` (sexagesimal, 90) are integers too; `--seed 012` on the command
  line is 12. Here such values stay strings, which the option checks accept
  when they are decimal (`012` -> 12, as on the command line) and refuse
  otherwise, naming the flag.
  """


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _YAML_INT]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_ConfigLoader.add_implicit_resolver(_YAML_INT, re.compile(r"^[-+]?[0-9]+$"),
                                    list("-+0123456789"))
_ConfigLoader.add_constructor(
    _YAML_INT, lambda loader, node: int(loader.construct_scalar(node), 10))


def load_config_file(path: str) -> Dict[str, Any]:
  """A YAML mapping of flag names to values. Beam options may sit under
  `pipeline_options:`."""
  try:
    with open(path, encoding="utf-8") as f:
      data = yaml.load(f, Loader=_ConfigLoader) or {}
  except OSError as e:
    raise UsageError(f"--config {path!r} cannot be read: {e.strerror}") from e
  except yaml.YAMLError as e:
    raise UsageError(f"--config {path!r} is not valid YAML: {first_line(e)}") from e
  if not isinstance(data, dict):
    raise UsageError(f"--config {path!r} must hold a mapping of option names")
  return data


def first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def _config_defaults(data: Dict[str, Any], parser) -> Tuple[Dict[str, Any], List[str]]:
  """Splits a config mapping into our flag defaults and Beam flags."""
  known = beam_internals.argparse_dests(parser)
  defaults, beam_args = {}, []
  for key, value in data.items():
    if key == "pipeline_options":
      if not isinstance(value, dict):
        raise UsageError("config key 'pipeline_options' must be a mapping")
      beam_args.extend(_as_flags(value))
    elif key in known and key != "config":
      if key == "image_size":
        if (not isinstance(value, (list, tuple)) or len(value) != 2
            or any(isinstance(v, (bool, list, dict)) for v in value)):
          raise UsageError(
              f"config image_size must be a list of two integers [HEIGHT, WIDTH], got {value!r}")
        value = [str(v) for v in value]
      elif key == "class_names" and isinstance(value, (list, tuple)):
        value = _config_class_names(value)
      elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
      defaults[key] = value
    else:
      raise UsageError(f"config file has an unknown key: {key!r}")
  return defaults, beam_args


def _config_class_names(items: Sequence[Any]) -> Tuple[str, ...]:
  """The YAML list form of class_names: each item is one folder name, kept
  exactly (commas and spaces included). Integers are taken as written
  (`[0, 1]` for folders 0 and 1); YAML's other non-strings would be misread
  ('yes' -> True, '1.50' -> 1.5, '010' -> 8) and must be quoted."""
  names = []
  for item in items:
    if isinstance(item, bool) or not isinstance(item, (str, int)):
      raise UsageError(
          f"config class_names items must be folder names (strings); got {item!r}: "
          "quote it")
    names.append(str(item))
  return tuple(names)


# One item of a CSV record (after csv.reader has accepted the record): optional
# spaces, then a quoted item (group 1) or an unquoted one, then ',' or the end.
_CSV_ITEM = re.compile(r' *(?:"((?:[^"]|"")*)"|[^,]*)(?:,|\Z)', re.S)


def parse_class_names(text: str) -> Tuple[str, ...]:
  """--class_names on the command line: one CSV record, so a name holding a
  comma is quoted (`a,"b,c",d` -> a | b,c | d). An unquoted item loses its
  surrounding white space, a quoted one is kept exactly; empty items are
  dropped."""
  try:
    rows = list(csv.reader([text], skipinitialspace=True, strict=True))
  except csv.Error as e:
    raise UsageError(
        f"--class_names is not one comma-separated record ({e}): quote a name "
        'holding a comma or quote as "b,c" (a quote inside is doubled: "a""b")'
    ) from None
  if len(rows) != 1:
    raise UsageError("--class_names is not one comma-separated record")
  quoted = [m.group(1) is not None for m in _CSV_ITEM.finditer(text)]
  names = (item if is_quoted else item.strip()
           for item, is_quoted in zip(rows[0], quoted))
  return tuple(name for name in names if name)


def _as_flags(mapping: Dict[str, Any]) -> List[str]:
  flags = []
  for key, value in mapping.items():
    if value is True:
      flags.append(f"--{key}")
    elif value is False or value is None:
      continue
    else:
      flags.append(f"--{key}={value}")
  return flags


def _beam_option_parser(with_dask: bool = True) -> argparse.ArgumentParser:
  """A parser that knows every registered Beam pipeline option, as Beam builds it."""
  # Importing the Dask runner registers its options (--dask_client_address...).
  try:
    if with_dask:
      import apache_beam.runners.dask.dask_runner  # noqa: F401
  except ImportError:
    pass
  parser = _OneLineParser(allow_abbrev=False, add_help=False)
  beam_internals.add_all_pipeline_options(parser)
  return parser


def check_beam_args(beam_args: Sequence[str]) -> None:
  """Raises UsageError for a flag that no Beam pipeline option knows."""
  # First without the Dask runner's options: registering them imports the
  # Dask runner and dask, ~0.4 s of CPU before the first file is listed,
  # which the default run (--runner=local from the config) never needs.
  _, unknown = _beam_option_parser(with_dask=False).parse_known_args(list(beam_args))
  if unknown:
    _, unknown = _beam_option_parser().parse_known_args(list(beam_args))
  flags = [u for u in unknown if u.startswith("-")]
  if flags:
    flag = flags[0].split("=")[0]
    raise UsageError(f"unrecognized argument: {flag}{did_you_mean(flag)}")
  if unknown:
    raise UsageError(f"unexpected value: {unknown[0]!r}")


def did_you_mean(flag: str) -> str:
  """'; did you mean --samples_per_class?' for a mistyped flag, else ''."""
  import difflib
  known = [option for action in build_parser()._actions
           for option in action.option_strings if option.startswith("--")]
  known += ["--" + dest for dest in beam_internals.argparse_dests(_beam_option_parser())]
  close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
  return f"; did you mean {close[0]}?" if close else ""


def parse_image_size(values: Sequence[str]) -> Tuple[str, str]:
  """HEIGHT WIDTH, 'HEIGHT,WIDTH' or 'HEIGHTxWIDTH' (the Flex Template's
  form) -> (height, width) as given; UsageError otherwise."""
  values = [str(v) for v in values]
  if len(values) == 1:
    parts = re.split(r"\s*[,xX]\s*", values[0].strip())
    if len(parts) == 2:
      return parts[0], parts[1]
  elif len(values) == 2:
    return values[0], values[1]
  raise UsageError(f"--image_size takes HEIGHT WIDTH, HEIGHT,WIDTH or HEIGHTxWIDTH, "
                   f"got {' '.join(values)!r}")


def parse_args(argv: Sequence[str]) -> Tuple[ExemplarConfig, List[str]]:
  """Command line -> (validated config, Beam pipeline flags)."""
  argv = list(argv)
  parser = build_parser()
  pre, _ = parser.parse_known_args(argv)
  config_file = pre.config or default_config_path()
  defaults, config_beam_args = _config_defaults(load_config_file(config_file), parser)
  parser.set_defaults(**defaults)
  args, beam_args = parser.parse_known_args(argv)
  # A flag overrides the config file, also across the two forms of a sample:
  # --splits on the command line replaces the file's samples_per_class.
  given = {arg.split("=")[0] for arg in argv if arg.startswith("--")}
  if "--splits" in given and "--samples_per_class" not in given:
    args.samples_per_class = None
  if "--samples_per_class" in given and "--splits" not in given:
    args.splits = None
  beam_args = config_beam_args + beam_args
  check_beam_args(beam_args)
  check_runner(beam_args)
  return validate(args), beam_args


def check_runner(beam_args: Sequence[str]) -> None:
  """Raises UsageError unless --runner names a runner Beam (or we) know."""
  from apache_beam.options.pipeline_options import StandardOptions
  from apache_beam.runners.runner import create_runner
  from exemplar import runners
  name = PipelineOptions(list(beam_args)).view_as(StandardOptions).runner
  try:
    resolved = runners.resolve_runner(name)
    if isinstance(resolved, str):
      create_runner(resolved)
  except (ValueError, ImportError) as e:
    raise UsageError(f"--runner {name!r} is not a runner Beam knows: "
                     f"{first_line(e)}") from None


# What an integer option takes: ASCII decimal digits, with an optional sign
# (Python's int() would also take spaces, underscores and other scripts' digits).
_DECIMAL = re.compile(r"[-+]?[0-9]+")


def _int(name: str, value, minimum: Optional[int] = None,
         maximum: Optional[int] = None) -> int:
  if isinstance(value, bool) or not (
      isinstance(value, int) or _DECIMAL.fullmatch(str(value))):
    raise UsageError(f"--{name} must be an integer (decimal digits), got {value!r}")
  number = int(str(value), 10)
  if minimum is not None and number < minimum:
    raise UsageError(f"--{name} must be at least {minimum}, got {number}")
  if maximum is not None and number > maximum:
    raise UsageError(f"--{name} must be at most {maximum}, got {number}")
  return number


def _bool(name: str, value) -> bool:
  if isinstance(value, bool):
    return value
  text = str(value).lower()
  if text in ("true", "yes", "1"):
    return True
  if text in ("false", "no", "0"):
    return False
  raise UsageError(f"--{name} must be true or false, got {value!r}")


def validate(args: argparse.Namespace) -> ExemplarConfig:
  """Checks every value; raises UsageError naming the first bad one."""
  k = str(args.samples_per_class if args.samples_per_class is not None else "1"
          ).strip().lower()
  samples_per_class: Union[int, str]
  if k == "all" or k.endswith("%"):
    samples_per_class = k
  else:
    samples_per_class = _int("samples_per_class", k, minimum=1)
  splits = args.splits if args.splits not in (None, "") else None
  if splits is not None:
    try:  # a config file's mapping or list, or the flag's text
      splits = split_specs.describe(split_specs.parse_splits(
          splits if isinstance(splits, (dict, list, tuple)) else str(splits)))
    except ValueError as e:
      raise UsageError(f"--splits: {e}") from None
  min_per_class = (None if args.min_per_class in (None, "")
                   else _int("min_per_class", args.min_per_class, 0))
  max_per_class = (None if args.max_per_class in (None, "")
                   else _int("max_per_class", args.max_per_class, 1))
  if splits is not None and k not in ("1", "all"):
    raise UsageError("give --samples_per_class or --splits, not both "
                     "(--samples_per_class K is --splits train=K)")
  try:
    check_sample_args(samples_per_class if splits is None else
                      ("all" if k == "all" else 1), 0, 0, splits,
                      min_per_class, max_per_class)
  except ValueError as e:
    flag = ("--splits" if splits is not None and "split" in str(e)
            else "--min_per_class/--max_per_class" if "per_class" in str(e)
            else "--samples_per_class")
    raise UsageError(f"{flag}: {e}") from None
  image_size = parse_image_size(args.image_size)
  height = _int("image_size", image_size[0], 1, MAX_IMAGE_SIDE)
  width = _int("image_size", image_size[1], 1, MAX_IMAGE_SIDE)
  interpolation = str(args.interpolation).lower()
  if interpolation not in INTERPOLATIONS:
    raise UsageError(f"--interpolation must be one of {', '.join(INTERPOLATIONS)}; "
                     f"got {args.interpolation!r}")
  color_mode = str(args.color_mode).lower()
  if color_mode not in COLOR_MODES:
    raise UsageError(f"--color_mode must be one of {', '.join(COLOR_MODES)}; "
                     f"got {args.color_mode!r}")
  image_format = str(args.image_format).lower()
  if image_format == "jpg":
    image_format = "jpeg"
  if image_format not in IMAGE_FORMATS:
    raise UsageError(f"--image_format must be png or jpeg; got {args.image_format!r}")
  if image_format == "jpeg" and color_mode == "rgba":
    raise UsageError("--image_format jpeg cannot store --color_mode rgba; use png")
  jpeg_quality = _int("jpeg_quality", args.jpeg_quality, 0, 100)
  png_compression = _int("png_compression", args.png_compression, 0, png_encoder.MAX_LEVEL)
  class_names = None
  if isinstance(args.class_names, tuple):  # a config file's list: kept exactly
    class_names = args.class_names or None
  elif args.class_names:
    class_names = parse_class_names(str(args.class_names))
    if not class_names:
      raise UsageError("--class_names is empty")
  num_shards = (None if args.num_shards in (None, "", "auto")
                else _int("num_shards", args.num_shards, 1, 100000))
  if not args.output_dir or not str(args.output_dir).strip():
    raise UsageError("--output_dir is empty")
  input_dir = args.input_dir
  if input_dir is not None and not str(input_dir).strip():
    raise UsageError("--input_dir is empty")
  input_list = args.input_list
  if input_list is not None:
    if not str(input_list).strip():
      raise UsageError("--input_list is empty")
    if input_dir is not None:
      raise UsageError("--input_dir and --input_list cannot be used together")
  return ExemplarConfig(
      input_dir=input_dir,
      input_list=input_list,
      splits=splits,
      min_per_class=min_per_class,
      max_per_class=max_per_class,
      output_dir=str(args.output_dir),
      samples_per_class=samples_per_class,
      seed=_int("seed", args.seed, -(2**127), 2**127 - 1),
      image=ImageSettings(
          height=height, width=width, interpolation=interpolation,
          crop_to_aspect_ratio=_bool("crop_to_aspect_ratio", args.crop_to_aspect_ratio),
          color_mode=color_mode, image_format=image_format,
          ).encoding(jpeg_quality, png_compression),
      class_names=class_names,
      num_shards=num_shards,
      spares=_int("spares", args.spares, 0, 10000),
      overwrite=_bool("overwrite", args.overwrite),
      max_pixels=_int("max_pixels", args.max_pixels, 0),
      exif_transpose=_bool("exif_transpose", args.exif_transpose),
      contact_sheet=_bool("contact_sheet", args.contact_sheet),
      config_file=args.config,
      skip_if_unchanged=_bool("skip_if_unchanged", args.skip_if_unchanged),
      fail_on_short=_bool("fail_on_short", args.fail_on_short),
      result_file=_path_flag("result_file", args.result_file),
      compare_to=_path_flag("compare_to", args.compare_to),
  )


def _path_flag(name: str, value) -> Optional[str]:
  if value is None:
    return None
  if not str(value).strip():
    raise UsageError(f"--{name} is empty")
  return str(value)


def default_config_path() -> str:
  """configs/local.yaml, shipped as package data."""
  from exemplar import configs
  return configs.path("local.yaml")
