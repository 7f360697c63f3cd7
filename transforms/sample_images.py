"""Stages 1-3 as public PTransforms: list images, take each class's seeded sample.

    SampleImageFolder(input_dir, ...)   PBegin -> ClassSample per class folder
    SampleImages(...)                   (class_name, path) -> ClassSample per class

Both give the same picks for the same files and relative paths: every file's
priority is a keyed BLAKE2b hash of its path relative to the root
(transforms/sampling.py), so a class folder listed here and the same files
read from a list file or any other source sample alike.
"""

from __future__ import annotations

import posixpath
import sys
import time
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.display import DisplayDataItem

from exemplar.transforms import listing, progress, sampling, splits
from exemplar.transforms.bottom_k import SampledClass
from exemplar.transforms.list_file import ListedImage
from exemplar.transforms.sampling import ClassSample, PartialSample, Pick

# The sample size of 'every file': no capacity limit.
UNBOUNDED = sys.maxsize
# How many candidates beyond k each class keeps, to replace undecodable picks.
DEFAULT_SPARES = 4
RANGES_TAG = "ranges"
PROBLEMS_TAG = "problems"


class SamplePlan(NamedTuple):
  """What each class's sample is: validated sampling arguments."""
  k: Optional[int]  # picks per class (count splits: their sum); None: every file
  spares: int
  specs: Tuple[splits.SplitSpec, ...] = ()  # () : one 'train' split of k
  min_per_class: Optional[int] = None
  max_per_class: Optional[int] = None

  @property
  def capacity(self) -> int:
    if self.k is None:
      return UNBOUNDED
    return sampling.capacity_for(self.k, self.spares)

  @property
  def by_hash(self) -> bool:
    return splits.is_fraction(self.specs)

  def describe(self):
    """samples_per_class as summary.json and the sheet's title give it."""
    if self.by_hash or len(self.specs) > 1:
      bounds = "".join(f" {name}={value}" for name, value in (
          ("min_per_class", self.min_per_class), ("max_per_class", self.max_per_class))
          if value is not None)
      return splits.describe(self.specs) + bounds
    return "all" if self.k is None else self.k


def _is_count(value, minimum: int) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_sample_args(samples_per_class, spares: int, seed: int, split_specs=None,
                      min_per_class: Optional[int] = None,
                      max_per_class: Optional[int] = None) -> SamplePlan:
  """Validates the sampling arguments; raises ValueError naming the bad one.

  samples_per_class: k >= 1, 'all' (or None) for every file, or 'P%' (the
  fraction split train=P%). split_specs: see transforms/splits.py; with it,
  samples_per_class stays at its default 1 (or 'all' with fractions).
  """
  if not isinstance(spares, int) or spares < 0:
    raise ValueError(f"spares must be an int >= 0, got {spares!r}")
  if not isinstance(seed, int) or not -(2**127) <= seed < 2**127:
    raise ValueError(f"seed must be an int that fits in 128 bits, got {seed!r}")
  for name, value in (("min_per_class", min_per_class), ("max_per_class", max_per_class)):
    if value is not None and not _is_count(value, 0 if name == "min_per_class" else 1):
      raise ValueError(f"{name} must be an int >= {0 if name == 'min_per_class' else 1}, "
                       f"got {value!r}")
  if (min_per_class is not None and max_per_class is not None
      and min_per_class > max_per_class):
    raise ValueError(f"min_per_class ({min_per_class}) is above max_per_class "
                     f"({max_per_class})")
  fraction_k = isinstance(samples_per_class, str) and samples_per_class.strip().endswith("%")
  if split_specs is not None:
    specs = splits.parse_splits(split_specs)
    if not (samples_per_class == 1 or (splits.is_fraction(specs)
                                       and samples_per_class in (None, "all"))):
      raise ValueError("give samples_per_class or splits, not both "
                       "(samples_per_class K is splits train=K)")
  elif fraction_k:
    specs = splits.parse_splits([(splits.DEFAULT_SPLIT, samples_per_class.strip())])
  else:
    specs = ()
  if specs and not splits.is_fraction(specs):
    k: Optional[int] = splits.total_count(specs)
  elif specs:
    k = None
  elif samples_per_class in (None, "all"):
    k = None
  elif _is_count(samples_per_class, 1):
    k = samples_per_class
  else:
    raise ValueError(f"samples_per_class must be an int >= 1, 'all' or a percentage "
                     f"such as '10%', got {samples_per_class!r}")
  if (min_per_class is not None or max_per_class is not None) and not splits.is_fraction(specs):
    raise ValueError("min_per_class and max_per_class bound fraction splits "
                     "(train=80%,... or samples_per_class '10%'); a count is exact")
  if len(specs) == 1 and not splits.is_fraction(specs) and specs[0].name == splits.DEFAULT_SPLIT:
    specs = ()  # train=K is plain k
  return SamplePlan(k, spares, specs, min_per_class, max_per_class)


