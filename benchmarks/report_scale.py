"""Size and speed of the HTML report at 10,000 rows: writing it, its file size, and opening it in Chromium.

    python benchmarks/report_scale.py --rows 10000

The rows are the 175 Self-Instruct seed tasks repeated, with traces of the size a real run
writes at 160 new tokens (the demo's): four debate turns of ~700 characters, three suggestions,
an edit, two JSON verdicts; 1 to 3 rounds, about 40% of rows improved, 3% errored. The report
carries no debate, so they only cost the time to parse the traces. Opening is timed in headless
Chromium (tests/browser_check.py) to the first rendered page of rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from datasets import Dataset

from coevol_hf.formats import REFINED
from coevol_hf.report import report
from coevol_hf.trace import Debate, Round, RunInfo, Trace, Turn, Usage, Verdict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from browser_check import Browser  # noqa: E402

SEED_TASKS = ROOT / "tests" / "data" / "self_instruct_seed_tasks.jsonl"
RUN = RunInfo("0.1.0", "0" * 64, "HuggingFaceTB/SmolLM2-135M-Instruct", {"kind": "openai", "version": None}, {"judge_mode": "compare", "max_rounds": 3, "max_new_tokens": 160}, "0" * 64)
WORDS = "the answer should give a concrete example and state its assumptions clearly because readers need to check each step".split()


def prose(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(WORDS))
    return " ".join(words).capitalize() + "."


def edited(rng: random.Random, text: str) -> str:
    words = text.split(" ")
    for _ in range(max(1, len(words) // 15)):
        words[rng.randrange(len(words))] = rng.choice(WORDS)
    return " ".join(words) + " " + prose(rng, 120)


def verdict(rng: random.Random, better: str) -> str:
    return json.dumps({"better": better, "reason": prose(rng, 150)})


def row(rng: random.Random, task: dict) -> dict:
    instruction, original = task["instruction"], task["instances"][0]["output"]
    if rng.random() < 0.03:
        return {REFINED.original: [original], REFINED.trace: None, REFINED.error: "validation: HTTP 422: input too long"}
    rounds, current = [], original
    for number in range(1, rng.randint(1, 3) + 1):
        edit = edited(rng, current)
        accepted = rng.random() < 0.4
        first, second = ((0.0, 1.0), (0.0, 1.0)) if accepted else ((1.0, 0.0), (0.0, 1.0))
        rounds.append(
            Round(
                number,
                Debate(*(prose(rng, 700) for _ in range(4))),
                advice="\n".join(f"- {prose(rng, 80)}" for _ in range(3)),
                suggestions=tuple(prose(rng, 80) for _ in range(3)),
                edit=edit,
                old_first=Verdict(verdict(rng, "B" if accepted else "A"), first),
                new_first=Verdict(verdict(rng, "A"), second),
                scores=(first[0] + second[0], first[1] + second[1]),
                accepted=accepted,
                stop=None if accepted else "not_better",
            )
        )
        if not accepted:
            break
        current = edit
    trace = Trace(RUN, (Turn(0, instruction, original, tuple(rounds)),), Usage(len(rounds) * 8, 4000, 1200, 0))
    return {REFINED.original: [original], REFINED.trace: trace.to_json(), REFINED.error: None}


async def open_in_browser(path: Path) -> tuple[int, int, int]:
    async with Browser() as browser:
        await browser.open(path.as_uri())
        rendered = int(await browser.evaluate("document.body.dataset.renderedMs"))
        read = round(await browser.evaluate("performance.getEntriesByType('navigation')[0].responseEnd"))
        started = time.perf_counter()
        await browser.evaluate("document.querySelector('[data-status=improved]').click()")
        filtered = round((time.perf_counter() - started) * 1000)
        assert not browser.console_errors, browser.console_errors
        return read, rendered, filtered


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    rng = random.Random(0)
    tasks = [json.loads(line) for line in SEED_TASKS.read_text().splitlines()]
    data = Dataset.from_list([row(rng, tasks[n % len(tasks)]) for n in range(args.rows)])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "report.html"
        started, cpu = time.perf_counter(), time.process_time()
        report(data, path)
        written, cpu = time.perf_counter() - started, time.process_time() - cpu
        read, rendered, filtered = asyncio.run(open_in_browser(path))
        print(
            f"{args.rows} rows: report written in {written:.1f} s ({cpu:.1f} s CPU), {path.stat().st_size / 1e6:.1f} MB; "
            f"file read by {read} ms, first page rendered by {rendered} ms after navigation start; filtering to improved rows {filtered} ms"
        )


if __name__ == "__main__":
    main()
