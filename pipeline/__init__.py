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

from exemplar.reader import load_dataset
from exemplar.transforms.commit import DatasetExists, OutputError
from exemplar.transforms.decoding import DecodeFailure
from exemplar.transforms.list_file import ListedImage, ListFileError, ReadImageList
from exemplar.transforms.listing import ListingError
from exemplar.transforms.lock import OutputLocked
from exemplar.transforms.sample_images import SampleImageFolder, SampleImages
from exemplar.transforms.sampling import ClassSample, Pick
from exemplar.transforms.write_dataset import DatasetWritten, WriteDataset

__all__ = [
    "ClassSample", "DatasetExists", "DatasetWritten", "DecodeFailure", "ListFileError", "ListedImage",
    "ListingError", "OutputError", "OutputLocked", "Pick", "ReadImageList",
    "SampleImageFolder", "SampleImages", "WriteDataset", "load_dataset",
]
