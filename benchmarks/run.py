"""exemplar's benchmark: one command, every figure from the same run.

    bash scripts/bench.sh            # full: ~14 min on 2 cores (python benchmarks/run.py in a venv)
    bash scripts/bench.sh --quick    # 130k-file tree, small subsets: ~6 min

Builds (once, cached outside git: $EXEMPLAR_BENCH_TREES or
/tmp/exemplar-bench-trees) the trees of benchmarks/trees.py, then runs every
case as a separate whole process, measured for wall time and peak memory
(benchmarks/measure.py: RSS summed over the process and its children, polled),
prints a table and writes it as markdown to benchmarks/results.md.

Cases:
  * the 1.3M-file ImageNet-shaped tree, k=1: exemplar (the real CLI) in-process
    and on 2 local processes; the issue's bare glob-first script (TF import,
    listdir, glob, load_img of the first file per class: the k=1 yardstick);
    the seed's glob-first-file script (verbatim and with its one-line fix);
    the seed's image_dataset_from_directory
    keep-first-per-class, on a bounded subset, extrapolated per image; the
    naive Beam pipeline (MatchFiles -> Sample.FixedSizePerKey); a raw
    os.scandir walk (the floor); and the listing+sampling stage alone;
  * memory growth: exemplar on the 130k-file tree vs the 1.3M-file tree;
  * decode throughput: exemplar's decode-and-write step in Beam vs a plain loop of the
    same decode+resize+encode, on the same cores (10,000 distinct photos);
  * `--samples_per_class all` on the 10,000-photo tree (PNG and JPEG) vs the
    tf.data floor (a plain tf.data pipeline: the same files, decode + resize
    ops and encoder, written with tf.io.TFRecordWriter; PNG and JPEG) and vs
    image_dataset_from_directory merely iterating it; images/s per core
    beside published figures;
  * the per-image cost of each op on one thread (stages/op_costs.py).

The other engineers share this machine: run it when it is quiet, and compare
figures only within one run. `--pythonpath DIR` measures another checkout of
exemplar (e.g. one with a patch applied) with the same harness.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import measure  # noqa: E402
import trees  # noqa: E402

PYTHON = sys.executable
EXEMPLAR = os.path.join(os.path.dirname(PYTHON), "exemplar")
MP = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
MB = 1 << 20


class Case:
  """One measured whole-process run and how to show it."""

  def __init__(self, key: str, label: str, m: measure.Measurement,
               note: str = "", seconds: Optional[float] = None,
               peak: Optional[int] = None):
    self.key = key
    self.label = label
    self.m = m
    self.note = note
    # Figures shown; they differ from the measured ones when extrapolated.
    self.seconds = m.seconds if seconds is None else seconds
    self.peak = m.peak_rss_bytes if peak is None else peak
    self.footprint = m.peak_footprint_bytes


class Bench:
  def __init__(self, args):
    self.args = args
    self.cases: Dict[str, Case] = {}
    self.env = {"PYTHONPATH": args.pythonpath} if args.pythonpath else {}
    self.scratch = tempfile.mkdtemp(prefix="exemplar-bench-")
    self.failures: List[str] = []

  def log(self, text: str) -> None:
    print(text, flush=True)

  def run(self, key: str, label: str, argv: List[str], note: str = "") -> Case:
    self.log(f"  running {label} ...")
    # A neutral working folder: `python -m` workers put their cwd first on
    # sys.path, which would shadow --pythonpath with /work/main's packages.
    m = measure.run(argv, env=self.env, cwd=self.scratch)
    if not m.ok:
      tail = "\n".join((m.stderr or m.stdout).strip().splitlines()[-5:])
      self.failures.append(f"{label}: exit {m.returncode}\n{tail}")
      note = (note + " " if note else "") + f"**FAILED (exit {m.returncode})**"
    case = Case(key, label, m, note)
    self.cases[key] = case
    self.log(f"    {m.seconds:8.2f} s  {m.peak_rss_bytes / MB:7.0f} MB RSS  "
             f"{m.peak_footprint_bytes / MB:7.0f} MB footprint  {case.note}")
    return case

  def exemplar(self, key: str, label: str, tree: str, extra: List[str],
               expect_images: Optional[int] = None) -> Case:
    out = os.path.join(self.scratch, key)
    shutil.rmtree(out, ignore_errors=True)
    case = self.run(key, label, [EXEMPLAR, "--input_dir", tree, "--output_dir", out] + extra)
    summary = os.path.join(out, "summary.json")
    if case.m.ok and os.path.exists(summary):
      with open(summary) as f:
        s = json.load(f)
      case.note = (f"{s['num_examples']} images of {s['files_seen']:,} files"
                   + _stage_note(case.m.stdout))
      if expect_images is not None and s["num_examples"] != expect_images:
        case.note += f" **expected {expect_images} images**"
        self.failures.append(f"{label}: wrote {s['num_examples']} images, "
                             f"expected {expect_images}")
    shutil.rmtree(out, ignore_errors=True)
    return case


  def floor(self, key: str, label: str, tree: str, extra: List[str],
            expect_images: int) -> Case:
    """baselines/tfdata_floor.py into a scratch folder, its count checked."""
    out = os.path.join(self.scratch, key)
    shutil.rmtree(out, ignore_errors=True)
    case = self.run(key, label, script("baselines", "tfdata_floor.py")
                    + [tree, "--output", out] + extra)
    st = case.m.stage
    if case.m.ok and "images" in st:
      case.note = (f"{st['images']} images in {st['shards']} shards; pipeline "
                   f"{float(st['seconds']):.1f} s = {float(st['images_per_second']):.0f} "
                   f"images/s after {float(st['import_seconds']):.1f} s of imports")
      if int(st["images"]) != expect_images:
        case.note += f" **expected {expect_images} images**"
        self.failures.append(f"{label}: wrote {st['images']} images, "
                             f"expected {expect_images}")
    shutil.rmtree(out, ignore_errors=True)
    return case


  def median_of(self, key: str, runs: List[Case]) -> Case:
    """The run of median wall time among `runs` (interleaved repeats of one
    case), kept as `key`, its peak the largest of them; the note lists all."""
    for c in runs:
      self.cases.pop(c.key, None)
    ok = sorted((c for c in runs if c.m.ok), key=lambda c: c.seconds)
    if not ok:
      runs[-1].key = key
      self.cases[key] = runs[-1]
      return runs[-1]
    case = ok[len(ok) // 2]
    case.key = key
    case.peak = max(c.peak for c in ok)
    case.footprint = max(c.footprint for c in ok)
    times = ", ".join(f"{c.seconds:.1f}" for c in runs)
    case.note = f"median of {len(runs)} interleaved runs ({times} s); " + case.note
    self.cases[key] = case
    return case


def _read_all(tree: str) -> None:
  """Reads every file of `tree` once (into the page cache), unmeasured."""
  for folder, _, files in os.walk(tree):
    for name in files:
      with open(os.path.join(folder, name), "rb") as f:
        while f.read(1 << 20):
          pass


def _stage_note(stdout: str) -> str:
  for line in stdout.splitlines():
    if line.startswith("time per stage"):
      return "; " + line.split(":", 1)[1].strip()
  return ""


def script(*parts: str) -> List[str]:
  return [PYTHON, os.path.join(HERE, *parts)]


def fmt_s(seconds: Optional[float]) -> str:
  return "-" if seconds is None else f"{seconds:.1f}"


def ratio(a: Optional[float], b: Optional[float]) -> str:
  if not a or not b:
    return "-"
  return f"{a / b:.2f}x"


def run_all(bench: Bench) -> None:
  args = bench.args
  quick = args.quick
  big_name = "mid" if quick else "imagenet"
  small_name = "small" if quick else "mid"
  big = trees.ensure_tree(big_name, args.trees_dir, log=bench.log)
  mid = trees.ensure_tree(small_name, args.trees_dir, log=bench.log)
  small_classes, small_per_class, _ = trees.TREES[small_name]
  bench.small_files = small_classes * small_per_class
  photos = trees.ensure_tree("photos_small" if quick else "photos", args.trees_dir,
                             log=bench.log)
  big_classes, big_per_class, _ = trees.TREES[big_name]
  big_files = big_classes * big_per_class
  photo_classes, photo_per_class, _ = trees.TREES["photos_small" if quick else "photos"]
  photo_files = photo_classes * photo_per_class
  keras_limit = 500 if quick else 2000
  decode_limit = 512 if quick else 2000
  bench.big_name, bench.big_files, bench.photo_files = big_name, big_files, photo_files
  bench.keras_limit, bench.decode_limit = keras_limit, decode_limit

  bench.log(f"\n[1] {big_files:,}-file tree ({big_classes} x {big_per_class}), k=1")
  # Warm the page cache (dentries) so no case pays the first cold walk.
  measure.run(script("baselines", "scandir_walk.py") + [big])
  bench.run("scandir", "raw os.scandir walk (floor)",
            script("baselines", "scandir_walk.py") + [big])
  # The target's pair (exemplar k=1 against the bare glob script) runs
  # interleaved REPEATS times and each keeps its median: single runs on
  # this shared machine move 10-30%.
  pair = ([], [])
  for i in range(args.repeats):
    pair[0].append(bench.exemplar(f"exemplar#{i}", "exemplar k=1 (default: in-process)",
                                  big, [], expect_images=big_classes))
    pair[1].append(bench.run(
        f"glob_bare#{i}", "bare glob-first script (issue's yardstick)",
        script("baselines", "glob_bare.py") + [big],
        note="TF import, listdir, glob, load_img of one file per class; no output"))
  bench.median_of("exemplar", pair[0])
  bench.median_of("glob_bare", pair[1])
  bench.exemplar("exemplar_mp", "exemplar k=1, 2 processes", big, MP,
                 expect_images=big_classes)
  bench.run("glob", "seed glob-first-file (verbatim)",
            script("baselines", "glob_first_file.py") + [big])
  bench.run("glob_stack", "seed glob-first-file + np.stack fix",
            script("baselines", "glob_first_file.py") + [big, "--stack"])
  keras = bench.run("keras_first", "seed image_dataset_from_directory first-per-class",
                    script("baselines", "keras_first_per_class.py")
                    + [big, "--limit", str(keras_limit)])
  if keras.m.ok:
    st = keras.m.stage
    fixed = float(st["import_seconds"]) + float(st["list_seconds"]) + float(
        st["first_batch_seconds"])
    per_image = float(st["per_image_seconds"])
    keras.seconds = fixed + per_image * big_files
    keras.note = (f"EXTRAPOLATED: measured {keras.m.seconds:.1f} s for "
                  f"{st['images']} images; {fixed:.1f} s fixed (import + Keras "
                  f"listing) + {per_image * 1000:.2f} ms/image x {big_files:,}; "
                  f"peak memory as measured on the subset")
  bench.run("naive_beam", "naive Beam MatchFiles -> Sample.FixedSizePerKey(1)",
            script("baselines", "naive_beam.py") + [big],
            note="samples only: no decode, no output")
  bench.run("list_fn", "listing+sampling stage: plain loop",
            script("stages", "listing_stage.py") + [big, "--mode", "function"])
  bench.run("list_beam", "listing+sampling stage: Beam, in-process",
            script("stages", "listing_stage.py") + [big, "--mode", "beam"])
  bench.run("list_beam_mp", "listing+sampling stage: Beam, 2 processes",
            script("stages", "listing_stage.py") + [big, "--mode", "beam"] + MP,
            note="includes starting the 2 worker processes")

  small = f"{bench.small_files:,}-file tree ({small_classes} x {small_per_class})"
  bench.log(f"\n[2] memory growth: {small} vs the {big_files:,}-file tree")
  bench.exemplar("exemplar_mid", f"exemplar k=1 on the {small}", mid, [],
                 expect_images=small_classes)
  bench.exemplar("exemplar_mid_mp", f"exemplar k=1 on the {small}, 2 processes",
                 mid, MP, expect_images=small_classes)

  bench.log(f"\n[3] decode throughput, first {decode_limit} of {photo_files:,} photos")
  decode = script("stages", "decode_stage.py") + [photos, "--limit", str(decode_limit)]
  bench.run("dec_loop1", "plain loop, 1 process", decode + ["--mode", "loop", "--processes", "1"])
  bench.run("dec_loop2", "plain loop, 2 processes", decode + ["--mode", "loop", "--processes", "2"])
  bench.run("dec_beam", "exemplar decode+write stage, in-process", decode + ["--mode", "beam"])
  bench.run("dec_beam_mp", "exemplar decode+write stage, 2 processes", decode + ["--mode", "beam"] + MP)

  bench.log(f"\n[4] --samples_per_class all on {photo_files:,} distinct photos")
  _read_all(photos)  # page cache: no case pays the first cold read of the photos
  pair = ([], [])
  for i in range(args.repeats):  # interleaved, medians kept (as in [1])
    pair[0].append(bench.floor(f"tfdata_floor#{i}", "tf.data floor (PNG)", photos, [],
                               photo_files))
    pair[1].append(bench.exemplar(f"all#{i}", "exemplar all (in-process)", photos,
                                  ["--samples_per_class", "all"], expect_images=photo_files))
  bench.median_of("tfdata_floor", pair[0])
  bench.median_of("all", pair[1])
  bench.exemplar("all_mp", "exemplar all, 2 processes", photos,
                 ["--samples_per_class", "all"] + MP, expect_images=photo_files)
  bench.floor("tfdata_floor_jpeg", "tf.data floor (JPEG)", photos,
              ["--image_format", "jpeg"], photo_files)
  bench.exemplar("all_jpeg", "exemplar all --image_format jpeg (in-process)", photos,
                 ["--samples_per_class", "all", "--image_format", "jpeg"],
                 expect_images=photo_files)
  bench.run("keras_iter", "image_dataset_from_directory, iterate only",
            script("baselines", "keras_iterate.py") + [photos],
            note="decode+resize on all cores, writes nothing")

  bench.log("\n[5] per-image cost of each op, one thread")
  bench.run("ops", "op costs", script("stages", "op_costs.py") + [photos])


# Which tf.data floor each `all` case is held against (same image format).
FLOOR_OF = {"all": "tfdata_floor", "all_mp": "tfdata_floor",
            "all_jpeg": "tfdata_floor_jpeg"}

# Published figures for scale, quoted with their sources (also in
# benchmarks/README.md). Other machines and other work: not measured here.
PUBLISHED_FIGURES = """Published figures, for scale (other machines and other work; not measured here):

