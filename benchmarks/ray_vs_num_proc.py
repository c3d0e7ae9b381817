"""Server utilization with Ray Data (N actors) against `datasets` with `num_proc=N`, same rows.

Starts `tgi_simulator.py` in its own process and refines the same Self-Instruct rows twice, each
time with a fresh request cache (every call a miss, stored, as in a first run):

- `num_proc`: `ds.map(CoEvol(...), batched=True, num_proc=N)` on a file-backed dataset;
- `ray`: `coevol_hf.ray.refine_on_ray` on a local Ray instance (N CPUs, N actors), whose wall
  time includes starting the actors and reading the result back into a `datasets.Dataset`.

Each process caps its calls at `max_concurrency`, so N processes keep up to N × that in flight:
`--concurrency` defaults to the slots divided by N, so both fill the server without a 429.

    python benchmarks/ray_vs_num_proc.py --rows 500 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from datasets import load_dataset
from datasets.utils.logging import disable_progress_bar
from throughput import SimulatorProcess, alpaca_file

from coevol_hf import CoEvol


def measure(mode: str, args: argparse.Namespace, simulator: SimulatorProcess, data_file: Path, tmp: Path) -> dict[str, Any]:
    from coevol_hf.ray import refine_on_ray

    dataset = load_dataset("json", data_files=str(data_file), split="train", cache_dir=str(tmp / "hf"))
    refiner = CoEvol(endpoint=simulator.url, max_rounds=args.max_rounds, max_concurrency=args.concurrency, cache_dir=str(tmp / mode))
    refiner.server  # the /info request, outside the measured time
    simulator.reset()
    wall = time.perf_counter()
    if mode == "num_proc":
        refined = dataset.map(refiner, batched=True, batch_size=args.batch_size, num_proc=args.workers, load_from_cache_file=False)
    else:
        refined = refine_on_ray(dataset, refiner, concurrency=args.workers, batch_size=args.batch_size).dataset
    wall = time.perf_counter() - wall
    server = simulator.stats()
    return {
        "mode": f"{mode}={args.workers}" if mode == "num_proc" else f"ray, {args.workers} actors",
        "rows": len(refined),
        "errors": sum(error is not None for error in refined["coevol_error"]),
        "batch_size": args.batch_size,
        "max_concurrency_per_process": args.concurrency,
        "slots": args.slots,
        "wall_s": round(wall, 2),
        "utilization": round(server["busy_slot_seconds"] / (args.slots * wall), 3),
        "calls": server["served"],
        "calls_per_s": round(server["served"] / wall, 1),
        "server_429s": server["overloaded"],
        "peak_in_flight": server["peak_in_flight"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="num_proc, and Ray actors (and the local Ray's CPUs)")
    parser.add_argument("--batch-size", type=int, default=50, help="rows per batch; each worker needs several to overlap")
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--service-time", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, help="max_concurrency per process (default: slots / workers)")
    parser.add_argument("--max-rounds", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=["num_proc", "ray"], choices=["num_proc", "ray"])
    args = parser.parse_args()
    args.concurrency = args.concurrency or max(1, args.slots // args.workers)

    disable_progress_bar()
    simulator = SimulatorProcess(args.slots, args.service_time)
    try:
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder)
            os.environ["HF_DATASETS_CACHE"] = str(tmp / "hf")
            data_file = alpaca_file(args.rows, tmp)
            if "ray" in args.modes:
                from coevol_hf.ray import connect

                started = time.perf_counter()
                connect(num_cpus=args.workers, log_to_driver=False)
                print(json.dumps({"ray_init_s": round(time.perf_counter() - started, 2)}), flush=True)
            for mode in args.modes:
                print(json.dumps(measure(mode, args, simulator, data_file, tmp)), flush=True)
    finally:
        simulator.close()


if __name__ == "__main__":
    main()
