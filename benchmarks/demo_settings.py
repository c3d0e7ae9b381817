"""Which `coevol-hf demo` settings give readable, order-consistent verdicts on the local model, and how fast.

    python benchmarks/demo_settings.py --judge-mode compare --rows 6 --max-new-tokens 160
    python benchmarks/demo_settings.py --judge-mode score --rows 4 --max-new-tokens 128 --save out/

Refines the first N rows of the demo sample (examples/data/self_instruct_sample.jsonl) on a fresh
local llama.cpp server (SmolLM2-135M-Instruct, 4 slots, no request cache), as the demo does, and
counts over the judged rounds: verdicts that could be read, rounds whose two orders named the
same winner (and how many of those were ties), rounds where both orders preferred whichever
answer came first (position bias), accepted edits, and the wall time. One setting per process,
so that each starts from a cold server like the demo.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from datasets import Dataset

from coevol_hf import CoEvol, Trace
from coevol_hf.formats import REFINED
from coevol_hf.local import LocalServer
from coevol_hf.trace import Round

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "data" / "self_instruct_sample.jsonl"


@dataclasses.dataclass
class Counts:
    judge_mode: str
    rows: int
    max_new_tokens: int
    max_rounds: int
    seconds: float = 0.0
    calls: int = 0
    judged_rounds: int = 0
    verdicts: int = 0
    readable_verdicts: int = 0
    orders_agree: int = 0
    agree_on_tie: int = 0
    first_answer_both_times: int = 0  # both orders preferred the answer shown first
    accepted: int = 0
    rows_improved: int = 0
    cut_off_answers: int = 0
    errors: int = 0


def measure(rows: list[dict], judge_mode: str, max_new_tokens: int, max_rounds: int, save: Path | None) -> Counts:
    counts = Counts(judge_mode, len(rows), max_new_tokens, max_rounds)
    with LocalServer(parallel=4) as server:
        refiner = CoEvol(endpoint=server.url, judge_mode=judge_mode, max_new_tokens=max_new_tokens, max_rounds=max_rounds, request_cache=False)
        started = time.perf_counter()
        out = Dataset.from_list(rows).map(refiner, batched=True)
        counts.seconds = round(time.perf_counter() - started, 1)
    for row in out:
        if row[REFINED.error] is not None:
            counts.errors += 1
            continue
        trace = Trace.from_json(row[REFINED.trace])
        counts.calls += trace.usage.calls
        counts.rows_improved += any(turn.accepted_rounds for turn in trace.turns)
        for turn in trace.turns:
            for round_ in turn.rounds:
                counts.cut_off_answers += len(round_.cut_off)
                counts.accepted += round_.accepted
                if not round_.judged:
                    continue
                counts.judged_rounds += 1
                verdicts = [v for v in (round_.old_first, round_.new_first) if v is not None]
                counts.verdicts += len(verdicts)
                counts.readable_verdicts += sum(v.scores is not None for v in verdicts)
                counts.orders_agree += round_.orders_agree
                counts.agree_on_tie += round_.orders_agree and round_.old_first.scores[0] == round_.old_first.scores[1]
                counts.first_answer_both_times += _first_both_times(round_)
    if save is not None:
        out.to_parquet(str(save / f"{judge_mode}-{len(rows)}rows-{max_new_tokens}tok.parquet"))
    return counts


def _first_both_times(round_: Round) -> bool:
    """Old won when shown first and new won when shown first: the judge followed the position."""
    first, second = round_.old_first.scores, round_.new_first.scores  # both as (old, new)
    return bool(first and second and first[0] > first[1] and second[1] > second[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--judge-mode", choices=("compare", "score"), default="compare")
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--max-rounds", type=int, default=2)
    parser.add_argument("--save", type=Path, help="folder to write the refined rows to (parquet)")
    args = parser.parse_args()
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()[: args.rows]]
    counts = measure(rows, args.judge_mode, args.max_new_tokens, args.max_rounds, args.save)
    print(json.dumps(dataclasses.asdict(counts)))


if __name__ == "__main__":
    main()
