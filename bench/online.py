"""Online benchmark: how many sessions an online test needs to tell a fine-tuned model from the base,
by team-draft interleaving (what the registry runs) against an A/B split of the same simulated traffic,
and whether the registry's own decision rule keeps its error rate when both sides are the same model.

Users are EVALUATION.md's (position-based clicks on the true labels), searching train-side queries only
(the test queries stay the offline report's). The tuned model is one the product fine-tuned, e.g. the
demo's (`es demo --state-dir /tmp/demo` leaves it in /tmp/demo/model, from the same corpus, sessions and
seed); its offline gain on the test queries is printed first.

- Sensitivity, over `--repetitions` seeded runs each: interleaving shows every search the merged list
  and counts sessions won by each model (team-draft credit); A/B sends each search to one model by a fair
  coin and compares the clicks per session of the two arms (two-sided Mann-Whitney U). Sessions to
  decision = the first multiple of `--step` from which a fixed-sample test (the sign test for
  interleaving) stays at p < alpha at every later look up to `--cap`: a measure of sensitivity, the same
  for both (the registry decides with its sequential rule, also measured, which needs more sessions to
  stay valid under its looks). Printed: each method's median and the ratio.
- A/A, over `--aa-repetitions` runs: the base against itself, interleaved, decided by
  `services.registry.experiments.decide` with the registry's defaults, looked at every
  `--sessions-per-poll` sessions; the share of runs that declare either side the winner must stay at or
  below alpha plus two standard errors.

    .venv/bin/python bench/online.py --tuned /tmp/demo/model [--items F --queries F] [--seed 0]
        [--repetitions 20] [--aa-repetitions 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from scipy.stats import binomtest, mannwhitneyu  # noqa: E402

from services.api.embedding_studio.v1 import registry_pb2 as pb  # noqa: E402
from services.api.embedding_studio.v1.clickstream_pb2 import TEAM_CHALLENGER, TEAM_CHAMPION  # noqa: E402
from services.evaluation.cli import load_encoder  # noqa: E402
from services.evaluation.datasets import EvalDataset, bbc_news, load_dataset  # noqa: E402
from services.evaluation.metrics import paired_bootstrap_ci, score_rankings  # noqa: E402
from services.evaluation.online import clicks, interleaved_sessions  # noqa: E402
from services.evaluation.retrieval import encode, top_k  # noqa: E402
from services.evaluation.simulation import split_queries  # noqa: E402
from services.registry.experiments import Rule, decide  # noqa: E402

TOP_K = 20
EXPERIMENT = "exp-0000000000-2-00000000"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ranked(model, dataset: EvalDataset, query_sets: list[tuple[list, int]]) -> list[list[list[str]]]:
    """Each query set's rankings (top k item ids per query) by `model`, the items embedded once."""
    items = encode(model, [i.text for i in dataset.items], show_progress_bar=True)
    rankings = []
    for queries, k in query_sets:
        indices, _ = top_k(encode(model, [q.text for q in queries]), items, k)
        rankings.append([[dataset.items[i].id for i in row] for row in indices])
    return rankings


