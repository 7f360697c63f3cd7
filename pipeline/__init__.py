"""exemplar's pipeline package: options, assembly, entry point and reader."""

from pipeline.reader import load_dataset

__all__ = ["load_dataset"]
