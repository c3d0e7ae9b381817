"""How full coevol-hf keeps a server's slots, and what it costs on the client.

Starts `tgi_simulator.py` in its own process, refines N rows of real Self-Instruct seed tasks
(repeated, each copy numbered so no two requests are equal) and prints one JSON line per mode:

- `map`: `ds.map(CoEvol(...), batched=True)`, the plain call a user writes;
- `async-map`: the same transform wrapped in an `async def` so that `datasets`' own async
  support runs batches concurrently (each in a worker thread);
- `sequential`: every row's calls strictly one after another, `--concurrency` rows at a time,
  the execution model of the original CoEvol code (a thread pool of sequential samples).

Client CPU is the whole process's CPU time per LLM call over the whole `map`, its start included
(datasets' fingerprint and the probe it triggers, opening connections and the request cache)
and its tail (the last rounds, with few calls in flight); `client_cpu_ms_per_call_steady` is the
same between the 10% and the 90% of the calls, without them; `client_cpu_kernel_share` is the
part of it spent in the kernel (sockets, the request cache's file writes).

With `--local`, the server is the real local model (llama.cpp, SmolLM2-135M) instead of the
simulator, and the report gives rows per minute and generated tokens per second.

    python benchmarks/throughput.py --rows 500 --modes map sequential
    python benchmarks/throughput.py --local --rows 12 --max-rounds 1 --max-new-tokens 128 --concurrency 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from datasets import Dataset, load_dataset
from datasets.utils.logging import disable_progress_bar

from coevol_hf import CoEvol
from coevol_hf.formats import read_row

SEED_TASKS = Path(__file__).resolve().parents[1] / "tests" / "data" / "self_instruct_seed_tasks.jsonl"


def alpaca_file(rows: int, directory: Path) -> Path:
    """`rows` Alpaca rows from the 175 seed tasks, copies numbered so every prompt is distinct."""
    tasks = [json.loads(line) for line in SEED_TASKS.read_text().splitlines()]
    path = directory / f"seed_tasks_{rows}.jsonl"
    with path.open("w") as out:
        for i in range(rows):
            task = tasks[i % len(tasks)]
            instance = task["instances"][0]
            copy = f" (copy {i // len(tasks)})" if i >= len(tasks) else ""
            out.write(json.dumps({"instruction": task["instruction"] + copy, "input": instance["input"], "output": instance["output"]}) + "\n")
    return path


class SimulatorProcess:
    def __init__(self, slots: int, service_time: float) -> None:
        script = Path(__file__).with_name("tgi_simulator.py")
        command = [sys.executable, str(script), "--slots", str(slots), "--service-time", str(service_time)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.url = self.process.stdout.readline().strip()

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/stats") as answer:
            return json.load(answer)

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(self.url + "/stats/reset", method="POST")).close()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait()


class CallMeter:
    """Samples (process CPU time, LLM calls) in a thread while a mode runs."""

    def __init__(self, calls: Callable[[], int], interval: float = 0.1) -> None:
        self.samples: list[tuple[float, int]] = []
        self._calls, self._interval, self._stop = calls, interval, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "CallMeter":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.process_time(), self._calls()))
            self._stop.wait(self._interval)

    def steady_ms_per_call(self, calls: int) -> float | None:
        """CPU per call from the sample that saw 10% of `calls` to the one that saw 90%."""
        start = next((s for s in self.samples if s[1] >= 0.1 * calls), None)
        end = next((s for s in self.samples if s[1] >= 0.9 * calls), None)
        if start is None or end is None or end[1] == start[1]:
            return None
        return round(1000 * (end[0] - start[0]) / (end[1] - start[1]), 3)


def run_map(transform: CoEvol, dataset: Dataset, batch_size: int) -> Dataset:
    return dataset.map(transform, batched=True, batch_size=batch_size, load_from_cache_file=False)


def run_async_map(transform: CoEvol, dataset: Dataset, batch_size: int) -> Dataset:
    async def refine(batch: dict[str, list]) -> dict[str, list]:
        return await asyncio.to_thread(transform, batch)

    return dataset.map(refine, batched=True, batch_size=batch_size, load_from_cache_file=False)


def run_sequential(transform: CoEvol, dataset: Dataset, concurrency: int) -> int:
    """Each row's agents called one after another; `concurrency` rows at a time."""
    from coevol_hf.protocol import refine_conversation

    options = transform.options
    fmt = options.columns.detect(dataset.column_names)
    session = transform.session
    session.server()

    async def main() -> int:
        rows = asyncio.Semaphore(concurrency)

        async def one(row: dict[str, Any]) -> None:
            one_at_a_time = asyncio.Lock()

            async def chat(messages: Any, *, schema: dict | None = None, affinity: str | None = None) -> Any:
                async with one_at_a_time:
                    return await session(messages, schema=schema, affinity=affinity)

            async with rows:
                await refine_conversation(read_row(fmt, row, options.columns), options, chat)

        await asyncio.gather(*(one(row) for row in dataset))
        await session.aclose()
        return session.calls_sent

    return asyncio.run(main())


