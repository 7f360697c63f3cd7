"""Stored splits: how each class's seeded sample is cut into TFDS splits.

Two forms, as `--splits` takes them (pure functions, no Beam, no TF):

  counts     train=5,validation=2   Each class's seeded order is cut in turn:
                                    the first split gets its first 5 ranks, the
                                    next the following 2, ... So the 'train' pick
                                    of train=1,validation=2 is the pick of a
                                    plain k=1 run, and no image is in two splits.
                                    A class short of the total fills the splits
                                    in order.
  fractions  train=80%,validation=20%
                                    Each image's split is fixed by its own
                                    seeded hash (its sampling priority, a uniform
                                    draw on [0, 1)): below 0.8 'train', then up
                                    to 1.0 'validation', as TFX ExampleGen's hash
                                    buckets, per class. Adding or removing files
                                    never moves an image to another split: a
                                    re-run on a grown tree has no leakage. Counts
                                    are about the fraction, not exact.

`--samples_per_class K` is `train=K`, `--samples_per_class P%` is `train=P%`.
"""

from __future__ import annotations

import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

DEFAULT_SPLIT = "train"
# TFDS split names: word characters; 'all' is TFDS's union of every split.
_SPLIT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_RESERVED = ("all",)
_PRIORITY_SPACE = 1 << 128  # sampling priorities are uniform on [0, 2**128)


class SplitSpec(NamedTuple):
  """One split: a per-class `count` or a per-class `fraction` (the other None)."""
  name: str
  count: Optional[int] = None
  fraction: Optional[float] = None

  def describe(self) -> str:
    if self.count is not None:
      return f"{self.name}={self.count}"
    return f"{self.name}={format_percent(self.fraction)}"


def format_percent(fraction: float) -> str:
  return f"{fraction * 100:.10g}%"


def _amount(name: str, text: str) -> SplitSpec:
  text = text.strip()
  if text.endswith("%"):
    try:
      percent = float(text[:-1])
    except ValueError:
      raise ValueError(f"split {name!r}: {text!r} is not a percentage") from None
    if not 0 < percent <= 100:
      raise ValueError(f"split {name!r}: a percentage must be above 0 and at most 100, "
                       f"got {text!r}")
    return SplitSpec(name, fraction=percent / 100)
  if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
    raise ValueError(f"split {name!r}: the count must be an integer >= 1 or a "
                     f"percentage such as 20%, got {text!r}")
  return SplitSpec(name, count=int(text))


SplitsArg = Union[str, Dict[str, Union[int, str]], Sequence]


def parse_splits(splits: SplitsArg) -> Tuple[SplitSpec, ...]:
  """'train=5,validation=2', 'train=80%,validation=20%', {'train': 5, ...} or
  [('train', '80%'), ...] -> SplitSpecs, in the order given. Raises ValueError
  for a malformed or invalid spec (see `check_splits`)."""
  if isinstance(splits, str):
    pairs = []
    for part in splits.split(","):
      if not part.strip():
        raise ValueError(f"splits {splits!r} has an empty entry")
      name, sep, amount = part.partition("=")
      if not sep:
        raise ValueError(f"splits entry {part.strip()!r} is not NAME=COUNT or NAME=P%")
      pairs.append((name.strip(), amount))
  elif isinstance(splits, dict):
    pairs = list(splits.items())
  else:
    pairs = [tuple(pair.partition("=")[::2]) if isinstance(pair, str) else tuple(pair)
             for pair in splits]
  specs = []
  for pair in pairs:
    if isinstance(pair, SplitSpec):
      specs.append(pair)
      continue
    if len(pair) != 2:
      raise ValueError(f"a split is (name, count or 'P%'), got {pair!r}")
    name, amount = pair
    if not isinstance(name, str):  # YAML reads `no:` as False, `1:` as 1
      raise ValueError(f"split name {name!r} is not a string (quote it in YAML)")
    specs.append(_amount(name.strip(), str(amount)))
  return check_splits(specs)


