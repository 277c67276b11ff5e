#!/usr/bin/env python3
"""`make demo`: the main job on this machine, offline, in a few minutes.

1. Plans tiny-cnn for a Raspberry Pi 4, exports it to every backend, validates each artifact
   against the eager model, measures it on the built-in `local` target and writes the report.
2. Does the same for tiny-llama, a small language model with a KV cache: every backend
   generates 32 tokens from a 32-token prompt on `local`, and the table shows time to first
   token and prefill/decode tokens per second.

Rerunning resumes from the output folders' state.json and finishes in seconds.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.cli import main  # noqa: E402

JOBS = [
    ("demo-out", ["compare", "tiny-cnn", "--profile", "raspberry-pi-4-4gb", "--target", "local",
                  "--backends", "all"]),
    ("demo-out-llm", ["compare", "tiny-llama", "--profile", "raspberry-pi-5-8gb", "--target", "local",
                      "--backends", "all", "--threads", "1", "--new-tokens", "32"]),
]


def run() -> int:
    codes = []
    for folder, argv in JOBS:
        argv = [*argv, "-o", str(REPO / folder)]
        print("$ edge " + " ".join(argv), flush=True)
        codes.append(main(argv))
        report = REPO / folder / "report.html"
        if report.exists():
            print(f"\nopen the report: file://{report}\n")
    print("other views: edge results list | edge results show latest | edge report latest -o report.html")
    return max(codes)


if __name__ == "__main__":
    sys.exit(run())
