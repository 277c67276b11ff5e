#!/usr/bin/env python3
"""Sample tiny-lm's calibration and evaluation text from the fp32 model; writes edge/models/weights/tiny_lm_samples.pt.

Deterministic (fixed seeds, one thread); tests/test_models.py checks the shipped file equals a fresh sample.

    .venv/bin/python scripts/sample_tiny_lm.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.models.tiny_lm import SAMPLES, build_tiny_lm, sampled_text  # noqa: E402


def main() -> int:
    text = sampled_text(build_tiny_lm())
    torch.save(text, SAMPLES)
    print(f"wrote {SAMPLES}: calib {tuple(text['calib'].shape)}, eval {tuple(text['eval'].shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
