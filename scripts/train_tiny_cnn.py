#!/usr/bin/env python3
"""Train tiny-cnn on the synthetic oriented-grating task and write edge/models/weights/tiny_cnn.pt.

Deterministic (fixed seeds, one thread). Prints train and held-out accuracy.

    .venv/bin/python scripts/train_tiny_cnn.py [--steps 1500]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.models.tiny import (EVAL_SEED, SEED, TRAIN_SEED, WEIGHTS, TinyCNN,  # noqa: E402
                              oriented_gratings)


def accuracy(model: TinyCNN, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--train-images", type=int, default=6000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    images, labels = oriented_gratings(args.train_images, TRAIN_SEED)
    test_images, test_labels = oriented_gratings(512, EVAL_SEED + 1000)
    model = TinyCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.steps)
    gen = torch.Generator().manual_seed(SEED)
    for step in range(args.steps):
        model.train()
        idx = torch.randint(0, len(images), (64,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == args.steps - 1:
            print(f"step {step:5d} loss {loss.item():.3f}")
    print(f"train accuracy {accuracy(model, images[:1024], labels[:1024]):.3f}, "
          f"held-out accuracy {accuracy(model, test_images, test_labels):.3f}")
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = WEIGHTS.with_suffix(".tmp")
    torch.save(model.eval().state_dict(), tmp)
    tmp.replace(WEIGHTS)
    print(f"wrote {WEIGHTS} ({WEIGHTS.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
