"""One self-contained HTML page showing what CoEvol did to a refined dataset.

`report(dataset, path)` (and `coevol-hf report DIR`) writes the run's figures as inline SVG charts
and, for every row, the instruction, before and after with a word-level diff, the advisor's
suggestions, both verdicts and the decision, with filters for improved, unchanged and errored rows.

Nothing is fetched: styles, script and data are in the file. Rows travel as one JSON blob that a
small vanilla script renders a page at a time, so 10,000 rows open in about a second. Texts come
from a model and are untrusted: they reach the page only through `textContent`, and the blob
escapes `<`, `>` and `&` so that no text can close its `<script>` element.
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import html
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .formats import REFINED, splits_with_rows
from .stats import RunStats, cached_share, compute_stats
from .story import describe_verdict, explain
from .trace import Round, RunInfo, Trace, Turn

REPORT_FILE = "report.html"
PAGE_SIZE = 50
_COLUMNS = [REFINED.trace, REFINED.error, REFINED.original]
_TOKEN = re.compile(r"\s+|(?:\w+|[^\w\s])\s*")  # a word or punctuation mark with the spaces after it
_LENGTH_BINS = (100, 200, 400, 800, 1600, 3200)  # upper bounds, in characters, of the length histogram
_GREEN, _GREY, _RED, _BLUE, _AMBER = "#2e7d32", "#9e9e9e", "#c62828", "#1565c0", "#ef8f00"


@dataclasses.dataclass
class _Figures:
    """What the charts show, beyond `RunStats`: rounds by how the two verdicts related, lengths per turn."""

    rows_by_status: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)  # improved, unchanged, error
    orders_agree: int = 0
    orders_disagree: int = 0
    first_read_won: int = 0  # of the disagreements: the judge preferred the answer it read first both times
    second_read_won: int = 0  # ... the answer it read second both times
    not_both_readable: int = 0
    lengths_before: list[int] = dataclasses.field(default_factory=list)
    lengths_after: list[int] = dataclasses.field(default_factory=list)

    def add_turn(self, turn: Turn) -> None:
        self.lengths_before.append(len(turn.original))
        self.lengths_after.append(len(turn.final))
        for round_ in turn.rounds:
            if not round_.judged:
                continue
            first, second = round_.old_first.scores, round_.new_first.scores
            if first is None or second is None:
                self.not_both_readable += 1
            elif round_.orders_agree:
                self.orders_agree += 1
            else:
                self.orders_disagree += 1
                self.first_read_won += first[0] > first[1] and second[1] > second[0]
                self.second_read_won += first[1] > first[0] and second[0] > second[1]


def report(dataset: Any, path: str | Path, *, title: str | None = None) -> Path:
    """Write the HTML report of a refined `Dataset` (or `DatasetDict`, splits one after another) to `path`."""
    splits: Iterable[tuple[str | None, Any]] = splits_with_rows(dataset).items() if isinstance(dataset, Mapping) else [(None, dataset)]
    rows: list[Mapping[str, Any]] = []
    views: list[dict[str, Any]] = []
    figures = _Figures()
    runs: dict[str, tuple[RunInfo, int]] = {}  # by the run's JSON text, in order of their first row
    for split, data in splits:
        for index, row in enumerate(_iter_rows(data)):
            rows.append(row)
            trace = Trace.from_json(row[REFINED.trace]) if row[REFINED.trace] is not None else None
            if trace is not None:  # rows stopped by an error count with the rounds they did, as in the stats
                run, count = runs.get(trace.run.json_text, (trace.run, 0))
                runs[trace.run.json_text] = run, count + 1
                for turn in trace.turns:
                    figures.add_turn(turn)
            views.append(_row_view(index, split, row, trace))
            figures.rows_by_status[views[-1]["s"]] += 1
    stats = compute_stats(rows)
    page = _page(title or f"CoEvol report: {stats.rows} rows", stats, figures, list(runs.values()), views)
    target = Path(path)
    target.write_text(page, encoding="utf-8")
    return target


# -- rows -------------------------------------------------------------------------------------


def _iter_rows(data: Any) -> Iterable[dict[str, Any]]:
    """The `coevol_*` columns row by row, read a batch at a time (row-wise reads cost ~1 ms each)."""
    for batch in data.select_columns(_COLUMNS).iter(batch_size=1000):
        yield from (dict(zip(_COLUMNS, values)) for values in zip(*(batch[name] for name in _COLUMNS)))


def _row_view(index: int, split: str | None, row: Mapping[str, Any], trace: Trace | None) -> dict[str, Any]:
    """One row for the page's script, with short keys (10,000 rows of them travel in the file):
    i index, p split, s status, e error, o original responses, t turns."""
    view: dict[str, Any] = {"i": index}
    if split is not None:
        view["p"] = split
    if trace is not None:  # an errored row's trace holds the turns done before the failing call
        view["t"] = [_turn_view(turn) for turn in trace.turns]
    if row[REFINED.error] is not None:
        return {**view, "s": "error", "e": row[REFINED.error], "o": list(row[REFINED.original] or [])}
    improved = any(turn.accepted_rounds for turn in trace.turns)
    return {**view, "s": "improved" if improved else "unchanged"}


def _turn_view(turn: Turn) -> dict[str, Any]:
    """n instruction, d word diff from before to after, r rounds."""
    final = turn.final
    return {"n": turn.instruction, "d": word_diff(turn.original, final), "r": [_round_view(r, final) for r in turn.rounds]}


def _round_view(round_: Round, final: str) -> dict[str, Any]:
    """k number, g suggestions, x the edit (omitted when it is the After), v verdicts, a accepted, w decision, c cut-off answers."""
    verdicts = [] if not round_.judged else [
        [describe_verdict(round_.old_first, new_first=False), round_.old_first.text],
        [describe_verdict(round_.new_first, new_first=True), round_.new_first.text],
    ]
    view = {"k": round_.round, "g": list(round_.suggestions), "v": verdicts, "a": round_.accepted, "w": explain(round_), "c": list(round_.cut_off)}
    if round_.edit is not None and round_.edit != final:
        view["x"] = round_.edit
    return view


def word_diff(before: str, after: str) -> list[tuple[int, str]]:
    """Word-level diff as (op, text) runs: 0 in both, -1 only before, 1 only after."""
    if before == after:
        return [(0, before)]
    a, b = _TOKEN.findall(before), _TOKEN.findall(after)
    runs: list[tuple[int, str]] = []

    def add(op: int, tokens: Sequence[str]) -> None:
        if not tokens:
            return
        if runs and runs[-1][0] == op:
            runs[-1] = (op, runs[-1][1] + "".join(tokens))
        else:
            runs.append((op, "".join(tokens)))

    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            add(0, a[i1:i2])
        else:
            add(-1, a[i1:i2])
            add(1, b[j1:j2])
    return runs


# -- figures ----------------------------------------------------------------------------------


def _bars(items: Sequence[tuple[str, int, str]], *, label_width: int = 150) -> str:
    """Horizontal bars, one per (label, value, colour), scaled to the largest value."""
    top = max([value for _, value, _ in items] + [1])
    row, bar = 22, 170
    parts = [f'<svg class="chart" width="{label_width + bar + 60}" height="{row * len(items) + 4}" role="img">']
    for n, (label, value, colour) in enumerate(items):
        y = n * row + 2
        width = round(bar * value / top)
        parts.append(
            f'<text x="{label_width - 6}" y="{y + 14}" text-anchor="end">{html.escape(label)}</text>'
            f'<rect x="{label_width}" y="{y + 2}" width="{max(width, 1)}" height="{row - 6}" fill="{colour}"/>'
            f'<text x="{label_width + width + 5}" y="{y + 14}">{value:,}</text>'
        )
    return "".join(parts) + "</svg>"


def _lengths_chart(before: Sequence[int], after: Sequence[int]) -> str:
    """Turns by response length, before (grey) and after (blue), side by side in each bin."""
    labels = [f"≤{_short(bound)}" for bound in _LENGTH_BINS] + [f">{_short(_LENGTH_BINS[-1])}"]
    counts = [_histogram(before), _histogram(after)]
    top = max(max(counts[0]), max(counts[1]), 1)
    column, height = 46, 110
    parts = [f'<svg class="chart" width="{column * len(labels) + 10}" height="{height + 34}" role="img">']
    for n, label in enumerate(labels):
        x = 5 + n * column
        for k, (values, colour) in enumerate(zip(counts, (_GREY, _BLUE))):
            size = round((height - 14) * values[n] / top)
            parts.append(f'<rect x="{x + 4 + k * 18}" y="{height - size}" width="16" height="{size}" fill="{colour}"><title>{values[n]:,}</title></rect>')
        parts.append(f'<text x="{x + column / 2}" y="{height + 14}" text-anchor="middle">{label}</text>')
    parts.append(f'<text x="5" y="{height + 30}">characters per response; grey before, blue after</text>')
    return "".join(parts) + "</svg>"


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _short(number: int) -> str:
    return f"{number / 1000:g}k" if number >= 1000 else str(number)


def _histogram(lengths: Sequence[int]) -> list[int]:
    counts = [0] * (len(_LENGTH_BINS) + 1)
    for length in lengths:
        counts[next((n for n, bound in enumerate(_LENGTH_BINS) if length <= bound), len(_LENGTH_BINS))] += 1
    return counts


def _figures_html(stats: RunStats, figures: _Figures) -> str:
    by_status = figures.rows_by_status
    share = f" ({stats.rows_improved / stats.rows:.0%})" if stats.rows else ""
    stopped = stats.rows_improved - by_status["improved"]
    if stopped:
        share += f", {stopped:,} of them stopped by an error after an accepted edit"
    rows_chart = _bars([("improved", by_status["improved"], _GREEN), ("unchanged", by_status["unchanged"], _GREY), ("errored", by_status["error"], _RED)])
    edits = [(f"{_plural(k, 'accepted edit')}", v, _GREEN if k else _GREY) for k, v in stats.rounds_histogram.items()]
    judge = [("orders agree", figures.orders_agree, _GREEN), ("orders disagree", figures.orders_disagree, _AMBER), ("not both readable", figures.not_both_readable, _RED)]
    position = (
        f"They disagree in {_plural(figures.orders_disagree, 'round')}: the judge preferred whichever answer it read first in "
        f"{figures.first_read_won:,}, the one it read second in {figures.second_read_won:,}."
        if figures.orders_disagree
        else ""
    )
    errors = ", ".join(f"{kind}: {count}" for kind, count in stats.errors_by_kind.items()) or "none"
    boxes = [
        ("Rows", f"{stats.rows:,} rows, {stats.rows_improved:,} improved{share}; errors: {errors}", rows_chart),
        ("Accepted edits per turn", f"{stats.turns:,} turns", _bars(edits) if edits else "<p>no refined turn</p>"),
        ("Judge", f"orders agree in {stats.judges_agree:,} of {stats.judged_rounds:,} judged rounds. {position}", _bars(judge)),
        ("Response lengths", f"{stats.chars_before:,} → {stats.chars_after:,} characters in all", _lengths_chart(figures.lengths_before, figures.lengths_after)),
    ]
    return "".join(f'<div class="figure"><h3>{html.escape(name)}</h3><p>{html.escape(text)}</p>{chart}</div>' for name, text, chart in boxes)


def _run_html(stats: RunStats, runs: list[tuple[RunInfo, int]]) -> str:
    """How the data was made, from the rows' traces: each run the rows record, with its row count."""
    if not runs:
        return "<p>No row was refined.</p>"
    totals = [("LLM calls", f"{stats.llm_calls:,}"), ("tokens (prompt, completion)", f"{stats.prompt_tokens:,}, {stats.completion_tokens:,}")]
    totals += [("prompt tokens from the server's prefix cache", f"{stats.cached_tokens:,} ({cached_share(stats)})")]
    blocks = []
    for number, (run, rows) in enumerate(runs, 1):
        settings = [("model", run.model), ("coevol-hf", run.implementation.removeprefix("coevol-hf ")), ("prompt templates", f"sha256 {run.prompts_sha256[:12]}")]
        settings += [(name, json.dumps(value)) for name, value in run.options.items() if not isinstance(value, (Mapping, list))]
        summary = "How this data was made" if len(runs) == 1 else f"How this data was made: run {number} of {len(runs)}, {rows:,} rows"
        blocks.append(_details(summary, settings + totals if len(runs) == 1 else settings))
    if len(runs) > 1:
        blocks.append(_details("All runs together", totals))
    return "".join(blocks)


