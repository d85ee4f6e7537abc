"""The report es demo and es evaluate write: the table with the CI, the training chart, the gains'
distribution and the queries that moved most, as one self-contained HTML page (checked in a real headless
Chromium: it renders, the chart is drawn, nothing is fetched) and as Markdown."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.evaluation.report import MOVED_EACH_WAY, Report, moved_queries, write_report


@dataclass
class _Query:
    id: str
    text: str
    relevant: dict[str, int]


def _report(curves: bool = True) -> Report:
    queries = [_Query(f"q{i}", f"query <{i}> & co", {f"item-{i}": 2}) for i in range(12)]
    items = {f"item-{i}": f"text of item {i}" for i in range(40)}
    others = [f"item-{i}" for i in range(20, 40)]
    # Query i's relevant item: at rank i+1 before; after, queries 0-5 moved to rank 1, 6-9 fell by 3, 10-11 stayed.
    before_rankings, after_rankings = [], []
    for i in range(12):
        before = [*others[:i], f"item-{i}", *others[i:15]]
        if i < 6:
            after = [f"item-{i}", *others[:15]]
        elif i < 10:
            after = [*others[:i + 3], f"item-{i}", *others[i + 3:15]]
        else:
            after = before
        before_rankings.append(before)
        after_rankings.append(after)
    before = {"ndcg@10": np.array([1 / np.log2(i + 2) for i in range(12)]), "mrr@10": np.full(12, 0.5),
              "recall@100": np.ones(12)}
    after = {"ndcg@10": before["ndcg@10"] + np.linspace(-0.2, 0.3, 12), "mrr@10": np.full(12, 0.6),
             "recall@100": np.ones(12)}
    trials = {"trial 1 / batch-1": [(0, 0.40), (10, 0.45), (20, 0.47)], "trial 2 / batch-1": [(0, 0.40), (20, 0.43)]}
    return Report("a <report> & its title", queries, items, before, after, before_rankings, after_rankings,
                  (0.012, 0.034), curves=trials if curves else {}, notes=["best model: version 2"])


def test_the_queries_that_moved_most_are_ranked_by_how_far_their_relevant_item_moved() -> None:
    up, down = moved_queries(_report())
    assert [m.text for m in up] == [f"query <{i}> & co" for i in (5, 4, 3, 2, 1)]
    assert len(up) == MOVED_EACH_WAY and (up[0].rank_before, up[0].rank_after) == (6, 1)
    assert [(m.rank_before, m.rank_after) for m in down] == [(7, 10), (8, 11), (9, 12), (10, 13)]
    assert up[0].top_after[0] == "text of item 5" and len(up[0].top_before) == 3


def test_the_report_has_the_table_the_ci_the_charts_and_escapes_what_it_shows(tmp_path: Path) -> None:
    page, text = write_report(tmp_path / "out", _report())
    html = page.read_text()
    assert "a &lt;report&gt; &amp; its title" in html and "query &lt;5&gt; &amp; co" in html
    assert "[+0.0120, +0.0340]" in html and "<td>nDCG@10</td>" in html
    assert html.count('<polyline class="trial"') == 2 and html.count('<rect class="bin"') == 21
    assert "src=" not in html and "href=" not in html and "<script" not in html  # nothing to fetch or run
    markdown = text.read_text()
    assert "| nDCG@10 |" in markdown and "| trial 1 / batch-1 | 20 | 0.4700 |" in markdown
    assert "query <5> & co" in markdown


def test_without_training_there_is_no_training_chart(tmp_path: Path) -> None:
    page, _ = write_report(tmp_path, _report(curves=False))
    assert "<polyline" not in page.read_text() and '<rect class="bin"' in page.read_text()


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    requested: list[str] = []

    def do_GET(self) -> None:
        # What the page asks for carries it as the Referer; the browser's own calls home do not.
        if self.headers.get("Referer") or self.headers.get("Host", "").startswith("127.0.0.1"):
            type(self).requested.append(f"{self.headers.get('Host')}{self.path}")
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (scripts/test "
                                                              "installs it where it can)")
def test_a_headless_chromium_renders_the_page_draws_the_chart_and_fetches_nothing_else(tmp_path: Path) -> None:
    page, _ = write_report(tmp_path, _report())
    handler = type("Handler", (_RecordingHandler,), {"requested": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        # Every host resolves to the recording server, so any resource the page asked for would show up there.
        browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions",
                   "--disable-background-networking", "--disable-component-update",
                   "--no-first-run", f"--host-resolver-rules=MAP * 127.0.0.1:{port}",
                   f"--user-data-dir={tmp_path / 'p'}",
                   "--window-size=1100,1400"]
        url = f"http://127.0.0.1:{port}/{page.name}"
        dom = subprocess.run([*browser, "--dump-dom", url], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "HOME": str(tmp_path)})
        shot = subprocess.run([*browser, f"--screenshot={tmp_path / 'shot.png'}", url], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    finally:
        server.shutdown()
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<polyline" in dom.stdout and "held-out nDCG@10 per trial" in dom.stdout
    # An https:// resource would fail at the TLS handshake with the recording server, unseen: the rendered
    # page must not name any (no src, href or url() anywhere in its DOM).
    assert re.search(r"\b(src|href)\s*=|url\(", dom.stdout) is None
    assert shot.returncode == 0, shot.stderr[-2000:]
    pixels = Image.open(tmp_path / "shot.png").convert("RGB")
    colours = {colour for _, colour in pixels.getcolors(maxcolors=1 << 20)}
    assert (0x1F, 0x77, 0xB4) in colours and (0xD6, 0x27, 0x28) in colours  # the two trials' lines, drawn
    assert {r.split("/", 1)[1] for r in handler.requested} <= {page.name, "favicon.ico"}, handler.requested
    assert f"127.0.0.1:{port}/{page.name}" in handler.requested