def measure(mode: str, args: argparse.Namespace, simulator: SimulatorProcess, dataset: Dataset, cache_dir: Path) -> dict[str, Any]:
    # A fresh request cache per mode: every call is a miss, and is stored, as in a first run.
    transform = CoEvol(endpoint=simulator.url, max_rounds=args.max_rounds, max_concurrency=args.concurrency, cache_dir=str(cache_dir / mode))
    transform.server  # the one /info request, outside the measured time
    simulator.reset()
    with CallMeter(lambda: transform.calls_made) as meter:
        usage, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        if mode == "map":
            run_map(transform, dataset, args.batch_size)
            calls = transform.calls_made
        elif mode == "async-map":
            run_async_map(transform, dataset, args.batch_size)
            calls = transform.calls_made
        else:
            calls = run_sequential(transform, dataset, args.concurrency)
        wall, after = time.perf_counter() - wall, resource.getrusage(resource.RUSAGE_SELF)
    user, system = after.ru_utime - usage.ru_utime, after.ru_stime - usage.ru_stime
    server = simulator.stats()
    return {
        "mode": mode,
        "rows": len(dataset),
        "batch_size": args.batch_size if mode != "sequential" else None,
        "concurrency": args.concurrency,
        "slots": args.slots,
        "service_time": args.service_time,
        "wall_s": round(wall, 2),
        "utilization": round(server["busy_slot_seconds"] / (args.slots * wall), 3),
        "calls": calls,
        "calls_per_s": round(calls / wall, 1),
        "client_cpu_ms_per_call": round(1000 * (user + system) / max(calls, 1), 3),
        "client_cpu_kernel_share": round(system / (user + system), 3) if user + system else 0.0,
        "client_cpu_ms_per_call_steady": meter.steady_ms_per_call(calls),
        "server_429s": server["overloaded"],
        "peak_in_flight": server["peak_in_flight"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def measure_local(args: argparse.Namespace, dataset: Dataset, cache_dir: Path) -> dict[str, Any]:
    from coevol_hf.local import LocalServer

    with LocalServer(parallel=args.concurrency) as server:
        transform = CoEvol(endpoint=server.url, max_rounds=args.max_rounds, max_new_tokens=args.max_new_tokens, max_concurrency=args.concurrency, cache_dir=str(cache_dir / "local"))
        transform.server
        wall = time.perf_counter()
        refined = run_map(transform, dataset, args.batch_size)
        wall = time.perf_counter() - wall  # no client CPU: llama.cpp runs inside this process
    usage = [json.loads(t)["usage"] for t in refined["coevol_trace"] if t]
    generated = sum(u["completion_tokens"] for u in usage)
    return {
        "mode": "map, local llama.cpp SmolLM2-135M",
        "rows": len(refined),
        "slots": args.concurrency,
        "max_rounds": args.max_rounds,
        "max_new_tokens": args.max_new_tokens,
        "wall_s": round(wall, 1),
        "rows_per_min": round(60 * len(refined) / wall, 1),
        "calls": transform.calls_made,
        "generated_tokens_per_s": round(generated / wall, 1),
        "prompt_tokens": sum(u["prompt_tokens"] for u in usage),
        "errors": sum(e is not None for e in refined["coevol_error"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--modes", nargs="+", default=["map", "sequential"], choices=["map", "async-map", "sequential"])
    parser.add_argument("--batch-size", type=int, default=1000, help="map's batch_size (datasets' default: 1000)")
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--service-time", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=32, help="max_concurrency, and rows at a time in sequential mode")
    parser.add_argument("--max-rounds", type=int, default=3)
    parser.add_argument("--local", action="store_true", help="the real local model instead of the simulator")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="with --local")
    args = parser.parse_args()

    disable_progress_bar()
    if args.local:
        with tempfile.TemporaryDirectory() as tmp:
            dataset = load_dataset("json", data_files=str(alpaca_file(args.rows, Path(tmp))), split="train", cache_dir=tmp)
            print(json.dumps(measure_local(args, dataset, Path(tmp))), flush=True)
        return
    simulator = SimulatorProcess(args.slots, args.service_time)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["HF_DATASETS_CACHE"] = tmp
            dataset = load_dataset("json", data_files=str(alpaca_file(args.rows, Path(tmp))), split="train", cache_dir=tmp)
            for mode in args.modes:
                print(json.dumps(measure(mode, args, simulator, dataset, Path(tmp))), flush=True)
    finally:
        simulator.close()


if __name__ == "__main__":
    main()
