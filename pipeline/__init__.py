"""exemplar: a seeded, balanced per-class sample of an image folder, as TFRecords.

The public API, for use inside your own Beam pipeline:

    import apache_beam as beam
    import exemplar

    with beam.Pipeline() as p:
      (p | exemplar.SampleImageFolder("/data/flowers", samples_per_class=2, seed=7)
         | exemplar.WriteDataset("/tmp/flowers_pick", image_size=(128, 128)))

    ds = exemplar.load_dataset("/tmp/flowers_pick")

  SampleImageFolder   PBegin -> ClassSample per class folder (lists and samples where it lists)
  SampleImages        (class_name, path) from any source -> ClassSample per class
  ReadImageList       PBegin -> ListedImage per row of a CSV/JSONL list file
  WriteDataset        ClassSample -> one DatasetWritten, once the dataset is committed
  load_dataset        a finished dataset as a tf.data.Dataset

This package is the repository's pipeline/ folder (setup.py maps it); the
stages are exemplar.transforms (transforms/), the shipped configs
exemplar.configs (configs/).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Each public name's module, imported on first use (PEP 562): `import exemplar`
# costs nothing, and a script that needs only the image ops (e.g.
# exemplar.transforms.decoding) never imports Apache Beam.
_EXPORTS = {
    "ClassSample": "exemplar.transforms.sampling",
    "DatasetExists": "exemplar.transforms.commit",
    "DatasetWritten": "exemplar.transforms.write_dataset",
    "DecodeFailure": "exemplar.transforms.decoding",
    "ListFileError": "exemplar.transforms.list_file",
    "ListedImage": "exemplar.transforms.list_file",
    "ListingError": "exemplar.transforms.listing",
    "OutputError": "exemplar.transforms.commit",
    "OutputLocked": "exemplar.transforms.lock",
    "Pick": "exemplar.transforms.sampling",
    "ReadImageList": "exemplar.transforms.list_file",
    "SampleImageFolder": "exemplar.transforms.sample_images",
    "SampleImages": "exemplar.transforms.sample_images",
    "WriteDataset": "exemplar.transforms.write_dataset",
    "load_dataset": "exemplar.reader",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see
  from exemplar.reader import load_dataset  # noqa: F401
  from exemplar.transforms.commit import DatasetExists, OutputError  # noqa: F401
  from exemplar.transforms.decoding import DecodeFailure  # noqa: F401
  from exemplar.transforms.list_file import (ListedImage, ListFileError,  # noqa: F401
                                             ReadImageList)
  from exemplar.transforms.listing import ListingError  # noqa: F401
  from exemplar.transforms.lock import OutputLocked  # noqa: F401
  from exemplar.transforms.sample_images import SampleImageFolder, SampleImages  # noqa: F401
  from exemplar.transforms.sampling import ClassSample, Pick  # noqa: F401
  from exemplar.transforms.write_dataset import DatasetWritten, WriteDataset  # noqa: F401


def __getattr__(name: str):
  module = _EXPORTS.get(name)
  if module is None:
    raise AttributeError(f"module 'exemplar' has no attribute {name!r}")
  value = getattr(importlib.import_module(module), name)
  globals()[name] = value  # later lookups skip this function
  return value


def __dir__():
  return sorted(set(globals()) | set(__all__))
