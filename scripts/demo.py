#!/usr/bin/env python3
"""`make demo`: the main job on this machine, offline, in a few minutes.

Plans tiny-cnn for a Raspberry Pi 4, exports it to every backend, validates each
artifact against the eager model, measures it on the built-in `local` target and
writes the report. Rerunning resumes from demo-out/state.json and finishes in seconds.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.cli import main  # noqa: E402

OUT = REPO / "demo-out"
ARGV = ["compare", "tiny-cnn", "--profile", "raspberry-pi-4-4gb", "--target", "local",
        "--backends", "all", "-o", str(OUT)]


def run() -> int:
    print("$ edge " + " ".join(ARGV), flush=True)
    code = main(ARGV)
    report = OUT / "report.html"
    if report.exists():
        print(f"\nopen the report: file://{report}")
        print("other views: edge results list | edge results show latest | "
              f"edge report latest -o report.html")
    return code


if __name__ == "__main__":
    sys.exit(run())
