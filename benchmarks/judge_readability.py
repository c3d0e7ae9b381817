"""Share of judge verdicts that can be read, on the local SmolLM2-135M, with and without a schema.

    python benchmarks/judge_readability.py [--rows 20]

Refines the first N Self-Instruct seed tasks (one round each) twice on the local llama.cpp server:
once with free-text verdicts (structured_judge=False), once with the judge's JSON schema enforced
by the server. Counts, over all judge calls made, how many verdicts `parse_verdict` could read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from datasets import Dataset

from coevol_hf import CoEvol
from coevol_hf.judge import parse_verdict
from coevol_hf.local import LocalServer

SEED_TASKS = Path(__file__).resolve().parents[1] / "tests" / "data" / "self_instruct_seed_tasks.jsonl"


def rows(n: int) -> list[dict]:
    tasks = [json.loads(line) for line in SEED_TASKS.read_text().splitlines()[:n]]
    return [{"instruction": t["instruction"], "input": t["instances"][0]["input"], "output": t["instances"][0]["output"]} for t in tasks]


def readable_share(url: str, data: Dataset, structured: bool) -> tuple[int, int]:
    out = data.map(CoEvol(endpoint=url, max_rounds=1, max_new_tokens=128, structured_judge=structured), batched=True)
    readable = total = 0
    for trace in out["coevol_trace"]:
        for round_ in json.loads(trace)["turns"][0]["rounds"]:
            for verdict in (round_["verdicts"] or {}).values():
                total += 1
                readable += parse_verdict(verdict["text"], "compare") is not None
    return readable, total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args()
    data = Dataset.from_list(rows(args.rows))
    with LocalServer(parallel=4) as server:
        for structured in (False, True):
            started = time.perf_counter()
            readable, total = readable_share(server.url, data, structured)
            share = readable / total if total else float("nan")
            label = "schema-enforced JSON" if structured else "free text"
            print(f"{label}: {readable} of {total} judge verdicts readable ({share:.0%}), {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
