"""The paired difference of two `bench/quality.py --scores-out` files of one seed (same test queries):
mean per-query nDCG@10 of an arm in B minus in A, with its paired bootstrap 95% CI.

    .venv/bin/python bench/compare_scores.py off.json on.json [--arm default] [--json]

e.g. the catalog objective's effect: `quality.py --catalog off --scores-out off.json`, then
`--catalog on --arms default --scores-out on.json`, then this.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.evaluation.metrics import paired_bootstrap_ci


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--arm", default="default", help="the arm to compare: default or plain")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    a, b = (json.loads(path.read_text()) for path in (args.a, args.b))
    if a["queries"] != b["queries"]:
        parser.error(f"{args.a} and {args.b} score different test queries (seeds {a['seed']} and {b['seed']})")
    missing = [str(path) for path, scores in ((args.a, a), (args.b, b)) if args.arm not in scores["ndcg10"]]
    if missing:
        parser.error(f"no {args.arm} arm in {', '.join(missing)}")
    before, after = np.array(a["ndcg10"][args.arm]), np.array(b["ndcg10"][args.arm])
    low, high = paired_bootstrap_ci(before, after, seed=a["seed"])
    difference = float(after.mean() - before.mean())
    print(f"{args.arm}: nDCG@10 {before.mean():.4f} ({args.a.name}) -> {after.mean():.4f} ({args.b.name}): "
          f"{difference:+.4f}, 95% CI [{low:+.4f}, {high:+.4f}] over {len(before)} test queries")
    if args.json:
        print(json.dumps({"difference": difference, "ci_low": low, "ci_high": high, "queries": len(before)}))


if __name__ == "__main__":
    main()
