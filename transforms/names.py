"""The name of every file and folder exemplar writes in an output folder,
defined once (the shard names follow TFDS's default file template)."""

import re

DATASET_NAME = "exemplar"
SPLIT = "train"
SHARD_SUFFIX = "tfrecord"  # TFDS's filetype_suffix of the shards

SUCCESS_MARKER = "_SUCCESS"          # written last: the dataset is complete
FILES_RECORD = "exemplar_files.json"  # the dataset's own files, with sizes
STAGING_DIR = ".exemplar-staging"    # everything is written here first
LOCK_FILE = ".exemplar-lock"         # held by the one run writing the folder

CLASS_NAMES_FILE = "class_names.txt"
MANIFEST_FILE = "manifest.csv"
ERRORS_FILE = "errors.csv"
CHANGES_FILE = "changes.csv"         # what changed since the dataset it replaced
SUMMARY_JSON = "summary.json"
SUMMARY_TEXT = "summary.txt"
TFDS_INFO = "dataset_info.json"
TFDS_FEATURES = "features.json"
TFDS_LABELS = "label.labels.txt"     # TFDS's names file of the 'label' ClassLabel
SHEET_FILE = "contact_sheet.png"     # further pages: contact_sheet-002.png, ...
REPORT_FILE = "report.html"          # one self-contained page for a label audit
TRANSFORM_DIR = "transform"          # the TFT graph
TRANSFORM_SUBDIRS = ("transform_fn", "transformed_metadata", "metadata")

# What every run writes under these exact names; a file of the user's by one
# of these names in the output folder would be replaced, so a run refuses it.
FIXED_FILES = (CLASS_NAMES_FILE, MANIFEST_FILE, ERRORS_FILE, CHANGES_FILE, SUMMARY_JSON,
               SUMMARY_TEXT, TFDS_INFO, TFDS_FEATURES, TFDS_LABELS, SHEET_FILE,
               REPORT_FILE)


def shard_file_name(index: int, num_shards: int, split: str = SPLIT) -> str:
  """TFDS's default file name template for a shard:
  'exemplar-train.tfrecord-00003-of-00008'."""
  return f"{DATASET_NAME}-{split}.{SHARD_SUFFIX}-{index:05d}-of-{num_shards:05d}"


# Any shard's name, any split: what a reader takes for a shard of the folder.
SHARD_NAME = re.compile(
    re.escape(DATASET_NAME) + r"-[^.]+\." + re.escape(SHARD_SUFFIX) + r"-\d{5}-of-\d{5}")