def _fraction_picks(candidates: Sequence[Tuple[int, str]], root: str,
                    plan: SamplePlan):
  """Fraction splits: a class's candidates (every file, in seeded order) ->
  (picks, [(split, planned)], [(split, asked)]) (a pure function)."""
  bounds = splits.fraction_bounds(plan.specs)
  reserve = splits.reserve_bounds(plan.specs)
  buckets: Dict[str, List[str]] = {name: [] for name, _ in bounds}
  # Files in no split (fractions under 100%), each reserved to one split.
  extras: Dict[str, List[str]] = {name: [] for name, _ in bounds}
  for priority, relative in candidates:
    name = splits.split_of(priority, bounds)
    if name is not None:
      buckets[name].append(relative)
    else:
      extras[splits.split_of(priority, reserve)].append(relative)
  picks, planned, asked = [], [], []
  for name, _ in bounds:
    bucket = buckets[name]
    n, _ = splits.bound_count(len(bucket), plan.min_per_class, plan.max_per_class)
    if plan.min_per_class is not None and n < plan.min_per_class and extras[name]:
      # Top up from the files in no split reserved to this one: an image is
      # only ever in its own split.
      take = min(plan.min_per_class - n, len(extras[name]))
      bucket = bucket[:n] + extras[name][:take]
      n += take
    kept = bucket[:n + (plan.spares if plan.max_per_class is not None else 0)]
    picks += [Pick(rank, relative, listing.join(root, relative), name)
              for rank, relative in enumerate(kept)]
    planned.append((name, n))
    asked.append((name, max(n, plan.min_per_class or 1)))
  return tuple(picks), tuple(planned), tuple(asked)


def to_class_sample(class_name: str, sample: PartialSample, root: str,
                    plan: SamplePlan, relistable: bool,
                    problems: Sequence[Tuple[str, str]] = ()) -> ClassSample:
  """A merged PartialSample -> the class's ClassSample (a pure function)."""
  problems = tuple(sorted(problems))
  if plan.by_hash:
    picks, planned, asked = _fraction_picks(sample.candidates, root, plan)
    return ClassSample(class_name, root, sample.seen, plan.max_per_class, picks,
                       False, problems, planned, True, asked)
  picks = tuple(Pick(rank, relative, listing.join(root, relative))
                for rank, (_, relative) in enumerate(sample.candidates))
  if not plan.specs:
    return ClassSample(class_name, root, sample.seen, plan.k, picks, relistable, problems)
  wanted = min(plan.k, sample.seen)
  return ClassSample(class_name, root, sample.seen, plan.k, picks, relistable, problems,
                     tuple(splits.allocate_counts(plan.specs, wanted)), False,
                     tuple((s.name, s.count) for s in plan.specs))


class _ClassCounts:
  """What each listed class adds to the run's counters and progress lines,
  wherever it was listed (in the job, or before it by exemplar.prelist)."""

  def __init__(self, num_classes: Optional[int],
               run_progress: Optional[progress.Progress]):
    self._num_classes = num_classes
    # This run's progress totals (a new run's own when not given).
    self._progress = run_progress or progress.Progress()
    self._files = Metrics.counter("exemplar", "files_listed")
    self._classes = Metrics.counter("exemplar", "classes_listed")
    self._msec = Metrics.counter("exemplar", "listing_msec")

  def listed(self, files: int, msec: int) -> None:
    self._files.inc(files)
    self._classes.inc()
    self._msec.inc(msec)
    if self._num_classes is not None:
      self._progress.set_total("classes listed", self._num_classes)
    self._progress.tick("files listed", files)
    self._progress.tick("classes listed")