* img2dataset (download from URLs, resize to 256x256, re-encode as JPEG, write shards): \
"1300 sample/s" for laion400m "with one 16 cores 2Gbps machine" = ~81 images/s per core \
([dataset_examples/laion400m.md](https://github.com/rom1504/img2dataset/blob/main/dataset_examples/laion400m.md)); \
cc3m at "about 850 image downloader per second" on "a computer with 16 cores" = ~53 per core \
([dataset_examples/cc3m.md](https://github.com/rom1504/img2dataset/blob/main/dataset_examples/cc3m.md)).
* ImageNet JPEGs to TFRecords on one core, no resize (Intel's script, adapted from the TPU \
repo's converter, which decodes each JPEG to check it and stores the original bytes): "we only use 1 core ... It takes about 3 hours just \
to convert 1.28 million .JPEG images into tf records" = ~119 images/s per core \
([intel/ai-reference-models#149](https://github.com/intel/ai-reference-models/issues/149); \
converter: [tensorflow/tpu tools/datasets/imagenet_to_gcs.py](https://github.com/tensorflow/tpu/blob/5cb81b5453519bba1cf494fd861fc6496cdc5ec8/tools/datasets/imagenet_to_gcs.py)).
"""


def stage_rate(case: Optional[Case], files: int) -> Optional[float]:
  """Files per second of a stage script (its own timer), or None."""
  if not case or not case.m.ok or "seconds" not in case.m.stage:
    return None
  return files / float(case.m.stage["seconds"])


def render(bench: Bench, started: datetime.datetime) -> str:
  c = bench.cases
  get = lambda key: c.get(key)  # noqa: E731
  secs = lambda key: get(key).seconds if get(key) and get(key).m.ok else None  # noqa: E731
  peak = lambda key: get(key).footprint if get(key) and get(key).m.ok else None  # noqa: E731
  rss = lambda key: get(key).peak if get(key) and get(key).m.ok else None  # noqa: E731

  lines = []
  add = lines.append
  add("# exemplar benchmark results\n")
  add(f"Run {started:%Y-%m-%d %H:%M} UTC, `{' '.join(['benchmarks/run.py'] + sys.argv[1:])}`; "
      f"{os.cpu_count()} cores, {_mem_gb():.0f} GB RAM, Python {platform.python_version()}, "
      f"{_versions()}; exemplar "
      f"{'code from ' + bench.args.pythonpath + ' (--pythonpath)' if bench.args.pythonpath else _git()}"
      f". Load average at start/end: "
      f"{bench.load_start:.1f} / {bench.load_end:.1f} (other engineers share the cores).\n")
  add("Each row is a separate whole process: wall time from spawn to exit. Memory is "
      "polled over the process and its children: *RSS* every 50 ms = largest sum of "
      "their resident sets (counts shared library pages once per process: an upper "
      "bound), *footprint* every 1 s = largest sum of private pages + the largest "
      "shared part (shared pages once; read less often because reading it stalls the "
      "measured process, see benchmarks/measure.py). They are equal for one process.\n")

  big = f"{bench.big_files:,}-file tree"
  add(f"## 1. {big}, one image per class\n")
  add("| case | wall s | peak RSS MB | footprint MB | vs bare glob | vs glob (verbatim) "
      "| vs glob + fix | notes |")
  add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
  for key in ("scandir", "exemplar", "exemplar_mp", "glob_bare", "glob", "glob_stack",
              "keras_first", "naive_beam", "list_fn", "list_beam", "list_beam_mp"):
    case = get(key)
    if not case:
      continue
    add(f"| {case.label} | {fmt_s(case.seconds)} | {case.peak / MB:.0f} | "
        f"{case.footprint / MB:.0f} | {ratio(case.seconds, secs('glob_bare'))} | "
        f"{ratio(case.seconds, secs('glob'))} | {ratio(case.seconds, secs('glob_stack'))} | "
        f"{_stage_seconds(case)}{case.note} |")
  add("")

  add("## 2. Memory growth with the tree\n")
  add(f"| runner | {bench.small_files:,} files: footprint (RSS) MB | "
      f"{bench.big_files:,} files: footprint (RSS) MB | growth |")
  add("| --- | ---: | ---: | ---: |")
  for small_key, big_key, label in (("exemplar_mid", "exemplar", "in-process (default)"),
                                    ("exemplar_mid_mp", "exemplar_mp", "2 processes")):
    if peak(small_key) and peak(big_key):
      add(f"| {label} | {peak(small_key) / MB:.0f} ({rss(small_key) / MB:.0f}) | "
          f"{peak(big_key) / MB:.0f} ({rss(big_key) / MB:.0f}) | "
          f"{(peak(big_key) / peak(small_key) - 1) * 100:+.0f}% |")
  add("")

  add(f"## 3. Decode throughput ({bench.decode_limit} distinct 500x375 JPEGs -> 256x256 PNG)\n")
  add("| case | images/s | vs plain loop, 2 processes | wall s (whole process) |")
  add("| --- | ---: | ---: | ---: |")
  loop2 = _ips(get("dec_loop2"))
  for key in ("dec_loop1", "dec_loop2", "dec_beam", "dec_beam_mp"):
    case = get(key)
    if case:
      ips = _ips(case)
      add(f"| {case.label} | {ips or 0:.1f} | "
          f"{'-' if not ips or not loop2 else f'{ips / loop2 * 100:.0f}%'} | "
          f"{fmt_s(case.seconds)} |")
  add("")

  add(f"## 4. `--samples_per_class all` on {bench.photo_files:,} distinct photos\n")
  cores = os.cpu_count() or 1
  add("Throughput is whole process against whole process: images / wall time "
      "from spawn to exit (imports and start-up included). *vs tf.data floor* = "
      "the floor's wall time / the row's, same format (PNG rows against the PNG "
      "floor, JPEG against the JPEG floor): 100% = as fast as the floor.\n")
  add(f"| case | wall s | images/s | images/s per core ({cores} cores) | "
      "throughput vs tf.data floor | peak RSS MB | footprint MB | vs Keras iterating "
      "| notes |")
  add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
  for key in ("tfdata_floor", "all", "all_mp", "tfdata_floor_jpeg", "all_jpeg",
              "keras_iter"):
    case = get(key)
    if case:
      ips = bench.photo_files / case.seconds if case.m.ok and case.seconds else None
      floor_key = FLOOR_OF.get(key)
      vs_floor = (f"{secs(floor_key) / secs(key) * 100:.0f}%"
                  if floor_key and secs(floor_key) and secs(key) else "-")
      add(f"| {case.label} | {fmt_s(case.seconds)} | "
          f"{'-' if ips is None else f'{ips:.0f}'} | "
          f"{'-' if ips is None else f'{ips / cores:.0f}'} | {vs_floor} | "
          f"{case.peak / MB:.0f} | {case.footprint / MB:.0f} | "
          f"{ratio(case.seconds, secs('keras_iter'))} | {case.note} |")
  add("")
  add(PUBLISHED_FIGURES)

  ops = get("ops")
  if ops and ops.m.ok:
    st = ops.m.stage
    ms = lambda name: float(st[name + "_ms"])  # noqa: E731
    add(f"## 5. Per-image cost of each op, one thread ({st['images']} photos, "
        f"`stages/op_costs.py`)\n")
    add("| op | ms/image | vs Keras's per-image work |")
    add("| --- | ---: | ---: |")
    for name, label in (
        ("decode_resize", "decode + resize: all that Keras iterating does per image"),
        ("stored_png", "decode + resize + uint8 + PNG encode (exemplar's default)"),
        ("stored_jpeg", "decode + resize + uint8 + JPEG encode (`--image_format jpeg`)"),
        ("png_encode", "PNG encode alone, 256x256 RGB (transforms/png_encoder.py)"),
        ("thumbnail", "contact-sheet thumbnail (first 10 per class only)"),
        ("sha256", "sha256 of the source file"),
        ("serialize", "tf.train.Example + TFRecord framing")):
      add(f"| {label} | {ms(name):.2f} | {ms(name) / ms('decode_resize'):.2f}x |")
    add("")
    if "png_encode_l0_ms" in st:
      add("`--png_compression` (libdeflate's level; the same pixels at every level), "
          "the PNG encoder alone on the same photos:\n")
      add("| level | ms/image | bytes/image | bytes vs level 1 |")
      add("| ---: | ---: | ---: | ---: |")
      for level in (0, 1, 2, 6, 12):
        name = "png_encode" if level == 1 else f"png_encode_l{level}"
        size, base = int(st[f"png_bytes_l{level}"]), int(st["png_bytes_l1"])
        add(f"| {level}{' (default)' * (level == 1)} | {ms(name):.2f} | {size:,} | "
            f"{size / base:.2f}x |")
      add("")

  add("## Targets\n")
  add("| target | figure | met |")
  add("| --- | --- | :---: |")
  if secs("exemplar") and secs("glob_bare"):
    r = secs("exemplar") / secs("glob_bare")
    add(f"| whole run k=1 <= 1.8x bare glob-first script | {get('exemplar').label}: "
        f"{secs('exemplar'):.1f} s / {secs('glob_bare'):.1f} s = {r:.2f}x | "
        f"{_yes(r <= 1.8)} |")
  if rss("exemplar"):
    add(f"| peak memory k=1 <= 900 MB | {get('exemplar').label}: {rss('exemplar') / MB:.0f} MB "
        f"(footprint {peak('exemplar') / MB:.0f} MB) | {_yes(rss('exemplar') <= 900 * MB)} |")
  for key in ("all", "all_mp", "all_jpeg"):
    floor_key = FLOOR_OF[key]
    if secs(key) and secs(floor_key):
      r = secs(floor_key) / secs(key)
      add(f"| exemplar all >= 90% of the tf.data floor's throughput | {get(key).label} vs "
          f"{get(floor_key).label}: {r * 100:.0f}% ({secs(key):.1f} s vs "
          f"{secs(floor_key):.1f} s) | {_yes(r >= 0.9)} |")
  ops = get("ops")
  if ops and ops.m.ok and "png_encode_l0_ms" in ops.m.stage:
    st = ops.m.stage
    for name, label in (("png_encode", "default, --png_compression 1"),
                        ("png_encode_l0", "--png_compression 0, stored")):
      value = float(st[name + "_ms"])
      add(f"| PNG encode < 1 ms per 256x256 RGB image, one core | {label}: "
          f"{value:.2f} ms | {_yes(value < 1)} |")
  best_ex = _best(bench, "exemplar", "exemplar_mp")
  for base_key, base_label in (("glob", "verbatim"), ("glob_stack", "with np.stack fix")):
    if best_ex and secs(base_key):
      r = secs(best_ex) / secs(base_key)
      add(f"| whole run k=1 <= 1.5x glob-first-file ({base_label}) | "
          f"{get(best_ex).label}: {r:.2f}x | {_yes(r <= 1.5)} |")
  floor = stage_rate(get("scandir"), bench.big_files)
  for key in ("list_fn", "list_beam", "list_beam_mp"):
    rate = stage_rate(get(key), bench.big_files)
    if rate and floor:
      add(f"| listing+sampling >= 1/3 of raw scandir rate | {get(key).label}: "
          f"{rate / 1e6:.2f}M files/s = 1/{floor / rate:.2f} of {floor / 1e6:.2f}M/s | "
          f"{_yes(rate >= floor / 3)} |")
  for small_key, big_key in (("exemplar_mid", "exemplar"), ("exemplar_mid_mp", "exemplar_mp")):
    if peak(small_key) and peak(big_key):
      growth = peak(big_key) / peak(small_key) - 1
      add(f"| peak < 1.2 GB and growth < 20% ({get(big_key).label}) | "
          f"footprint {peak(big_key) / MB:.0f} MB (RSS sum {rss(big_key) / MB:.0f} MB), "
          f"growth {growth * 100:+.0f}% | {_yes(peak(big_key) < 1.2e9 and growth < 0.2)} |")
  for key in ("dec_beam", "dec_beam_mp"):
    if _ips(get(key)) and loop2:
      r = _ips(get(key)) / loop2
      add(f"| decode >= 80% of plain loop on the same cores | {get(key).label}: "
          f"{r * 100:.0f}% | {_yes(r >= 0.8)} |")
  for key in ("all", "all_mp", "all_jpeg"):
    if secs(key) and secs("keras_iter"):
      r = secs(key) / secs("keras_iter")
      add(f"| `all` faster than Keras merely iterating | {get(key).label}: {r:.2f}x | "
          f"{_yes(r < 1)} |")
  add("")
  if bench.failures:
    add("## Failures\n")
    for failure in bench.failures:
      add("```\n" + failure + "\n```")
  return "\n".join(lines) + "\n"


def _stage_seconds(case: Case) -> str:
  st = case.m.stage
  if case.key in ("scandir", "list_fn", "list_beam", "list_beam_mp") and "seconds" in st:
    return f"stage {float(st['seconds']):.2f} s; "
  return ""


def _ips(case: Optional[Case]) -> Optional[float]:
  if not case or not case.m.ok or "images_per_second" not in case.m.stage:
    return None
  return float(case.m.stage["images_per_second"])


def _best(bench: Bench, *keys: str) -> Optional[str]:
  ok = [k for k in keys if k in bench.cases and bench.cases[k].m.ok]
  return min(ok, key=lambda k: bench.cases[k].seconds) if ok else None


def _yes(ok: bool) -> str:
  return "yes" if ok else "**no**"


def _mem_gb() -> float:
  import psutil
  return psutil.virtual_memory().total / 1e9


def _versions() -> str:
  from importlib.metadata import version
  return ", ".join(f"{name} {version(name)}" for name in ("apache-beam", "tensorflow"))


def _git() -> str:
  try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "pipeline", "transforms",
                            "configs"], cwd=REPO, capture_output=True, text=True).stdout.strip()
  except OSError:
    return "(no git)"
  return f"{commit}{' + uncommitted edits' if dirty else ''}"


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="130k-file tree instead of 1.3M, smaller subsets (~6 min)")
  parser.add_argument("--trees_dir", default=None,
                      help="where the trees are cached (default %s)" % trees.default_trees_dir())
  parser.add_argument("--repeats", type=int, default=3,
                      help="interleaved runs of each target pair (exemplar k=1 and the bare "
                           "glob script; exemplar all and the tf.data floor); medians kept")
  parser.add_argument("--pythonpath", default=None,
                      help="measure the exemplar checkout in DIR (PYTHONPATH=DIR)")
  parser.add_argument("--output", default=os.path.join(HERE, "results.md"),
                      help="markdown file to write (default benchmarks/results.md)")
  args = parser.parse_args()
  bench = Bench(args)
  started = datetime.datetime.utcnow()
  bench.load_start = os.getloadavg()[0]
  try:
    run_all(bench)
  finally:
    bench.load_end = os.getloadavg()[0]
    shutil.rmtree(bench.scratch, ignore_errors=True)
  text = render(bench, started)
  with open(args.output, "w") as f:
    f.write(text)
  print("\n" + text)
  print(f"wrote {args.output}")
  return 1 if bench.failures else 0


if __name__ == "__main__":
  sys.exit(main())