def check_splits(specs: Sequence[SplitSpec]) -> Tuple[SplitSpec, ...]:
  """Validates names (TFDS split names, unique) and amounts (all counts or
  all fractions summing to at most 100%); returns them as a tuple."""
  specs = tuple(specs)
  if not specs:
    raise ValueError("splits is empty")
  names = [s.name for s in specs]
  for name in names:
    if not _SPLIT_NAME.match(name) or name.lower() in _RESERVED:
      raise ValueError(f"split name {name!r} must start with a letter and hold only "
                       "letters, digits and '_' (and not be 'all'), as TFDS's")
  if len({name.lower() for name in names}) != len(names):
    # Shard names differing only in case collide on macOS and Windows.
    raise ValueError(f"splits names a split twice (case aside): {', '.join(names)}")
  kinds = {s.count is None for s in specs}
  if len(kinds) > 1:
    raise ValueError("splits must be all counts (train=5) or all percentages "
                     "(train=80%), not a mix")
  if is_fraction(specs) and sum(s.fraction for s in specs) > 1 + 1e-9:
    raise ValueError("split percentages add up to more than 100%")
  return specs


def is_fraction(specs: Sequence[SplitSpec]) -> bool:
  return bool(specs) and specs[0].fraction is not None


def total_count(specs: Sequence[SplitSpec]) -> int:
  """Count splits: the picks wanted per class (the sum of the counts)."""
  return sum(s.count for s in specs)


def allocate_counts(specs: Sequence[SplitSpec], wanted: int) -> List[Tuple[str, int]]:
  """Count splits: a class's `wanted` images (its seeded order's first
  ranks) cut in turn -> [(split, images)], every split listed."""
  out, left = [], wanted
  for spec in specs:
    n = min(spec.count, left)
    out.append((spec.name, n))
    left -= n
  return out


def fraction_bounds(specs: Sequence[SplitSpec]) -> List[Tuple[str, int]]:
  """Fraction splits -> [(split, upper priority bound)], ascending: a file
  of priority p is in the first split whose bound is above p (none: in no
  split, when the fractions add up to less than 100%)."""
  bounds, cumulative = [], 0.0
  for spec in specs:
    cumulative += spec.fraction
    bound = _PRIORITY_SPACE if cumulative >= 1 - 1e-12 else int(cumulative * _PRIORITY_SPACE)
    bounds.append((spec.name, bound))
  return bounds


def reserve_bounds(specs: Sequence[SplitSpec]) -> List[Tuple[str, int]]:
  """Fraction splits under 100%: the files above the fractions' sum (in no
  split) are cut the same way, in proportion -> [(split, upper bound)], so
  each such file can only ever top up one split (`min_per_class`)."""
  total = sum(spec.fraction for spec in specs)
  start = _PRIORITY_SPACE if total >= 1 - 1e-12 else int(total * _PRIORITY_SPACE)
  bounds, cumulative = [], 0.0
  for spec in specs:
    cumulative += spec.fraction / total
    bound = (_PRIORITY_SPACE if cumulative >= 1 - 1e-12
             else start + int(cumulative * (_PRIORITY_SPACE - start)))
    bounds.append((spec.name, bound))
  return bounds


def split_of(priority: int, bounds: Sequence[Tuple[str, int]]) -> Optional[str]:
  for name, bound in bounds:
    if priority < bound:
      return name
  return None


def bound_count(available: int, min_per_class: Optional[int],
                max_per_class: Optional[int]) -> Tuple[int, bool]:
  """A fraction split's images in one class -> (images to take, short?):
  at most `max_per_class`; short when fewer than `min_per_class` (or none)."""
  n = available if max_per_class is None else min(available, max_per_class)
  short = n == 0 or (min_per_class is not None and n < min_per_class)
  return n, short


def describe(specs: Sequence[SplitSpec]) -> str:
  return ",".join(s.describe() for s in specs)
