"""The HTML report: its data, its figures, untrusted text kept as text, and the page in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from browser_check import INSTALL_HINT, Browser, chromium, png_colours
from datasets import Dataset, DatasetDict, concatenate_datasets
from refined_rows import MARKUP, refine, script
from tgi_server import Call, Error, TGIServer, default_script

from coevol_hf import CoEvol

from coevol_hf.formats import REFINED
from coevol_hf.report import PAGE_SIZE, report, word_diff
from coevol_hf.stats import compute_stats
from coevol_hf.story import tell
from coevol_hf.trace import Trace

_BLOB = re.compile(r'<script type="application/json" id="coevol-rows">(.*?)</script>', re.S)


@pytest.fixture
def refined() -> DatasetDict:
    with TGIServer(script) as server:
        return refine(server)


def rows_of(page: str) -> list[dict]:
    (blob,) = _BLOB.findall(page)
    return json.loads(blob)


def test_word_diff_marks_words_removed_and_added() -> None:
    assert word_diff("the cat sat.", "the dog sat!") == [(0, "the "), (-1, "cat "), (1, "dog "), (0, "sat"), (-1, "."), (1, "!")]
    assert word_diff("a b\n\nc", "a c") == [(0, "a "), (-1, "b\n\n"), (0, "c")]
    assert word_diff("same", "same") == [(0, "same")]
    assert word_diff("", "new text") == [(1, "new text")]


def test_every_row_with_its_diff_rounds_and_decision(refined: DatasetDict, tmp_path: Path) -> None:
    page = report(refined, tmp_path / "report.html").read_text(encoding="utf-8")
    shown = rows_of(page)
    assert [(r["p"], r["i"]) for r in shown] == [("alpaca", i) for i in range(4)] + [("mt_bench", i) for i in range(2)]
    assert [r["s"] for r in shown] == ["improved", "unchanged", "improved", "error", "improved", "improved"]
    assert shown[3]["e"].startswith("input: column 'output'")

    for view, row in zip(shown, [*refined["alpaca"], *refined["mt_bench"]]):
        if row[REFINED.error] is not None:
            continue
        trace = Trace.from_json(row[REFINED.trace])
        assert len(view["t"]) == len(trace.turns)
        for turn_view, turn in zip(view["t"], trace.turns):
            assert turn_view["n"] == turn.instruction
            # Before and after are the diff's kept+removed and kept+added runs.
            assert "".join(text for op, text in turn_view["d"] if op <= 0) == turn.original
            assert "".join(text for op, text in turn_view["d"] if op >= 0) == turn.final
            assert [r["a"] for r in turn_view["r"]] == [r.accepted for r in turn.rounds]
            assert all(r["g"] == ["Add an example.", "Be more precise.", "Mention the main caveat."] for r in turn_view["r"])

    (rejected,) = shown[1]["t"][0]["r"]
    assert rejected["w"].startswith("rejected: the judge preferred whichever answer it read first, so the two orders cancelled")
    assert [said for said, _ in rejected["v"]] == [
        "with the old answer first (as A): preferred the old answer, the one it read first",
        "with the new answer first (as A): preferred the new answer, the one it read first",
    ]
    assert rejected["x"].endswith("[edited]")  # the rejected proposal is shown; an accepted final one is the After
    assert "x" not in shown[0]["t"][0]["r"][1]


def stopped_in_the_second_turn() -> Dataset:
    """A two-turn row whose second turn's advisor call fails: the first turn is refined."""

    def script(call: Call) -> str | Error:
        if call.role == "advisor" and "Compare the two" in call.task:
            return Error(422, "Input validation error: `inputs` must have less than 4096 tokens", "validation")
        return default_script(call)

    row = {"conversations": [
        {"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "Blue."},
        {"from": "human", "value": "Compare the two."}, {"from": "gpt", "value": "They differ."},
    ]}
    with TGIServer(script) as server:
        return Dataset.from_list([row]).map(CoEvol(endpoint=server.url, max_rounds=1), batched=True)


def test_a_row_stopped_by_a_failing_call_shows_the_turns_done_before_it(tmp_path: Path) -> None:
    refined = stopped_in_the_second_turn()
    (view,) = rows_of(report(refined, tmp_path / "report.html").read_text(encoding="utf-8"))
    assert view["s"] == "error" and view["e"].startswith("validation: HTTP 422")
    (done,) = view["t"]  # the first turn, refined; the second is left as it was
    assert "".join(text for op, text in done["d"] if op >= 0) == "Blue. [edited]"
    assert view["o"] == ["Blue.", "They differ."]
    assert "what was done before it is kept" in tell(refined[0]) and "Blue. [edited]" in tell(refined[0])
    # It is counted once, as errored, and the figures say it kept an edit.
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "all (1)" in page and "improved (0)" in page and "unchanged (0)" in page and "errored (1)" in page
    assert "1 rows, 1 improved (100%), 1 of them stopped by an error after an accepted edit; errors: validation: 1" in page


def test_data_from_several_runs_shows_each_run(tmp_path: Path) -> None:
    rows = [{"instruction": "Name a colour.", "input": "", "output": "Blue."}, {"instruction": "Name a fruit.", "input": "", "output": "Pear."}]
    with TGIServer() as server:
        one = Dataset.from_list(rows[:1]).map(CoEvol(endpoint=server.url, max_rounds=1), batched=True)
        two = Dataset.from_list(rows[1:]).map(CoEvol(endpoint=server.url, max_rounds=2, judge_mode="score"), batched=True)
    page = report(concatenate_datasets([one, two]), tmp_path / "report.html").read_text(encoding="utf-8")
    assert "How this data was made: run 1 of 2, 1 rows" in page and "How this data was made: run 2 of 2, 1 rows" in page
    assert "<th>max_rounds</th><td>1</td>" in page and "<th>max_rounds</th><td>2</td>" in page and "All runs together" in page
    assert re.search(r"<th>coevol-hf</th><td>0\.1\.0 [0-9a-f]{16}</td>", page)


def test_figures_are_the_datasets_stats(refined: DatasetDict, tmp_path: Path) -> None:
    page = report(refined, tmp_path / "report.html").read_text(encoding="utf-8")
    stats = compute_stats([*refined["alpaca"], *refined["mt_bench"]])
    assert (stats.rows, stats.rows_improved, stats.judges_agree, stats.judged_rounds) == (6, 4, 12, 13)
    assert "6 rows, 4 improved (67%); errors: input: 1" in page
    assert "orders agree in 12 of 13 judged rounds" in page
    assert f"{stats.chars_before:,} → {stats.chars_after:,} characters in all" in page
    assert "They disagree in 1 round: the judge preferred whichever answer it read first in 1, the one it read second in 0." in page
    assert page.count("<svg") == 4
    assert "all (6)" in page and "improved (4)" in page and "unchanged (1)" in page and "errored (1)" in page


def test_a_split_without_rows_is_left_out(refined: DatasetDict, tmp_path: Path) -> None:
    # `map` returns a split without rows as it was: without the coevol_* columns.
    splits = DatasetDict(alpaca=refined["alpaca"], held_out=refined["alpaca"].select([]).select_columns(["instruction"]))
    views = rows_of(report(splits, tmp_path / "report.html").read_text(encoding="utf-8"))
    assert [view["p"] for view in views] == ["alpaca"] * len(refined["alpaca"])


def test_model_text_cannot_add_markup(refined: DatasetDict, tmp_path: Path) -> None:
    page = report(refined, tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count("<script") == 2 and page.count("</script>") == 2  # the data blob and the page's script
    assert "<img" not in page and "pwned" in page
    assert MARKUP in "".join(text for op, text in rows_of(page)[2]["t"][0]["d"] if op <= 0)


def test_nothing_is_fetched_from_elsewhere(refined: DatasetDict, tmp_path: Path) -> None:
    page = report(refined, tmp_path / "report.html").read_text(encoding="utf-8")
    markup = _BLOB.sub("", page)  # the data blob is JSON, never parsed as HTML
    assert not re.search(r"""\b(src|href)\s*=|@import|url\(|https?://""", markup)
    assert "default-src 'none'" in page  # and the page's policy forbids fetching anything


# -- in the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser_path() -> str:
    path = chromium()
    if path is None:
        pytest.skip(f"Chromium is not installed, so the report is not checked in a browser: {INSTALL_HINT}")
    return path


def test_page_in_chromium_shows_every_row_without_errors(refined: DatasetDict, browser_path: str, tmp_path: Path) -> None:
    # 20 copies: 120 rows over 3 pages.
    many = concatenate_datasets([split.select_columns([REFINED.trace, REFINED.error, REFINED.original]) for split in refined.values()] * 20)
    path = report(many, tmp_path / "report.html")

    async def check() -> None:
        async with Browser(browser_path) as browser:
            await browser.open(path.as_uri())
            assert await browser.evaluate("document.title") == "CoEvol report: 120 rows"
            seen: list[int] = []
            for page in range(3):
                on_page = await browser.evaluate("[...document.querySelectorAll('article.row')].map(a => Number(a.dataset.row))")
                assert len(on_page) == min(PAGE_SIZE, 120 - page * PAGE_SIZE)
                seen += on_page
                await browser.evaluate("document.getElementById('next').click()")
            assert seen == list(range(120))
            assert await browser.evaluate("document.getElementById('next').disabled") is True

            # The markup in row 2 is shown as text and never ran.
            await browser.evaluate("document.querySelector('[data-status=all]').click()")
            texts = await browser.evaluate("[...document.querySelectorAll('article.row')][2].textContent")
            assert MARKUP in texts and await browser.evaluate("document.querySelectorAll('main img, main script').length") == 0
            assert await browser.evaluate("document.title") != "pwned"

            await browser.evaluate("document.querySelector('[data-status=error]').click()")
            errored = await browser.evaluate("[...document.querySelectorAll('article.row')].map(a => a.className)")
            assert errored == ["row error"] * 20
            await browser.evaluate("document.querySelector('[data-status=all]').click()")
            assert await browser.evaluate("document.querySelectorAll('.pair ins').length") > 0

            async def search(query: str, expected: int) -> int:
                """Type `query`; the rows shown, polled until they are `expected` (the page waits for
                typing to pause before it filters), or as they are after 10 s."""
                await browser.evaluate(f"(q => {{ q.value = {query!r}; q.dispatchEvent(new Event('input')); }})(document.getElementById('query'))")
                give_up = time.monotonic() + 10
                while (shown := await browser.evaluate("document.querySelectorAll('article.row').length")) != expected and time.monotonic() < give_up:
                    await asyncio.sleep(0.05)
                return shown

            # Search looks at the data's texts, not at the page's own words about them.
            for query, rows, position in (("preferred", 0, "no row matches"), ("pwned", 20, "rows 1–20 of 20")):
                assert await search(query, rows) == rows, query
                assert await browser.evaluate("document.getElementById('position').textContent") == position
            assert await search("", PAGE_SIZE) == PAGE_SIZE
            assert await browser.evaluate("document.getElementById('position').textContent") == f"rows 1–{PAGE_SIZE} of 120"

            assert browser.console_errors == []
            assert all(url.startswith(("file:", "data:", "about:")) for url in browser.requested), browser.requested
            shot = await browser.screenshot()
            (tmp_path / "screenshot.png").write_bytes(shot)
            assert png_colours(shot) > 20  # text, charts and colours, not a blank page

    asyncio.run(check())


def test_page_in_chromium_shows_a_stopped_row_with_its_refined_turn(browser_path: str, tmp_path: Path) -> None:
    path = report(stopped_in_the_second_turn(), tmp_path / "report.html")

    async def shown() -> tuple[str, list[str]]:
        async with Browser(browser_path) as browser:
            await browser.open(path.as_uri())
            text = await browser.evaluate("document.querySelector('article.row').textContent")
            return text, browser.console_errors

    text, console_errors = asyncio.run(shown())
    assert console_errors == []
    assert "validation: HTTP 422" in text and "Blue. [edited]" in text
    assert "Response 2 (original; this run did not refine it)" in text and "They differ." in text


def test_blank_screenshot_is_told_from_a_drawn_one(browser_path: str, tmp_path: Path) -> None:
    (tmp_path / "blank.html").write_text("<!DOCTYPE html><html><body></body></html>")

    async def shot() -> bytes:
        async with Browser(browser_path) as browser:
            await browser.open((tmp_path / "blank.html").as_uri())
            return await browser.screenshot()

    assert png_colours(asyncio.run(shot())) == 1


def test_console_errors_are_caught(browser_path: str, tmp_path: Path) -> None:
    (tmp_path / "broken.html").write_text("<!DOCTYPE html><script>console.error('visible'); undefinedFunction();</script>")

    async def errors() -> list[str]:
        async with Browser(browser_path) as browser:
            await browser.open((tmp_path / "broken.html").as_uri())
            return browser.console_errors

    found = asyncio.run(errors())
    assert "visible" in found[0] and "undefinedFunction" in found[1]