class ListAndSampleClassFn(beam.DoFn):
  """class name -> (class, PartialSample): lists one class folder and samples
  it right there, so per-file elements never cross a Beam boundary.

  A sub-folder that cannot be listed goes to the 'problems' output as
  (class, (relative folder, reason)). A gs:// class longer than the listing's
  page budget is sampled as far as listed, and the rest goes to the 'ranges'
  output as KeyRanges, to be listed in parallel (ListAndSampleRangeFn).
  """

  def __init__(self, input_dir: str, seed: int, capacity: int,
               remote: listing.RemoteListing = listing.RemoteListing(),
               num_classes: Optional[int] = None,
               run_progress: Optional[progress.Progress] = None):
    self._counts = _ClassCounts(num_classes, run_progress)
    self._input_dir = input_dir
    self._seed = seed
    self._capacity = capacity
    self._remote = remote
    self._ranges = Metrics.counter("exemplar", "key_ranges_split_off")

  def process(self, class_name: str) -> Iterator[Tuple[str, PartialSample]]:
    started = time.monotonic()
    problems: List[Tuple[str, str]] = []
    listed = listing.ClassListing(self._input_dir, class_name, problems, self._remote)
    sample = sampling.sample_paths(listed, self._seed, self._capacity)
    self._ranges.inc(len(listed.rest))
    self._counts.listed(sample.seen, int((time.monotonic() - started) * 1000))
    yield class_name, sample
    for key_range in listed.rest:
      yield beam.pvalue.TaggedOutput(RANGES_TAG, key_range)
    for problem in problems:
      yield beam.pvalue.TaggedOutput(PROBLEMS_TAG, (class_name, problem))


class PrelistedClassSampleFn(beam.DoFn):
  """SampledClass -> ClassSample: a class folder listed and sampled before
  the job (exemplar.prelist), counted as ListAndSampleClassFn counts its own.
  Its sample is whole already (one listing per class), so no merge and no
  join of problems is needed: the same ClassSample as the listing path's."""

  def __init__(self, root: str, plan: SamplePlan, num_classes: int,
               run_progress: Optional[progress.Progress] = None):
    self._root = root
    self._plan = plan
    self._counts = _ClassCounts(num_classes, run_progress)

  def process(self, listed: SampledClass) -> Iterator[ClassSample]:
    listed = SampledClass(*listed)
    self._counts.listed(listed.seen, listed.listing_msec)
    sample = PartialSample(listed.seen, [tuple(c) for c in listed.candidates])
    yield to_class_sample(listed.class_name, sample, self._root, self._plan, True,
                          [tuple(p) for p in listed.problems])


class ListAndSampleRangeFn(beam.DoFn):
  """KeyRange -> (class, PartialSample): one key range of a large gs:// class
  folder, listed and sampled where it is listed."""

  def __init__(self, input_dir: str, seed: int, capacity: int,
               run_progress: Optional[progress.Progress] = None):
    self._progress = run_progress or progress.Progress()
    self._input_dir = input_dir
    self._seed = seed
    self._capacity = capacity
    self._files = Metrics.counter("exemplar", "files_listed")
    self._msec = Metrics.counter("exemplar", "listing_msec")

  def process(self, key_range: listing.KeyRange
              ) -> Iterator[Tuple[str, PartialSample]]:
    started = time.monotonic()
    sample = sampling.sample_paths(
        listing.walk_key_range(self._input_dir, listing.KeyRange(*key_range)),
        self._seed, self._capacity)
    self._files.inc(sample.seen)
    self._msec.inc(int((time.monotonic() - started) * 1000))
    self._progress.tick("files listed", sample.seen)
    yield key_range[0], sample


