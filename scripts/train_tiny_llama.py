#!/usr/bin/env python3
"""Train tiny-llama (byte-level) on the shipped calibration text; writes edge/models/weights/tiny_llama.pt.

Deterministic (fixed seed, one thread). Prints the perplexity on the calibration and evaluation texts.

    .venv/bin/python scripts/train_tiny_llama.py [--steps 600]
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.models.lm import TINY_LLAMA, WEIGHTS, byte_encode, read_text  # noqa: E402
from edge.models.llama import Llama  # noqa: E402

SEQ = 128


@torch.no_grad()
def perplexity(model: Llama, ids: torch.Tensor, windows: int = 16) -> float:
    stride = (len(ids) - SEQ - 1) // windows
    nll = []
    for i in range(windows):
        x = ids[i * stride: i * stride + SEQ + 1]
        logits = model(x[None, :-1])
        nll.append(torch.nn.functional.cross_entropy(logits[0], x[1:]).item())
    return math.exp(sum(nll) / len(nll))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train = torch.tensor(byte_encode(read_text("calib")), dtype=torch.long)
    held = torch.tensor(byte_encode(read_text("eval")), dtype=torch.long)
    model = Llama(TINY_LLAMA)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(1)
    for step in range(args.steps):
        starts = torch.randint(0, len(train) - SEQ - 1, (args.batch,), generator=gen)
        batch = torch.stack([train[s: s + SEQ + 1] for s in starts.tolist()])
        logits = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.3f}", flush=True)
    model.eval()
    print(f"perplexity: calibration text {perplexity(model, train):.2f}, evaluation text {perplexity(model, held):.2f}")
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, WEIGHTS)
    print(f"wrote {WEIGHTS} ({WEIGHTS.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
