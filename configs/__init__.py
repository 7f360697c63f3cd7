"""The YAML configs shipped with exemplar (package data, so Dataflow workers and
installed copies have them too)."""

import os

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


def path(name: str) -> str:
  """The path of a shipped config, e.g. path('local.yaml')."""
  return os.path.join(CONFIG_DIR, name)