def _details(summary: str, settings: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(name)}</th><td>{html.escape(str(value))}</td></tr>" for name, value in settings)
    return f'<details class="run"><summary>{html.escape(summary)}</summary><table>{cells}</table></details>'


# -- the page ---------------------------------------------------------------------------------


def _page(title: str, stats: RunStats, figures: _Figures, runs: list[tuple[RunInfo, int]], views: list[dict[str, Any]]) -> str:
    counts = {"all": stats.rows, **figures.rows_by_status}
    buttons = "".join(
        f'<button type="button" data-status="{status}"{" aria-pressed=true" if status == "all" else ""}>{label} ({counts.get(status, 0):,})</button>'
        for status, label in (("all", "all"), ("improved", "improved"), ("unchanged", "unchanged"), ("error", "errored"))
    )
    blob = json.dumps(views, ensure_ascii=False, separators=(",", ":")).replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    head, tail = _TEMPLATE.split("{{body}}")
    body = (
        f"<h1>{html.escape(title)}</h1>\n<section class=\"figures\">{_figures_html(stats, figures)}</section>\n{_run_html(stats, runs)}\n"
        + _CONTROLS.replace("{{buttons}}", buttons)
        + f'<script type="application/json" id="coevol-rows">{blob}</script>\n'
        + f"<script>{_SCRIPT.replace('{{page_size}}', str(PAGE_SIZE))}</script>"
    )
    return head.replace("{{style}}", _STYLE).replace("{{title}}", html.escape(title)) + body + tail


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{{title}}</title>
<style>{{style}}</style>
</head>
<body>
{{body}}
</body>
</html>
"""

_CONTROLS = """<nav class="controls">
<span class="filters">{{buttons}}</span>
<input type="search" id="query" placeholder="search the texts" aria-label="search the texts">
<span class="pager"><button type="button" id="prev">‹ previous</button>
<label>page <input type="number" id="page" min="1" value="1"> of <span id="pages">1</span></label>
<button type="button" id="next">next ›</button></span>
<span id="position"></span>
</nav>
<main id="rows"></main>
<p class="note">Each row's debates, full verdicts and token counts are in its <code>coevol_trace</code> column.</p>
"""

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
.figure { border: 1px solid #ddd; border-radius: 6px; padding: .5em 1em; flex: 1 1 300px; }
.figure h3 { margin: .2em 0; font-size: 1.05em; }
.figure p { margin: .2em 0 .6em; color: #555; }
.chart text { font-size: 12px; fill: #333; }
.run { margin: 1em 0; }
.run th { text-align: left; padding-right: 1em; font-weight: normal; color: #555; }
.controls { position: sticky; top: 0; background: #fff; padding: .6em 0; border-bottom: 1px solid #ddd; display: flex; flex-wrap: wrap; gap: .8em; align-items: center; z-index: 1; }
.controls button[aria-pressed=true] { background: #1565c0; color: #fff; border-color: #1565c0; }
.controls button { border: 1px solid #aaa; background: #f7f7f7; border-radius: 4px; padding: .2em .6em; cursor: pointer; }
#page { width: 4em; }
.row { border: 1px solid #ddd; border-left: 5px solid #9e9e9e; border-radius: 4px; margin: 1em 0; padding: .4em 1em; }
.row.improved { border-left-color: #2e7d32; }
.row.error { border-left-color: #c62828; }
.row header { display: flex; gap: 1em; align-items: baseline; }
.idx { font-weight: bold; }
.badge { font-size: .85em; padding: 0 .5em; border-radius: 3px; background: #eee; }
.badge.improved { background: #e8f5e9; color: #2e7d32; }
.badge.error { background: #ffebee; color: #c62828; }
h3 { margin: .6em 0 .2em; font-size: 1em; }
h4 { margin: .5em 0 .1em; font-size: .9em; color: #555; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; background: #fafafa; padding: .3em .5em; border-radius: 3px; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
del { background: #ffebee; color: #b71c1c; }
ins { background: #e8f5e9; color: #1b5e20; text-decoration: none; }
.rounds { padding-left: 1.2em; }
.round { margin: .4em 0; }
.decision { font-weight: 600; }
.round.kept .decision { color: #2e7d32; }
.round ul { margin: .2em 0; }
.vtext { color: #555; font-family: ui-monospace, monospace; font-size: .85em; white-space: pre-wrap; overflow-wrap: anywhere; }
.label { color: #555; font-size: .9em; }
.error-text { color: #c62828; }
.cut { color: #ef8f00; }
.note { color: #777; }
"""

