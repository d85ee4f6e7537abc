"""A second evaluation corpus in EVALUATION.md's format, built from Debian's `wordnet-base` (WordNet 3.0,
its own BSD-style licence): items are dictionary definitions, queries are the words they define.

Nothing about it resembles the BBC corpus: items are one-line glosses (a definition, then its usage
examples), queries are one or a few words, and a query can have several relevant items (its senses).
Each item is a noun synset's gloss, without its own words; each query is a noun (underscores become
spaces) with at least one of its senses among the items. Grades follow WordNet's sense order, which is
by frequency in tagged text: the query's most frequent sense among the items has grade 2, its other
senses grade 1.

    .venv/bin/python bench/wordnet_corpus.py --out /tmp/wordnet [--items 3000] [--queries 1500] [--seed 0]
    .venv/bin/python bench/quality.py --items /tmp/wordnet/items.jsonl --queries /tmp/wordnet/queries.jsonl

Without `--wordnet-dir`, it fetches the package with `apt-get download wordnet-base` (Debian's own
client; run `apt-get update` once first) and unpacks it with `dpkg -x` into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

PACKAGE_DATA = Path("usr/share/wordnet")


def fetch_wordnet(into: Path) -> Path:
    """Downloads and unpacks Debian's wordnet-base; returns its data folder."""
    subprocess.run(["apt-get", "download", "wordnet-base"], cwd=into, check=True, capture_output=True)
    deb = next(into.glob("wordnet-base_*.deb"))
    subprocess.run(["dpkg", "-x", str(deb), str(into / "root")], check=True)
    return into / "root" / PACKAGE_DATA


def _records(path: Path) -> Iterator[list[str]]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.startswith(" "):  # the licence header lines start with two spaces
                yield line.rstrip("\n")


def noun_glosses(folder: Path) -> dict[str, str]:
    """Synset offset -> its gloss, for every noun synset."""
    glosses = {}
    for line in _records(folder / "data.noun"):
        head, _, gloss = line.partition(" | ")
        glosses[head.split()[0]] = gloss.strip()
    return glosses


def noun_senses(folder: Path) -> dict[str, list[str]]:
    """Lemma -> its synset offsets, most frequent sense first (index.noun's order)."""
    senses = {}
    for line in _records(folder / "index.noun"):
        fields = line.split()
        lemma, synset_count, pointer_count = fields[0], int(fields[2]), int(fields[3])
        offsets = fields[4 + pointer_count + 2:]
        if len(offsets) == synset_count:
            senses[lemma] = offsets
    return senses


def build(folder: Path, n_items: int, n_queries: int, seed: int) -> tuple[list[dict], list[dict]]:
    glosses = noun_glosses(folder)
    senses = noun_senses(folder)
    rng = random.Random(seed)
    # Items: synsets that are among the first three senses of some lemma (the senses people mean), so
    # that most items can be found by at least one word.
    common = sorted({offset for offsets in senses.values() for offset in offsets[:3]})
    chosen = set(rng.sample(common, min(n_items, len(common))))
    items = [{"id": f"wn-{offset}", "text": glosses[offset]} for offset in sorted(chosen)]
    candidates = []
    for lemma, offsets in sorted(senses.items()):
        relevant = [offset for offset in offsets if offset in chosen]
        if relevant:
            grades = {f"wn-{offset}": 2 if rank == 0 else 1 for rank, offset in enumerate(relevant)}
            candidates.append({"id": f"q-{lemma}", "text": lemma.replace("_", " "), "relevant": grades})
    queries = rng.sample(candidates, min(n_queries, len(candidates)))
    return items, sorted(queries, key=lambda q: q["id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for items.jsonl and queries.jsonl")
    parser.add_argument("--wordnet-dir", type=Path, help="an unpacked WordNet 3.0 dict folder (data.noun, index.noun)")
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="es-wordnet-") as scratch:
        folder = args.wordnet_dir or fetch_wordnet(Path(scratch))
        items, queries = build(folder, args.items, args.queries, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("items.jsonl", items), ("queries.jsonl", queries)):
        with (args.out / name).open("w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(items)} items, {len(queries)} queries -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
