"""Push throughput: `edge`'s SSH transport vs OpenSSH scp, 100 MB over loopback.

Starts a one-device lab on 127.0.0.1 (no namespace, no shaping), then times
  * scp (OpenSSH, its default cipher) of a 100 MB random file,
  * SshTransport.put of the same file (SFTP upload + sha256 check on the device + rename),
  * the raw SFTP upload part alone,
  * a re-push of the unchanged file (must move 0 bytes),
and prints MB/s for each and the ratios to scp (goal: put >= 0.9x scp).

    .venv/bin/python benchmarks/push.py [--size-mb 100] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.targets import get_target  # noqa: E402
from edge.transports import connect  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
from labtools import load_devicelab  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    lab = load_devicelab()
    with tempfile.TemporaryDirectory(prefix="edge-push-bench-") as tmp:
        state = lab.start(1, Path(tmp) / "lab", netns=False, rate_mbit=0)
        try:
            return run(args, Path(tmp), state)
        finally:
            lab.stop(Path(tmp) / "lab")


def run(args, tmp: Path, state: dict) -> int:
    target = get_target("lab0", state["targets_file"])
    src = tmp / "payload.bin"
    with open(src, "wb") as f:
        for _ in range(args.size_mb):
            f.write(os.urandom(1 << 20))
    size_mb = src.stat().st_size / 1e6
    scp = ["scp", "-q", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={target.known_hosts}",
           "-i", target.identity_file, "-P", str(target.port), str(src),
           f"{target.user}@{target.host}:{target.workdir}/scp.bin"]
    scp_s, put_s, raw_s = [], [], []
    with connect(target) as tr:
        for i in range(args.repeats):
            scp_s.append(timed(lambda: subprocess.run(scp, check=True)))
            tr.run(["rm", "-f", f"{target.workdir}/put.bin"], timeout_s=30)
            put_s.append(timed(lambda: tr.put(src, f"{target.workdir}/put.bin")))
            raw_s.append(timed(lambda: tr._upload(src, f"{target.workdir}/raw.bin", 600)))
        again = time_again = None
        start = time.perf_counter()
        again = tr.put(src, f"{target.workdir}/put.bin")
        time_again = time.perf_counter() - start
    scp_mbs = size_mb / statistics.median(scp_s)
    put_mbs = size_mb / statistics.median(put_s)
    raw_mbs = size_mb / statistics.median(raw_s)
    print(f"payload {size_mb:.0f} MB over loopback, median of {args.repeats}")
    print(f"  scp (OpenSSH)                 {scp_mbs:8.1f} MB/s")
    print(f"  edge put (upload+verify+mv)   {put_mbs:8.1f} MB/s   ratio {put_mbs / scp_mbs:.2f}x scp")
    print(f"  edge SFTP upload alone        {raw_mbs:8.1f} MB/s   ratio {raw_mbs / scp_mbs:.2f}x scp")
    print(f"  re-push unchanged: skipped={again.skipped} bytes_sent={again.bytes_sent} "
          f"in {time_again:.3f} s")
    return 0 if again.skipped and again.bytes_sent == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
