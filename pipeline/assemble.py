"""The `exemplar` command's job: the public PTransforms joined into one data flow.

    class folders                       SampleImageFolder  transforms/sample_images.py
      (or a list file                   ReadImageList      transforms/list_file.py
       -> its (class, path) rows        SampleImages       transforms/sample_images.py)
      -> ClassSample per class
      -> a finished dataset             WriteDataset       transforms/write_dataset.py
      -> DatasetWritten

A user's own Beam pipeline composes the same PTransforms (README, "Use it in
your own Beam pipeline").
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Dict, Optional, Sequence, Tuple, Union

import apache_beam as beam

from exemplar.options import ExemplarConfig
from exemplar.transforms.bottom_k import SampledClass
from exemplar.transforms.sample_images import SampleImageFolder, SampleImages
from exemplar.transforms.write_dataset import WriteDataset


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """What the driver resolves before building the pipeline."""
  input_dir: Optional[str]  # None with a list file
  output_dir: str
  class_names: Optional[Tuple[str, ...]]  # None: the list file's labels, sorted
  input_list: Optional[str] = None
  # The token of the output folder's lock, also written into the dataset's
  # files record by its commit: tells this run's dataset from an earlier one.
  run_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)


def sampling_args(config: ExemplarConfig) -> Tuple[Union[int, str], Dict]:
  """(samples_per_class, the other sampling arguments) of
  SampleImageFolder/SampleImages for `config`."""
  k = config.samples_per_class
  if config.splits is not None:
    k = "all" if config.sample_all else 1
  return k, dict(seed=config.seed, spares=config.spares, splits=config.splits,
                 min_per_class=config.min_per_class, max_per_class=config.max_per_class)


def build(p: beam.Pipeline, config: ExemplarConfig, plan: RunPlan,
          run_info: Optional[dict] = None,
          prelisted: Optional[Sequence[SampledClass]] = None):
  """Adds the whole exemplar job to pipeline `p`; returns its
  PCollection[DatasetWritten]. `run_info` (fingerprints, start time) goes
  into summary.json's "run"; `prelisted`: the class folders already listed
  and sampled (exemplar.prelist)."""
  k, sampling = sampling_args(config)
  failures = None
  if plan.input_list is not None:
    from exemplar.transforms import list_file
    listed = p | "ReadImageList" >> list_file.ReadImageList(plan.input_list)
    failures = listed.failures
    samples = listed.images | "Sample" >> SampleImages(
        k, root=list_file.list_folder(plan.input_list), **sampling)
  else:
    samples = p | "Sample" >> SampleImageFolder(
        plan.input_dir, k, class_names=plan.class_names, prelisted=prelisted, **sampling)
  # ClassSample per class
  image = config.image
  return samples | "WriteDataset" >> WriteDataset(
      plan.output_dir, image_size=(image.height, image.width),
      interpolation=image.interpolation,
      crop_to_aspect_ratio=image.crop_to_aspect_ratio, color_mode=image.color_mode,
      image_format=image.image_format, jpeg_quality=image.jpeg_quality,
      png_compression=image.png_compression, class_names=plan.class_names,
      num_shards=config.num_shards, max_pixels=config.max_pixels,
      exif_transpose=config.exif_transpose, contact_sheet=config.contact_sheet,
      overwrite=config.overwrite,
      failures=failures, description=dict(config.describe(), run=run_info or {}),
      seed=config.seed, compare_to=config.compare_to,
      run_id=plan.run_id)
  # DatasetWritten
