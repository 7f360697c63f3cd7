import glob, time, numpy as np, os
from exemplar.transforms.decoding import ImageDecoder, ImageSettings
raws = [open(p,'rb').read() for p in sorted(glob.glob('/root/.cache/exemplar/demo-tree-v1/**/*.jpg', recursive=True))][:20]
for enc in ("zlib1", "stored"):
  d = ImageDecoder(ImageSettings(png_encoder=enc))
  for r in raws: d.decode(r)
  per = []
  for r in raws:
    ts = []
    for _ in range(10):
      t = time.perf_counter(); d.decode(r); ts.append(time.perf_counter() - t)
    per.append(min(ts))
  print(enc, f"decode+resize+encode mean-of-min {np.mean(per)*1e3:.2f} ms/image, bytes {np.mean([len(d.decode(r).encoded) for r in raws]):.0f}")
