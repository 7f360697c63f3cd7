# exemplar as a Dataflow Flex Template, one image for the launcher and the workers.
#
# The Flex Template launcher runs FLEX_TEMPLATE_PYTHON_PY_FILE in this image to
# build and submit the job; launched with `sdk_container_image` set to this
# same image, the workers start with exemplar and its pinned dependencies
# (TensorFlow, TFT, TFDS) already installed, instead of pip-installing them
# from setup.py on every worker. Build and run: README.md, "Scaling out".
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/exemplar:0.2.0 .

ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0

# The launcher binary, from Google's Python Flex Template launcher image.
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base AS template_launcher

# Beam's SDK worker image for the Beam release setup.py pins.
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}

COPY --from=template_launcher /opt/google/dataflow/python_template_launcher \
     /opt/google/dataflow/python_template_launcher

WORKDIR /template
COPY setup.py ./
COPY pipeline/ pipeline/
COPY transforms/ transforms/
COPY configs/ configs/

# The package with the exact pins of setup.py (apache-beam[gcp,dask]==2.77.0
# matches the base image's SDK, so pip keeps it).
RUN pip install --no-cache-dir . \
 && python -c "import apache_beam, tensorflow, tensorflow_transform, exemplar.main"

# The launcher's script. It imports the installed package (a script's folder
# comes first on sys.path, so it lives outside the source folders), runs on
# Dataflow unless told otherwise, and turns the
# template's --name=value parameters into exemplar's flags: --image_size=H,W
# (or HxW) and --flag=true|false.
# tests/test_dataflow.py runs these exact lines.
RUN printf '%s\n' \
  'import sys' \
  'from exemplar.main import main' \
  'SWITCHES = {"--crop_to_aspect_ratio", "--overwrite", "--exif_transpose", "--no_contact_sheet"}' \
  'def flags(argv):' \
  '  if not any(arg.startswith("--runner") for arg in argv):' \
  '    yield "--runner=DataflowRunner"' \
  '  for arg in argv:' \
  '    name, _, value = arg.partition("=")' \
  '    if name == "--image_size" and value:' \
  '      yield name' \
  '      yield from value.replace("x", ",").split(",")' \
  '    elif name in SWITCHES and value:' \
  '      if value.strip().lower() in ("true", "yes", "1"):' \
  '        yield name' \
  '    else:' \
  '      yield arg' \
  'sys.exit(main(list(flags(sys.argv[1:]))))' \
  > /template/exemplar_flex_main.py

ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/exemplar_flex_main.py
# Everything is installed: the launcher must not stage or install anything more.
ENV PIP_NO_DEPS=True
ENV TF_CPP_MIN_LOG_LEVEL=2

# Workers start Beam's SDK harness; the launcher calls its own binary.
ENTRYPOINT ["/opt/apache/beam/boot"]
