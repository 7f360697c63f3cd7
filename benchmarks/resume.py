"""Resume saving: an undisturbed `all` run vs a run killed (SIGKILL) once half
of its shards are recorded complete, and its rerun with the same flags.

    python benchmarks/resume.py [TREE]   (default: the `photos` tree of trees.py)

Prints the three times, the saving and whether the rerun's shards and manifest
equal the undisturbed run's byte for byte.
"""
import os, shutil, signal, subprocess, sys, time
EX = os.path.join(os.path.dirname(sys.executable), "exemplar")
TREE = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.environ.get("EXEMPLAR_BENCH_TREES", "/tmp/exemplar-bench-trees"), "photos-100x100-v1")
FULL, KILLED = "/tmp/exemplar-resume-full", "/tmp/exemplar-resume-killed"
ARGS = ["--input_dir", TREE, "--samples_per_class", "all", "--image_size", "256", "256",
        "--num_shards", "40"]
def run(out):
  t = time.monotonic()
  subprocess.run([EX, "--output_dir", out, *ARGS], check=True, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
  return time.monotonic() - t
for d in (FULL, KILLED):
  shutil.rmtree(d, ignore_errors=True)
full = run(FULL)
out = KILLED
t = time.monotonic()
p = subprocess.Popen([EX, "--output_dir", out, *ARGS], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
def done():
  return sum(n.startswith(".done-") for _, _, ns in os.walk(os.path.join(out, ".exemplar-staging")) for n in ns)
while done() < 20 and p.poll() is None:
  time.sleep(0.05)
os.kill(p.pid, signal.SIGKILL); p.wait()
killed_at = time.monotonic() - t
recorded = done()
rerun = run(out)
same = all(open(os.path.join(FULL, n), "rb").read() == open(os.path.join(out, n), "rb").read()
           for n in os.listdir(FULL) if n.startswith("exemplar-train") or n == "manifest.csv")
print(f"undisturbed {full:.1f} s; killed after {killed_at:.1f} s with {recorded}/40 shards recorded; "
      f"rerun {rerun:.1f} s (saved {full - rerun:.1f} s, {100 * (full - rerun) / full:.0f}%); byte-identical: {same}")
