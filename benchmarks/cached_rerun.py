"""A re-run of a finished job: how long `ds.map(coevol_refine)` takes when its result is cached.

Runs the same script twice in fresh processes on a file-backed dataset of `--rows` Self-Instruct
rows against the simulator: the first run refines and fills the caches, the second must load the
result from the `datasets` cache and send no request. Reported time is the `map` call alone
(the process start and `load_dataset` are listed apart).

    python benchmarks/cached_rerun.py --rows 5000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from throughput import SimulatorProcess, alpaca_file


def child(data: str, cache: str, url: str, max_rounds: int) -> None:
    from datasets import load_dataset
    from datasets.utils.logging import disable_progress_bar

    from coevol_hf import CoEvol

    disable_progress_bar()
    started = time.perf_counter()
    dataset = load_dataset("json", data_files=data, split="train", cache_dir=cache)
    loaded = time.perf_counter()
    transform = CoEvol(endpoint=url, max_rounds=max_rounds, cache_dir=cache)
    refined = dataset.map(transform, batched=True)
    done = time.perf_counter()
    print(json.dumps({"rows": len(refined), "load_dataset_s": round(loaded - started, 2), "map_s": round(done - loaded, 2), "requests_sent": transform.calls_made}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--max-rounds", type=int, default=1)
    parser.add_argument("--child", nargs=3, metavar=("DATA", "CACHE", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.max_rounds)
        return
    simulator = SimulatorProcess(slots=32, service_time=0.1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = alpaca_file(args.rows, Path(tmp))
            for run in ("first", "re-run"):
                simulator.reset()
                command = [sys.executable, __file__, "--max-rounds", str(args.max_rounds), "--child", str(data), tmp, simulator.url]
                result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
                print(json.dumps({"run": run, **result, "requests_served": simulator.stats()["served"]}), flush=True)
    finally:
        simulator.close()


if __name__ == "__main__":
    main()
