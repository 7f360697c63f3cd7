"""PNG encoder benchmark for exemplar (256x256 RGB uint8)."""
import os, sys, time, threading, statistics, io, glob, json
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

ROOT = "/root/.cache/exemplar/demo-tree-v1"

def load_images():
  photos = []
  for path in sorted(glob.glob(ROOT + "/**/*", recursive=True)):
    if not os.path.isfile(path): continue
    try:
      img = tf.image.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except Exception:
      continue
    img = tf.image.resize(img, (256, 256), method="bilinear")
    img = tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8)
    photos.append(np.ascontiguousarray(img.numpy()))
  rng = np.random.default_rng(0)
  noise = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
  flat = np.full((256, 256, 3), (200, 120, 40), np.uint8)
  return photos, noise, flat

def encoders():
  out = {}
  @tf.function(input_signature=[tf.TensorSpec([256, 256, 3], tf.uint8)])
  def _ident(x): return x
  fns = {}
  for level in (1, 0, -1):
    f = tf.function(lambda x, level=level: tf.io.encode_png(x, compression=level),
                    input_signature=[tf.TensorSpec([256, 256, 3], tf.uint8)])
    fns[level] = f
    # input is a tensor already (as in exemplar's graph); .numpy() to get bytes
    out[f"tf.io.encode_png|compression={level}" + (" (today)" if level == 1 else "")] = (
        lambda a, f=f: f(a).numpy(), "tf", level)
  try:
    from PIL import Image
    import PIL
    for lvl in (0, 1):
      def pil(a, lvl=lvl):
        b = io.BytesIO(); Image.fromarray(a).save(b, format="PNG", compress_level=lvl, optimize=False)
        return b.getvalue()
      out[f"Pillow {PIL.__version__}|compress_level={lvl}"] = (pil, "PIL", False)
  except ImportError: pass
  try:
    import cv2
    cv2.setNumThreads(1)
    S = {"default": None, "RLE": cv2.IMWRITE_PNG_STRATEGY_RLE,
         "HUFFMAN_ONLY": cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
         "FILTERED": cv2.IMWRITE_PNG_STRATEGY_FILTERED}
    for lvl in (0, 1):
      for sname, s in S.items():
        if lvl == 0 and sname != "default": continue
        params = [cv2.IMWRITE_PNG_COMPRESSION, lvl] + ([cv2.IMWRITE_PNG_STRATEGY, s] if s is not None else [])
        def cv(a, params=params):
          ok, buf = cv2.imencode(".png", cv2.cvtColor(a, cv2.COLOR_RGB2BGR), params)
          assert ok
          return buf.tobytes()
        out[f"OpenCV {cv2.__version__} imencode|level={lvl} strategy={sname} (+RGB2BGR)"] = (cv, "cv2", False)
  except ImportError: pass
  try:
    import imagecodecs as ic
    for lvl in (0, 1):
      out[f"imagecodecs {ic.__version__} png_encode|level={lvl}"] = (lambda a, l=lvl: ic.png_encode(a, level=l), "ic", False)
    out[f"imagecodecs png_encode|level=1 strategy=RLE filter=SUB"] = (
        lambda a: ic.png_encode(a, level=1, strategy=3, filter=16), "ic", False)
    out[f"imagecodecs png_encode|level=1 strategy=HUFFMAN_ONLY filter=SUB"] = (
        lambda a: ic.png_encode(a, level=1, strategy=2, filter=16), "ic", False)
    out[f"imagecodecs png_encode|level=1 filter=NONE"] = (
        lambda a: ic.png_encode(a, level=1, filter=8), "ic", False)
    for lvl in (0, 1):
      out[f"imagecodecs spng_encode (libspng {ic.spng_version()})|level={lvl}"] = (
          lambda a, l=lvl: ic.spng_encode(a, level=l), "ic", False)
  except ImportError: pass
  try:
    import fpng
    out[f"fpng 0.1.0 (PyPI 'fpng', 1 release)|default"] = (lambda a: fpng.from_ndarray(a), "fpng", False)
  except ImportError: pass
  import struct, zlib
  def container(comp, filt):
    def enc(a):
      h, w, c = a.shape
      rows = np.empty((h, 1 + w * c), np.uint8)
      flat = a.reshape(h, w * c)
      if filt == "UP":
        rows[:, 0] = 2; rows[0, 1:] = flat[0]; np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])
      elif filt == "SUB":
        rows[:, 0] = 1; rows[:, 1:c + 1] = flat[:, :c]; np.subtract(flat[:, c:], flat[:, :-c], out=rows[:, c + 1:])
      else:
        rows[:, 0] = 0; rows[:, 1:] = flat
      data = comp(rows.tobytes())
      def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
      ihdr = struct.pack(">IIBBBBB", w, h, 8, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
      return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    return enc
  libs = {}
  try:
    from isal import isal_zlib; libs["isal 1.9.1 (ISA-L)"] = {0: lambda b: isal_zlib.compress(b, 0), 1: lambda b: isal_zlib.compress(b, 1)}
  except ImportError: pass
  try:
    import zlib_ng.zlib_ng as zn; libs["zlib-ng 1.1.0"] = {1: lambda b: zn.compress(b, 1)}
  except ImportError: pass
  try:
    import deflate; libs["deflate 0.9.0 (libdeflate)"] = {1: lambda b: deflate.zlib_compress(b, 1)}
  except ImportError: pass
  libs["stdlib zlib"] = {1: lambda b: zlib.compress(b, 1)}
  for lib, levels in libs.items():
    for lvl, comp in levels.items():
      for filt in ("UP", "SUB"):
        out[f"hand-rolled PNG + {lib}|level={lvl} filter={filt}"] = (container(comp, filt), "raw", False)
  return out

def time_set(fn, images, passes):
  # one-thread timing: min/median over passes of (pass time / n images)
  per = []
  for _ in range(passes):
    t = time.perf_counter()
    for a in images: fn(a)
    per.append((time.perf_counter() - t) / len(images) * 1e3)
  return min(per), statistics.median(per)

def gil_released(fn):
  big = np.random.default_rng(1).integers(0, 256, (3072, 3072, 3), dtype=np.uint8)
  big = np.ascontiguousarray(big)
  # baseline counter rate
  def spin(seconds):
    n = 0; end = time.perf_counter() + seconds
    while time.perf_counter() < end: n += 1
    return n
  # longest stall of the main thread while another thread runs one long encode:
  # ~ the whole encode if the GIL is held, a scheduler tick if released
  done = threading.Event(); dur = [0]
  def work():
    t = time.perf_counter(); fn(big); dur[0] = time.perf_counter() - t; done.set()
  old = sys.getswitchinterval(); sys.setswitchinterval(1e-4)
  th = threading.Thread(target=work); gap = 0.0
  last = time.perf_counter(); th.start()
  while not done.is_set():
    now = time.perf_counter(); gap = max(gap, now - last); last = now
  th.join(); sys.setswitchinterval(old)
  return gap / dur[0], dur[0]

def main():
  photos, noise, flat = load_images()
  print("photos:", len(photos), file=sys.stderr)
  encs = encoders()
  only = sys.argv[1:] 
  tfds_image = None
  try:
    import tensorflow_datasets as tfds
    tfds_image = tfds.features.Image(shape=(256, 256, 3), encoding_format="png")
  except Exception as e:
    print("no tfds", e, file=sys.stderr)
  results = []
  for name, (fn, kind, _) in encs.items():
    if only and not any(o in name for o in only): continue
    # exemplar hands TF the tensor; other encoders get the numpy array
    inputs = [tf.constant(a) for a in photos] if kind == "tf" else photos
    ninp = tf.constant(noise) if kind == "tf" else noise
    finp = tf.constant(flat) if kind == "tf" else flat
    for a in inputs[:3]: fn(a)  # warm
    pmin, pmed = time_set(fn, inputs, 15)
    nmin, nmed = time_set(fn, [ninp] * 10, 10)
    fmin, fmed = time_set(fn, [finp] * 10, 10)
    sizes = [len(fn(a)) for a in inputs]
    # round trip + determinism
    exact = True; tfds_ok = None; det = True
    for a, inp in list(zip(photos, inputs)) + [(noise, ninp), (flat, finp)]:
      b = fn(inp)
      det &= (b == fn(inp))
      d = tf.io.decode_png(b, channels=0).numpy()
      exact &= (d.shape == a.shape and d.dtype == np.uint8 and np.array_equal(d, a))
      d3 = tf.io.decode_png(b, channels=3).numpy(); exact &= np.array_equal(d3, a)
      if tfds_image is not None:
        t = tfds_image.decode_example(tf.constant(b)).numpy()
        tfds_ok = (tfds_ok is not False) and np.array_equal(t, a)
    gil, gdur = gil_released((lambda a, l=encs[name][2]: tf.io.encode_png(tf.constant(a), compression=l).numpy()) if kind == "tf" else fn)
    r = dict(name=name, photo_min=pmin, photo_med=pmed, noise_min=nmin, flat_min=fmin,
             bytes_mean=float(np.mean(sizes)), noise_bytes=len(fn(ninp)), flat_bytes=len(fn(finp)),
             exact=bool(exact), tfds=tfds_ok, deterministic=bool(det), gil_ratio=gil, big_s=gdur)
    results.append(r)
    print(json.dumps(r), flush=True)

if __name__ == "__main__":
  main()
