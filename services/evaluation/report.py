"""The report `es demo` and `es evaluate` leave behind: one self-contained HTML page (inline SVG charts, no
script, nothing fetched) and the same as Markdown. It shows the before -> after table with the nDCG@10
gain's paired bootstrap CI, held-out nDCG@10 over the training steps of every trial (when there was
training), the distribution of the per-query gains, and the test queries whose relevant item moved most,
up and down, with the top results before and after."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MOVED_EACH_WAY = 5  # queries shown that moved up, and as many that moved down
TOP_SHOWN = 3  # results shown per query, before and after
SNIPPET = 90  # characters of an item's text in a result
METRICS = (("nDCG@10", "ndcg@10"), ("MRR@10", "mrr@10"), ("recall@100", "recall@100"))


@dataclass
class Report:
    """What the report shows. `before`/`after` are per-query metric arrays (`score_rankings`), in the
    order of `queries`; `rankings_*` the items retrieved for each query (ids, best first); `curves`
    held-out nDCG@10 by training step for each trial (label -> [(step, value)]); `notes` lines shown
    under the title (the model version, links to the MLflow runs)."""

    title: str
    queries: Sequence[object]  # each with .id, .text and .relevant {item id: grade}
    item_texts: dict[str, str]
    before: dict[str, np.ndarray]
    after: dict[str, np.ndarray]
    rankings_before: Sequence[Sequence[str]]
    rankings_after: Sequence[Sequence[str]]
    gain_ci: tuple[float, float]
    labels: tuple[str, str] = ("base", "tuned")
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MovedQuery:
    text: str
    rank_before: int | None  # 1-based rank of its best-ranked relevant item; None: not retrieved
    rank_after: int | None
    top_before: list[str]
    top_after: list[str]


def _first_relevant(ranking: Sequence[str], relevant: dict[str, int]) -> int | None:
    return next((rank for rank, item in enumerate(ranking, start=1) if item in relevant), None)


def moved_queries(report: Report) -> tuple[list[MovedQuery], list[MovedQuery]]:
    """The queries whose best-ranked relevant item rose most and fell most (a relevant item not
    retrieved at all counts as just past the retrieved list), at most MOVED_EACH_WAY each."""
    depth = max((len(r) for r in (*report.rankings_before, *report.rankings_after)), default=0) + 1
    moves = []
    for query, before, after in zip(report.queries, report.rankings_before, report.rankings_after, strict=True):
        rank_before, rank_after = _first_relevant(before, query.relevant), _first_relevant(after, query.relevant)
        shift = (rank_before or depth) - (rank_after or depth)
        if shift:
            snippet = [report.item_texts.get(i, i)[:SNIPPET] for i in (*before[:TOP_SHOWN], *after[:TOP_SHOWN])]
            moves.append((shift, MovedQuery(query.text, rank_before, rank_after, snippet[:TOP_SHOWN],
                                            snippet[TOP_SHOWN:])))
    up = [m for s, m in sorted(moves, key=lambda m: -m[0]) if s > 0][:MOVED_EACH_WAY]
    down = [m for s, m in sorted(moves, key=lambda m: m[0]) if s < 0][:MOVED_EACH_WAY]
    return up, down


def _table_rows(report: Report) -> list[tuple[str, float, float, float]]:
    rows = []
    for label, key in METRICS:
        b, a = float(report.before[key].mean()), float(report.after[key].mean())
        rows.append((label, b, a, (a - b) / b if b else 0.0))
    return rows


# --- SVG ----------------------------------------------------------------------------------------------

_W, _H, _PAD = 640, 260, 44
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _scale(values: Sequence[float], low_px: float, high_px: float) -> tuple[float, float, Callable[[float], float]]:
    low, high = min(values), max(values)
    if math.isclose(low, high):
        low, high = low - 0.5, high + 0.5
    return low, high, lambda v: low_px + (v - low) / (high - low) * (high_px - low_px)


def _axes(x_label: str, y_label: str, x_range: tuple[float, float], y_range: tuple[float, float]) -> list[str]:
    fmt = (lambda v: f"{v:.3f}") if abs(y_range[1] - y_range[0]) < 1 else (lambda v: f"{v:.0f}")
    return [
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - 10}" y2="{_H - _PAD}" stroke="#333"/>',
        f'<line x1="{_PAD}" y1="10" x2="{_PAD}" y2="{_H - _PAD}" stroke="#333"/>',
        f'<text x="{_W / 2}" y="{_H - 8}" text-anchor="middle" font-size="12">{html.escape(x_label)}</text>',
        f'<text x="12" y="{_H / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 12 {_H / 2})">'
        f'{html.escape(y_label)}</text>',
        f'<text x="{_PAD - 4}" y="{_H - _PAD}" text-anchor="end" font-size="10">{fmt(y_range[0])}</text>',
        f'<text x="{_PAD - 4}" y="16" text-anchor="end" font-size="10">{fmt(y_range[1])}</text>',
        f'<text x="{_PAD}" y="{_H - _PAD + 14}" font-size="10">{x_range[0]:g}</text>',
        f'<text x="{_W - 10}" y="{_H - _PAD + 14}" text-anchor="end" font-size="10">{x_range[1]:g}</text>',
    ]


def curves_svg(curves: dict[str, list[tuple[int, float]]]) -> str:
    """Held-out nDCG@10 over training steps, one polyline (and its points) per trial."""
    points = [p for series in curves.values() for p in series]
    x_low, x_high, x = _scale([p[0] for p in points], _PAD, _W - 10)
    y_low, y_high, y = _scale([p[1] for p in points], _H - _PAD, 10)
    parts = _axes("training step", "held-out nDCG@10", (x_low, x_high), (y_low, y_high))
    for number, (label, series) in enumerate(curves.items()):
        colour = _COLOURS[number % len(_COLOURS)]
        coords = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in series)
        parts.append(f'<polyline class="trial" fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        parts += [f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"/>' for s, v in series]
        parts.append(f'<text x="{_W - 14}" y="{24 + 14 * number}" text-anchor="end" font-size="11" '
                     f'fill="{colour}">{html.escape(label)}</text>')
    return _svg("held-out nDCG@10 per trial", parts)


def histogram_svg(gains: np.ndarray, bins: int = 21) -> str:
    """How many queries gained (or lost) how much nDCG@10: bars of equal width centred on zero."""
    reach = max(float(np.abs(gains).max()) if len(gains) else 0.0, 1e-6)
    counts, edges = np.histogram(gains, bins=bins, range=(-reach, reach))
    _, top, y = _scale([0.0, float(counts.max()) if len(counts) else 1.0], _H - _PAD, 10)
    width = (_W - 10 - _PAD) / bins
    parts = _axes("per-query nDCG@10 gain", "queries", (-round(reach, 3), round(reach, 3)), (0.0, top))
    for number, count in enumerate(counts):
        colour = "#2ca02c" if edges[number] >= 0 else "#d62728" if edges[number + 1] <= 0 else "#7f7f7f"
        parts.append(f'<rect class="bin" x="{_PAD + number * width:.1f}" y="{y(count):.1f}" width="{width - 1:.1f}" '
                     f'height="{_H - _PAD - y(count):.1f}" fill="{colour}"><title>{int(count)} queries in '
                     f'[{edges[number]:+.3f}, {edges[number + 1]:+.3f})</title></rect>')
    return _svg("per-query nDCG@10 gains", parts)


def _svg(title: str, parts: list[str]) -> str:
    return (f'<svg role="img" width="{_W}" height="{_H}" '
            f'viewBox="0 0 {_W} {_H}"><title>{html.escape(title)}</title>{"".join(parts)}</svg>')


# --- the pages -----------------------------------------------------------------------------------------

def _rank(rank: int | None) -> str:
    return str(rank) if rank is not None else "not retrieved"


def to_html(report: Report) -> str:
    low, high = report.gain_ci
    base, tuned = (html.escape(label) for label in report.labels)
    e = html.escape
    body = [f"<h1>{e(report.title)}</h1>", *(f"<p>{e(note)}</p>" for note in report.notes),
            f"<h2>Held-out queries: {len(report.queries)}</h2>",
            f"<table><tr><th>metric</th><th>{base}</th><th>{tuned}</th><th>gain</th></tr>",
            *(f"<tr><td>{label}</td><td>{b:.4f}</td><td>{a:.4f}</td><td>{g:+.1%}</td></tr>"
              for label, b, a, g in _table_rows(report)),
            "</table>", f"<p>nDCG@10 gain, paired bootstrap 95% CI: [{low:+.4f}, {high:+.4f}]</p>"]
    if report.curves:
        body += ["<h2>Training: held-out nDCG@10 per trial</h2>", curves_svg(report.curves),
                 "<p>Step 0 is the start model. The held-out sessions are the batch's own (the splitter's test "
                 "side), not the test queries above.</p>"]
    body += ["<h2>Per-query nDCG@10 gains</h2>", histogram_svg(report.after["ndcg@10"] - report.before["ndcg@10"])]
    up, down = moved_queries(report)
    for heading, moved in (("rose most", up), ("fell most", down)):
        body.append(f"<h2>Queries whose relevant item {heading}</h2>")
        if not moved:
            body.append("<p>None.</p>")
            continue
        body.append(f"<table><tr><th>query</th><th>rank {base}</th><th>rank {tuned}</th>"
                    f"<th>top {TOP_SHOWN} {base}</th><th>top {TOP_SHOWN} {tuned}</th></tr>")
        body += [f"<tr><td>{e(m.text)}</td><td>{_rank(m.rank_before)}</td><td>{_rank(m.rank_after)}</td>"
                 f"<td><ol>{''.join(f'<li>{e(t)}</li>' for t in m.top_before)}</ol></td>"
                 f"<td><ol>{''.join(f'<li>{e(t)}</li>' for t in m.top_after)}</ol></td></tr>" for m in moved]
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "vertical-align:top;text-align:left}ol{margin:0;padding-left:1.2em}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(report.title)}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def to_markdown(report: Report) -> str:
    low, high = report.gain_ci
    base, tuned = report.labels
    lines = [f"# {report.title}", "", *(f"{note}  " for note in report.notes), "",
             f"Held-out queries: {len(report.queries)}", "", f"| metric | {base} | {tuned} | gain |",
             "|---|---|---|---|", *(f"| {label} | {b:.4f} | {a:.4f} | {g:+.1%} |"
                                    for label, b, a, g in _table_rows(report)),
             "", f"nDCG@10 gain, paired bootstrap 95% CI: [{low:+.4f}, {high:+.4f}]", ""]
    if report.curves:
        lines += ["## Training: held-out nDCG@10 per trial", "", "| trial | step | held-out nDCG@10 |", "|---|---|---|"]
        lines += [f"| {label} | {step} | {value:.4f} |" for label, series in report.curves.items()
                  for step, value in series]
        lines.append("")
    gains = report.after["ndcg@10"] - report.before["ndcg@10"]
    lines += ["## Per-query nDCG@10 gains", "", f"{int((gains > 0).sum())} queries gained, {int((gains < 0).sum())} "
              f"lost, {int((gains == 0).sum())} unchanged; median {float(np.median(gains)) if len(gains) else 0:+.4f}.",
              ""]
    up, down = moved_queries(report)
    for heading, moved in (("rose most", up), ("fell most", down)):
        lines += [f"## Queries whose relevant item {heading}", ""]
        if not moved:
            lines += ["None.", ""]
            continue
        lines += [f"| query | rank {base} | rank {tuned} | top {TOP_SHOWN} {base} | top {TOP_SHOWN} {tuned} |",
                  "|---|---|---|---|---|"]
        cell = lambda texts: "<br>".join(t.replace("|", "\\|") for t in texts)  # noqa: E731
        lines += [f"| {m.text.replace('|', chr(92) + '|')} | {_rank(m.rank_before)} | {_rank(m.rank_after)} | "
                  f"{cell(m.top_before)} | {cell(m.top_after)} |" for m in moved]
        lines.append("")
    return "\n".join(lines)


def write_report(folder: Path, report: Report) -> tuple[Path, Path]:
    """Writes `folder`/report.html and `folder`/report.md; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    page, text = folder / "report.html", folder / "report.md"
    page.write_text(to_html(report))
    text.write_text(to_markdown(report))
    return page, text