_SCRIPT = """
"use strict";
const ROWS = JSON.parse(document.getElementById("coevol-rows").textContent);
const PAGE_SIZE = {{page_size}};
const LABELS = {improved: "improved", unchanged: "unchanged", error: "errored"};
const state = {status: "all", query: "", page: 0};
const searchable = new WeakMap();

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function haystack(row) {
  // The data's texts only: the page's own words ("preferred", "orders") are in every row.
  let text = searchable.get(row);
  if (text === undefined) {
    const parts = [row.e || "", ...(row.o || [])];
    for (const turn of row.t || []) {
      parts.push(turn.n, ...turn.d.map(run => run[1]));
      for (const round of turn.r) parts.push(...round.g, round.x || "", ...round.v.map(verdict => verdict[1] || ""));
    }
    text = parts.join(" ").toLowerCase();
    searchable.set(row, text);
  }
  return text;
}

function selected() {
  const query = state.query.toLowerCase();
  return ROWS.filter(row => (state.status === "all" || row.s === state.status) && (!query || haystack(row).includes(query)));
}

function side(title, runs, shown) {
  const box = el("div", "side");
  const text = el("div", "text");
  for (const [op, part] of runs) {
    if (op === 0) text.append(part);
    else if (op === shown) text.append(el(shown > 0 ? "ins" : "del", null, part));
  }
  box.append(el("h4", null, title), text);
  return box;
}

function roundItem(round) {
  const item = el("li", "round " + (round.a ? "kept" : "dropped"));
  item.append(el("div", "decision", "Round " + round.k + ": " + round.w));
  if (round.g.length) {
    const list = el("ul", "suggestions");
    for (const suggestion of round.g) list.append(el("li", null, suggestion));
    item.append(el("div", "label", "Advisor's suggestions"), list);
  }
  if (round.v.length) {
    const list = el("ul", "verdicts");
    for (const [said, text] of round.v) {
      const verdict = el("li", null, "Judge " + said);
      if (text) verdict.append(el("div", "vtext", text));
      list.append(verdict);
    }
    item.append(el("div", "label", "Verdicts"), list);
  }
  if (round.x !== undefined) {
    const details = el("details");
    details.append(el("summary", null, round.a ? "This round's edit (improved again later)" : "The editor's proposal"), el("div", "text", round.x));
    item.append(details);
  }
  if (round.c.length) item.append(el("div", "cut", "cut at max_new_tokens: " + round.c.join(", ")));
  return item;
}

function turnSection(turn, number, count) {
  const section = el("section", "turn");
  if (count > 1) section.append(el("h3", null, "Turn " + number));
  section.append(el("h4", null, "Instruction"), el("div", "text", turn.n));
  if (turn.d.some(([op]) => op !== 0)) {
    const pair = el("div", "pair");
    pair.append(side("Before", turn.d, -1), side("After", turn.d, 1));
    section.append(pair);
  } else {
    section.append(el("h4", null, "Response (unchanged)"), el("div", "text", turn.d.map(([, part]) => part).join("")));
  }
  const rounds = el("ol", "rounds");
  for (const round of turn.r) rounds.append(roundItem(round));
  section.append(rounds);
  return section;
}

function card(row) {
  const article = el("article", "row " + row.s);
  article.dataset.row = row.i;
  const header = el("header");
  header.append(el("span", "idx", "row " + row.i + (row.p !== undefined ? " (" + row.p + ")" : "")), el("span", "badge " + row.s, LABELS[row.s]));
  article.append(header);
  if (row.s === "error") {
    article.append(el("p", "error-text", row.e));
    const done = row.t || [];
    done.forEach((turn, n) => article.append(turnSection(turn, n + 1, row.o.length)));
    row.o.slice(done.length).forEach((text, n) => article.append(el("h4", null, "Response " + (done.length + n + 1) + " (original; this run did not refine it)"), el("div", "text", text)));
  } else {
    row.t.forEach((turn, n) => article.append(turnSection(turn, n + 1, row.t.length)));
  }
  return article;
}

function render() {
  const rows = selected();
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
  state.page = Math.min(Math.max(state.page, 0), pages - 1);
  const start = state.page * PAGE_SIZE;
  const shown = rows.slice(start, start + PAGE_SIZE);
  document.getElementById("rows").replaceChildren(...shown.map(card));
  document.getElementById("pages").textContent = pages;
  document.getElementById("page").value = state.page + 1;
  document.getElementById("page").max = pages;
  document.getElementById("prev").disabled = state.page === 0;
  document.getElementById("next").disabled = state.page === pages - 1;
  document.getElementById("position").textContent = rows.length ? "rows " + (start + 1) + "–" + (start + shown.length) + " of " + rows.length : "no row matches";
  if (!document.body.dataset.renderedMs) document.body.dataset.renderedMs = String(Math.round(performance.now()));
}

for (const button of document.querySelectorAll("[data-status]")) {
  button.addEventListener("click", () => {
    for (const other of document.querySelectorAll("[data-status]")) other.setAttribute("aria-pressed", String(other === button));
    state.status = button.dataset.status;
    state.page = 0;
    render();
  });
}
let typing;
document.getElementById("query").addEventListener("input", event => {
  clearTimeout(typing);
  typing = setTimeout(() => { state.query = event.target.value; state.page = 0; render(); }, 200);
});
document.getElementById("prev").addEventListener("click", () => { state.page -= 1; render(); window.scrollTo(0, document.getElementById("rows").offsetTop - 60); });
document.getElementById("next").addEventListener("click", () => { state.page += 1; render(); window.scrollTo(0, document.getElementById("rows").offsetTop - 60); });
document.getElementById("page").addEventListener("change", event => { state.page = Number(event.target.value) - 1; render(); });
render();
"""
