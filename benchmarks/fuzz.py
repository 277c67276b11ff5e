"""Fuzz every loader and parser (issue 12): counts of tracebacks and accepted-but-invalid inputs.

Runs N hypothesis-generated inputs per loader (profiles, targets, plans, manifests, the runner's
JSON line, native-tool output; strategies and invariants in tests/fuzz_cases.py, shared with
tests/test_fuzz.py) and prints, per loader: cases, accepted, rejected cleanly (an EdgeError),
tracebacks (any other exception) and accepted-but-invalid (an object breaking its invariants).
Goal: 0 and 0. Exits 1 when either is non-zero, after printing the first example of each.

Usage: .venv/bin/python benchmarks/fuzz.py [--cases 1000] [--only plan,manifest] [--seed 0]
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fuzz_cases import LOADERS, Loader, classify  # noqa: E402


def fuzz(loader: Loader, cases: int, rng_seed: int) -> tuple[Counter, dict[str, tuple]]:
    """Outcome counts over ``cases`` generated inputs, and the first input and detail of each bad outcome."""
    counts: Counter = Counter()
    first: dict[str, tuple] = {}
    with tempfile.TemporaryDirectory(prefix=f"edge-fuzz-{loader.name}-") as tmp:
        @seed(rng_seed)
        @settings(max_examples=cases, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(loader.inputs)
        def run(case):
            outcome, detail = classify(loader, case, Path(tmp))
            counts[outcome] += 1
            if outcome in ("traceback", "invalid") and outcome not in first:
                first[outcome] = (case, detail)

        run()
    return counts, first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000, help="inputs per loader (default 1000)")
    parser.add_argument("--only", help="comma-separated loader names (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # loaders log what they probe; the table is the output
    wanted = args.only.split(",") if args.only else [lo.name for lo in LOADERS]
    header = f"{'loader':<14} {'cases':>6} {'accepted':>9} {'rejected cleanly':>17} {'tracebacks':>11} " \
             f"{'accepted-but-invalid':>21} {'s':>6}"
    print(header)
    print("-" * len(header))
    total: Counter = Counter()
    examples = []
    for loader in LOADERS:
        if loader.name not in wanted:
            continue
        start = time.perf_counter()
        counts, first = fuzz(loader, args.cases, args.seed)
        total.update(counts)
        print(f"{loader.name:<14} {sum(counts.values()):>6} {counts['accepted']:>9} {counts['rejected']:>17} "
              f"{counts['traceback']:>11} {counts['invalid']:>21} {time.perf_counter() - start:>6.1f}", flush=True)
        examples += [(loader.name, kind, case, detail) for kind, (case, detail) in first.items()]
    print("-" * len(header))
    print(f"{'total':<14} {sum(total.values()):>6} {total['accepted']:>9} {total['rejected']:>17} "
          f"{total['traceback']:>11} {total['invalid']:>21}")
    for name, kind, case, detail in examples:
        print(f"\n{name}: first {kind}; input {str(case)[:400]!r}\n{detail}")
    return 1 if total["traceback"] or total["invalid"] else 0


if __name__ == "__main__":
    sys.exit(main())
