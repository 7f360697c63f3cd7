import sys, time, numpy as np, statistics
sys.argv = ["x"]
import bench, tensorflow as tf
photos, noise, flat = bench.load_images()
encs = bench.encoders()
import imagecodecs as ic
# byte identity of stored PNGs
same = all(ic.spng_encode(a, level=0) == tf.io.encode_png(a, compression=0).numpy() for a in photos + [noise, flat])
print("spng level0 == TF compression0 bytes:", same)
for a in [photos[0][..., :1].copy(), np.dstack([photos[0], photos[0][..., :1]]).copy()]:
  b = ic.spng_encode(a, level=0); print(a.shape, b == tf.io.encode_png(a, compression=0).numpy(), np.array_equal(tf.io.decode_png(b, channels=0).numpy(), a))
keys = [k for k in encs if any(s in k for s in ["(today)", "compression=0", "spng_encode (libspng libspng 0.7.4)|level=0", "fpng", "isal 1.9.1 (ISA-L)|level=1", "libdeflate)|level=1 filter=UP", "RLE filter=SUB", "png_encode|level=1", "OpenCV 5.0.0 imencode|level=1 strategy=default", "Pillow 13.0.0|compress_level=1"])]
for k in keys:
  fn, kind, _ = encs[k]
  inputs = [tf.constant(a) for a in photos] if kind == "tf" else photos
  per = []
  for a in inputs:
    ts = []
    for _ in range(25):
      t = time.perf_counter(); fn(a); ts.append(time.perf_counter() - t)
    per.append((min(ts), statistics.median(ts)))
  print(f"{k[:75]:75s} mean-of-min {np.mean([p[0] for p in per])*1e3:6.2f} ms  mean-of-median {np.mean([p[1] for p in per])*1e3:6.2f} ms", flush=True)
