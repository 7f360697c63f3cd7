"""exemplar's pipeline package: options, assembly, entry point and reader."""

from exemplar.reader import load_dataset

__all__ = ["load_dataset"]