@beam.typehints.with_input_types(beam.pvalue.PBegin)
@beam.typehints.with_output_types(ClassSample)
class SampleImageFolder(beam.PTransform):
  """PBegin -> PCollection[ClassSample]: one seeded sample per class folder.

  Lists `<input_dir>/<class>/...` with Keras's rules (sorted first-level
  folders are the classes; nested files belong to their class; Keras's image
  extensions; hidden and operating-system folders skipped; see README) and
  takes each class's seeded bottom-k sample where it lists, so per-file
  elements never cross a Beam boundary: memory is O(k) per class whatever the
  tree's size. A class folder with no images gives a ClassSample with no
  picks; sub-folders that cannot be listed are in its `problems`.

  Args:
    input_dir: the root, a local path or any Beam file system's URI
      (gs://...). Literal: never a glob.
    samples_per_class: k >= 1, 'all' for every file, or a percentage such
      as '10%' (the fraction split train=10%).
    seed: the sampling seed (an int of at most 128 bits): same files and
      seed, same picks, on any runner.
    splits: stored TFDS splits, per class: counts ('train=5,validation=2'
      or {'train': 5, 'validation': 2}: the seeded order cut in turn) or
      fractions ('train=80%,validation=20%': each image's split fixed by its
      own seeded hash, so it never moves when files are added or removed).
      See transforms/splits.py and README, "Splits".
    min_per_class, max_per_class: bounds on a fraction split's images per
      class (a split under min takes files that are in no split, if any;
      otherwise it is reported short).
    spares: candidates kept beyond k per class, to replace picks that fail
      to decode.
    class_names: the classes to take, in label order (as Keras's
      `class_names`); default: every class folder, sorted.
    prelisted: the classes already listed and sampled on local disk by
      `exemplar.prelist` (which the CLI runs beside its imports) for this
      `input_dir`, `seed` and sample size (k + spares): one SampledClass per
      class, in class order. The job then starts from them instead of
      listing the folders itself. Only the class names can be checked here:
      samples taken otherwise give other picks.

  Raises (at construction, before any job starts):
    ValueError: a bad argument.
    exemplar.ListingError: `input_dir` is missing or holds no class folder,
      a class named in `class_names` is not there, or a class's name cannot
      be kept intact by every reader (a line break, edge white space).

  Example:
    # /data/flowers holds a folder per class: daisy/, roses/, tulips/.
    import apache_beam as beam
    import exemplar

    with beam.Pipeline() as p:
      _ = (p
           | exemplar.SampleImageFolder("/data/flowers", samples_per_class=2, seed=7)
           | exemplar.WriteDataset("/tmp/flowers_pick", image_size=(128, 128)))
  """

  def __init__(self, input_dir: str, samples_per_class: Union[int, str] = 1,
               seed: int = 0, spares: int = DEFAULT_SPARES,
               class_names: Optional[Sequence[str]] = None,
               remote: listing.RemoteListing = listing.RemoteListing(),
               splits=None, min_per_class: Optional[int] = None,
               max_per_class: Optional[int] = None,
               prelisted: Optional[Sequence[SampledClass]] = None):
    super().__init__()
    self._plan = check_sample_args(samples_per_class, spares, seed, splits,
                                   min_per_class, max_per_class)
    self._input_dir = listing.normalize_root(input_dir)
    if class_names is not None:
      class_names = listing.names_list("class_names", class_names)
    found = listing.list_class_folders(self._input_dir)
    self.class_names = tuple(listing.resolve_classes(found, class_names))
    if prelisted is not None:
      prelisted = [SampledClass(*c) for c in prelisted]
      if tuple(c.class_name for c in prelisted) != self.class_names:
        raise ValueError("prelisted must hold exactly the classes taken, in order")
    self._prelisted = prelisted
    self._seed = seed
    self._spares = spares
    self._remote = remote

  def default_label(self) -> str:
    return (f"SampleImageFolder({posixpath.basename(self._input_dir) or self._input_dir}, "
            f"k={self._plan.describe()})")

  def display_data(self):
    return {"input_dir": self._input_dir,
            "samples_per_class": self._plan.describe(),
            "seed": DisplayDataItem(str(self._seed), label="Seed"),
            "spares": self._spares, "classes": len(self.class_names)}

  def expand(self, pbegin):
    root, plan = self._input_dir, self._plan
    capacity = plan.capacity
    # Counted per application: a second run in this process starts from zero.
    run_progress = progress.Progress()
    if self._prelisted is not None:
      return (
          pbegin
          | "PrelistedClasses" >> beam.Create(self._prelisted)
          # SampledClass
          | "ToClassSample" >> beam.ParDo(PrelistedClassSampleFn(
              root, plan, len(self.class_names), run_progress))
          # ClassSample
      )
    listed = (
        pbegin
        | "ClassFolders" >> beam.Create(list(self.class_names))
        # class name
        | "SpreadClassFolders" >> beam.Reshuffle()
        | "ListAndSample" >> beam.ParDo(
            ListAndSampleClassFn(root, self._seed, capacity, self._remote,
                                 len(self.class_names), run_progress)
        ).with_outputs(PROBLEMS_TAG, RANGES_TAG, main="samples"))
    # (class, PartialSample): one per listing; (class, (folder, reason));
    # KeyRange: the rest of a large gs:// class
    ranges = (
        listed[RANGES_TAG]
        | "SpreadKeyRanges" >> beam.Reshuffle()
        | "ListAndSampleRange" >> beam.ParDo(
            ListAndSampleRangeFn(root, self._seed, capacity, run_progress)))
    # (class, PartialSample): one per key range
    merged = (
        (listed.samples, ranges)
        | "AllPartialSamples" >> beam.Flatten()
        | "MergeSamples" >> beam.CombinePerKey(sampling.SeededSampleFn(capacity)))
    # (class, PartialSample): the class's candidates, best first
    return (
        {"sample": merged, "problems": listed[PROBLEMS_TAG]}
        | "JoinProblems" >> beam.CoGroupByKey()
        # (class, {'sample': [PartialSample], 'problems': [(folder, reason)]})
        | "ToClassSample" >> beam.MapTuple(
            lambda name, joined: to_class_sample(
                name, joined["sample"][0], root, plan, True, joined["problems"]))
        # ClassSample
    )