class StableSignificance:
    """The first look from which a fixed-sample test stays significant at every later look up to the cap
    (the first look below alpha alone would count early chance hits, which repeated looks make common)."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.since: int | None = None

    def look(self, number: int, p_value: float) -> None:
        if p_value >= self.alpha:
            self.since = None
        elif self.since is None:
            self.since = number


def interleaving_sessions_to_decision(train, base, tuned, seed: int, max_grade: int, alpha: float, step: int,
                                      cap: int) -> int | None:
    wins = losses = 0
    stable = StableSignificance(alpha)
    for number, session in enumerate(interleaved_sessions(train, base, tuned, EXPERIMENT, cap, seed, max_grade,
                                                          TOP_K), start=1):
        winner = session.winner
        wins += winner == TEAM_CHALLENGER
        losses += winner == TEAM_CHAMPION
        if number % step == 0:
            stable.look(number, binomtest(wins, wins + losses).pvalue if wins + losses else 1.0)
    return stable.since


def ab_sessions_to_decision(train, base, tuned, seed: int, max_grade: int, alpha: float, step: int,
                            cap: int) -> int | None:
    rng = random.Random(seed)
    arms: dict[bool, list[int]] = {False: [], True: []}
    stable = StableSignificance(alpha)
    for number in range(1, cap + 1):
        q = rng.randrange(len(train))
        to_tuned = rng.random() < 0.5
        arms[to_tuned].append(len(clicks((tuned if to_tuned else base)[q], train[q], max_grade, rng)))
        if number % step == 0 and arms[False] and arms[True]:
            stable.look(number, mannwhitneyu(arms[True], arms[False], alternative="two-sided").pvalue)
    return stable.since


def registry_decision(train, champion, challenger, seed: int, max_grade: int, rule: Rule, per_poll: int
                      ) -> tuple[pb.ExperimentState, int]:
    """The registry's own rule on interleaved sessions, looked at every `per_poll` sessions: its decision
    (STOPPED for a stop that was not significant) and the sessions it took."""
    wins = losses = ties = 0
    p_value = 1.0
    for number, session in enumerate(interleaved_sessions(train, champion, challenger, EXPERIMENT,
                                                          rule.max_sessions, seed, max_grade, TOP_K), start=1):
        winner = session.winner
        wins += winner == TEAM_CHALLENGER
        losses += winner == TEAM_CHAMPION
        ties += winner not in (TEAM_CHALLENGER, TEAM_CHAMPION)
        if number % per_poll == 0:
            verdict = decide(wins, losses, ties, rule, p_value)
            p_value = verdict.p_value
            if verdict.state != pb.EXPERIMENT_STATE_RUNNING:
                significant = verdict.p_value < rule.alpha
                return (verdict.state if significant else pb.EXPERIMENT_STATE_STOPPED), number
    return pb.EXPERIMENT_STATE_RUNNING, rule.max_sessions


def median_of(values: list[int | None], cap: int) -> float:
    """The median with an undecided run counted as past the cap (so it is never flattered)."""
    return float(statistics.median(v if v is not None else cap + 1 for v in values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tuned", type=Path, required=True, help="Folder of a model the product fine-tuned.")
    parser.add_argument("--items", type=Path)
    parser.add_argument("--queries", type=Path)
    parser.add_argument("--seed", type=int, default=0, help="The query split's seed (as the demo's).")
    parser.add_argument("--repetitions", type=int, default=20)
    parser.add_argument("--aa-repetitions", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--step", type=int, default=10, help="Sessions between two looks of the sensitivity runs.")
    parser.add_argument("--cap", type=int, default=20_000, help="Sessions after which a sensitivity run gives up.")
    parser.add_argument("--sessions-per-poll", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    began = time.monotonic()

    dataset = load_dataset(args.items, args.queries) if args.items else bbc_news()
    train, test = split_queries(dataset.queries, 0.2, args.seed)
    base_model, tuned_model = load_encoder(None), load_encoder(args.tuned)
    say(f"ranking {len(dataset.items)} items for {len(train)} train and {len(test)} test queries with both models ...")
    base_test, base = ranked(base_model, dataset, [(test, 100), (train, TOP_K)])
    tuned_test, tuned = ranked(tuned_model, dataset, [(test, 100), (train, TOP_K)])
    relevant = [q.relevant for q in test]
    before, after = score_rankings(base_test, relevant), score_rankings(tuned_test, relevant)
    low, high = paired_bootstrap_ci(before["ndcg@10"], after["ndcg@10"], seed=args.seed)
    offline = {"ndcg10_before": float(np.mean(before["ndcg@10"])), "ndcg10_after": float(np.mean(after["ndcg@10"])),
               "ndcg10_gain_ci_low": low, "ndcg10_gain_ci_high": high}
    say(f"offline (test queries): nDCG@10 {offline['ndcg10_before']:.4f} -> {offline['ndcg10_after']:.4f} "
        f"(CI of the gain [{low:+.4f}, {high:+.4f}])")
    max_grade = dataset.max_grade

    rule = Rule(alpha=args.alpha)
    interleaving, ab, by_rule, won = [], [], [], 0
    for repetition in range(args.repetitions):
        seed = 1000 + repetition
        interleaving.append(interleaving_sessions_to_decision(train, base, tuned, seed, max_grade, args.alpha,
                                                              args.step, args.cap))
        ab.append(ab_sessions_to_decision(train, base, tuned, seed, max_grade, args.alpha, args.step, args.cap))
        state, sessions = registry_decision(train, base, tuned, seed, max_grade, rule, args.sessions_per_poll)
        by_rule.append(sessions)
        won += state == pb.EXPERIMENT_STATE_CHALLENGER_WON
        say(f"repetition {repetition + 1}/{args.repetitions}: interleaving {interleaving[-1]}, A/B {ab[-1]}, "
            f"the registry's rule {pb.ExperimentState.Name(state)} after {sessions}")
    median_interleaving, median_ab = median_of(interleaving, args.cap), median_of(ab, args.cap)

    false_decisions = 0
    for repetition in range(args.aa_repetitions):
        state, _ = registry_decision(train, base, base, 5000 + repetition, max_grade, rule, args.sessions_per_poll)
        false_decisions += state in (pb.EXPERIMENT_STATE_CHALLENGER_WON, pb.EXPERIMENT_STATE_CHAMPION_KEPT)
    share = false_decisions / max(args.aa_repetitions, 1)
    bound = args.alpha + 2 * math.sqrt(args.alpha * (1 - args.alpha) / max(args.aa_repetitions, 1))

    lines = [
        f"offline gain of the tuned model: nDCG@10 {offline['ndcg10_before']:.4f} -> {offline['ndcg10_after']:.4f} "
        f"({(offline['ndcg10_after'] - offline['ndcg10_before']) / offline['ndcg10_before']:+.1%}, "
        f"CI [{low:+.4f}, {high:+.4f}])",
        f"sessions to p < {args.alpha} over {args.repetitions} runs (looks every {args.step}, cap {args.cap}):",
        f"  interleaving (team-draft, sign test): median {median_interleaving:.0f}  runs {interleaving}",
        f"  A/B split (clicks per session, Mann-Whitney U): median {median_ab:.0f}  runs {ab}",
        f"  A/B needs {median_ab / median_interleaving:.1f}x the sessions interleaving needs",
        f"the registry's rule (mSPRT, alpha {rule.alpha}, min {rule.min_sessions} non-tied, max {rule.max_sessions}, "
        f"a look every {args.sessions_per_poll}): promoted the tuned model in {won} of {args.repetitions} runs, "
        f"median {statistics.median(by_rule):.0f} sessions  runs {by_rule}",
        f"A/A (the base against itself), the registry's rule, a look every {args.sessions_per_poll} sessions: "
        f"{false_decisions} of {args.aa_repetitions} runs declared a winner ({share:.1%}; bound alpha + 2 SE = "
        f"{bound:.1%}: {'held' if share <= bound else 'NOT held'})",
        f"took {time.monotonic() - began:.0f} s",
    ]
    for line in lines:
        say(line)
    if args.json:
        print(json.dumps({**offline, "interleaving_sessions": interleaving, "ab_sessions": ab,
                          "interleaving_median": median_interleaving, "ab_median": median_ab,
                          "ab_to_interleaving_ratio": median_ab / median_interleaving,
                          "rule_sessions": by_rule, "rule_promoted": won,
                          "aa_false_decisions": false_decisions, "aa_repetitions": args.aa_repetitions,
                          "aa_share": share, "aa_bound": bound}))


if __name__ == "__main__":
    main()