def _relative_to(root: str, path: str) -> str:
  """`path` below `root` as a '/'-separated relative path, else `path` whole."""
  if root:
    prefix = root.rstrip("/") + "/"
    if path.startswith(prefix) and len(path) > len(prefix):
      return path[len(prefix):]
  return path


def keyed_path(element, root: str) -> Tuple[str, str]:
  """(class_name, path) or an object with class_name, path and optionally
  relative_path -> (class_name, sampling key relative to `root`)."""
  if isinstance(element, tuple) and len(element) == 2:
    class_name, path = element
    relative = None
  else:
    class_name, path = element.class_name, element.path
    relative = getattr(element, "relative_path", None)
  if not isinstance(class_name, str) or not isinstance(path, str):
    raise TypeError(f"expected (class_name: str, path: str), got {element!r}")
  if relative is None or listing.join(root, relative) != path:
    relative = _relative_to(root, path)
  return class_name, relative


# (class_name, path), or ReadImageList's ListedImage (which carries its
# relative path): a PCollection of another declared type (str, say) is refused
# by Beam's type check when the pipeline is built. Elements of undeclared
# type (Any) are checked at run time (keyed_path).
SAMPLE_IMAGES_INPUT = Union[Tuple[str, str], ListedImage]


@beam.typehints.with_input_types(SAMPLE_IMAGES_INPUT)
@beam.typehints.with_output_types(ClassSample)
class SampleImages(beam.PTransform):
  """PCollection[(class_name, path)] -> PCollection[ClassSample], one per class.

  The same seeded bottom-k sample as `SampleImageFolder`, of paths from any
  source (a list file, a database query, another stage of your pipeline).
  Each path is keyed by its path relative to `root` (or whole, when it is
  not below `root`), so files listed by `SampleImageFolder(root)` and the
  same files given here with `root` get the same picks. Duplicate
  (class, path) elements count once.

  Elements: `(class_name: str, path: str)` tuples, or `exemplar.ListedImage`s
  (`exemplar.ReadImageList`'s, whose `relative_path` is the key). The input
  type is declared (`Tuple[str, str]` or `ListedImage`), so a PCollection
  whose element type Beam knows to be another (str, say, or your own class:
  map it to `(class_name, path)` first) fails Beam's type check
  (`TypeCheckError`) when the pipeline is built. Paths are literal.

  Args:
    samples_per_class, splits, min_per_class, max_per_class: as
      SampleImageFolder.
    seed, spares: as SampleImageFolder.
    root: the folder paths are keyed relative to ('' : every path whole).

  Raises ValueError at construction for a bad argument; TypeCheckError when
  applied to a PCollection of another element type; TypeError at run time
  for an element of another shape in a PCollection of undeclared type (Any).

  Example:
    import apache_beam as beam
    import exemplar

    with beam.Pipeline() as p:
      _ = (p
           | beam.Create([("daisy", "/data/flowers/daisy/1.jpg"),
                          ("daisy", "/data/flowers/daisy/2.png"),
                          ("tulips", "/data/flowers/tulips/1.jpg")])
           | exemplar.SampleImages(samples_per_class=1, root="/data/flowers")
           | exemplar.WriteDataset("/tmp/flowers_rows", image_size=(64, 64)))
  """

  def __init__(self, samples_per_class: Union[int, str] = 1, seed: int = 0,
               spares: int = DEFAULT_SPARES, root: str = "", splits=None,
               min_per_class: Optional[int] = None,
               max_per_class: Optional[int] = None):
    super().__init__()
    self._plan = check_sample_args(samples_per_class, spares, seed, splits,
                                   min_per_class, max_per_class)
    self._seed = seed
    self._spares = spares
    self._root = listing.normalize_root(root) if root else ""

  def default_label(self) -> str:
    return f"SampleImages(k={self._plan.describe()}, seed={self._seed})"

  def display_data(self):
    return {"samples_per_class": self._plan.describe(),
            "seed": DisplayDataItem(str(self._seed), label="Seed"),
            "spares": self._spares, "root": self._root}

  def expand(self, pcoll):
    root, plan = self._root, self._plan
    return (
        pcoll
        | "KeyByClass" >> beam.Map(keyed_path, root=root)
        # (class_name, relative path)
        | "CountOnce" >> beam.Distinct()
        | "Sample" >> beam.CombinePerKey(sampling.SeededPathSampleFn(
            self._seed, plan.capacity))
        # (class_name, PartialSample)
        | "ToClassSample" >> beam.MapTuple(
            lambda name, sample: to_class_sample(name, sample, root, plan, False))
        # ClassSample
    )

