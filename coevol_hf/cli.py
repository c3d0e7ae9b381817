"""The `coevol-hf` command: `serve` the local model, `refine` a dataset, run the `demo`."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from importlib import resources
import time
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import CoEvolError

DEMO_SAMPLE = "self_instruct_sample.jsonl"
DATA_FILE = "data.parquet"
_DATA_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CoEvolError, OSError, ValueError) as err:
        if args.debug:
            raise
        print(f"coevol-hf {args.command}: {err}", file=sys.stderr)
        return 1


# -- serve ------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from .local import LocalServer

    with LocalServer(host=args.host, port=args.port, parallel=args.parallel, allow_remote=args.allow_remote) as server:
        print(f"Serving the local model at {server.url} (Ctrl-C to stop)", flush=True)
        # A shell starts background jobs with SIGINT ignored, and Python keeps it so: restore Ctrl-C.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr)
    return 0


# -- refine -----------------------------------------------------------------------------------


def _refine(args: argparse.Namespace) -> int:
    options = _options(args)
    if args.local:
        from .local import LocalServer

        with LocalServer() as server:
            return _run_refine(args, {**options, "endpoint": server.url})
    return _run_refine(args, options)


def _run_refine(args: argparse.Namespace, options: dict[str, Any]) -> int:
    from .transform import CoEvol

    dataset = _load(args.input, args.split, args.limit)
    transform = CoEvol(**options)
    started = time.perf_counter()
    refined = dataset.map(transform, batched=True, batch_size=args.batch_size, num_proc=args.num_proc, desc="CoEvol")
    seconds = time.perf_counter() - started
    _write(refined, transform, args, seconds)
    return 0


def _write(refined: Any, transform: Any, args: argparse.Namespace, seconds: float) -> None:
    from .card import CONFIG_FILE, build_card, split_stats
    from .hub import source_card
    from .stats import format_stats

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    refined.to_parquet(str(output / DATA_FILE))
    if args.jsonl:
        refined.to_json(str(output / "data.jsonl"), lines=True, force_ascii=False)
    run = {**transform.run_config(), "source": args.input, "split": args.split, "license": args.license, "command": _command(args)}
    (output / CONFIG_FILE).write_text(json.dumps(run, indent=2, ensure_ascii=False), encoding="utf-8")
    splits = {args.split: refined}
    stats = split_stats(splits)
    card = build_card(splits, run, source=args.input, source_card=source_card(args.input, None), license=args.license, reproduce=_reproduce(run), stats=stats)
    (output / "README.md").write_text(str(card), encoding="utf-8")
    made = None if args.num_proc else (transform.calls_made, transform.cache_hits, transform.cache_misses)
    print(format_stats(stats, calls=made, seconds=seconds))
    written = [DATA_FILE] + (["data.jsonl"] if args.jsonl else []) + [CONFIG_FILE, "README.md"]
    print(f"wrote {', '.join(written)} in {output}")


def _command(args: argparse.Namespace) -> str:
    """The command that made this run, without its token."""
    shown, skip = [], False
    for item in args.argv:
        if skip or item.startswith("--token="):
            skip = False
            continue
        if item == "--token":
            skip = True
            continue
        shown.append(item)
    return f"coevol-hf {shlex.join(shown)}"


def _reproduce(run: dict[str, Any]) -> str:
    from .card import reproduce_snippet

    return f"{reproduce_snippet(run)}\n\n# or, from the shell:\n# {run['command']}"


# -- push, card -------------------------------------------------------------------------------


def _read_output(directory: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The data (as {split: Dataset}) and run configuration that `coevol-hf refine` wrote into `directory`."""
    from datasets import Dataset

    from .card import CONFIG_FILE

    folder = Path(directory)
    missing = [name for name in (DATA_FILE, CONFIG_FILE) if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder} lacks {', '.join(missing)}: give a directory written by `coevol-hf refine`.")
    run = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    return {run.get("split") or "train": Dataset.from_parquet(str(folder / DATA_FILE), keep_in_memory=True)}, run


def _push(args: argparse.Namespace) -> int:
    from datasets import DatasetDict

    from .hub import push_to_hub

    splits, run = _read_output(args.directory)
    url = push_to_hub(DatasetDict(splits), args.repo_id, refiner=run, private=args.private or None, token=args.token, license=args.license or run.get("license"), source=run.get("source"), pretty_name=args.pretty_name)
    print(f"pushed {sum(map(len, splits.values()))} rows, the card and the run configuration to {url}")
    return 0


def _card(args: argparse.Namespace) -> int:
    from .card import build_card
    from .hub import source_card

    splits, run = _read_output(args.directory)
    source = run.get("source")
    card = build_card(splits, run, source=source, source_card=source_card(source, None) if source else None, license=args.license or run.get("license"), pretty_name=args.pretty_name, reproduce=_reproduce(run))
    path = Path(args.directory) / "README.md"
    path.write_text(str(card), encoding="utf-8")
    print(f"wrote {path}")
    return 0


def _load(source: str, split: str, limit: int | None) -> Any:
    from datasets import load_dataset

    path = Path(source)
    if path.exists():
        builder = _DATA_SUFFIXES.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"{source}: unsupported file type {path.suffix!r}; accepted: {sorted(_DATA_SUFFIXES)}, or a Hub dataset id.")
        dataset = load_dataset(builder, data_files=str(path), split="train")
    else:
        dataset = load_dataset(source, split=split)
    return dataset.select(range(min(limit, len(dataset)))) if limit is not None else dataset


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "endpoint": args.endpoint,
        "max_rounds": args.max_rounds,
        "judge_mode": args.judge_mode,
        "temperature": args.temperature,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "context_turns": args.context_turns,
        "api": args.api,
        "model": args.model,
        "structured_judge": not args.no_structured_judge,
        "format": args.format,
        "on_error": args.on_error,
        "max_concurrency": args.max_concurrency,
        "timeout": args.timeout,
        "max_retries": args.max_retries,
        "retry_backoff": args.retry_backoff,
        "request_cache": not args.no_request_cache,
        "cache_dir": args.cache_dir,
        "token": args.token or os.environ.get("COEVOL_TOKEN"),
    }
    if args.chat_template:
        options["chat_template"] = Path(args.chat_template).read_text(encoding="utf-8")
    if args.prompts:
        options["prompts"] = json.loads(Path(args.prompts).read_text(encoding="utf-8"))
    if args.column:
        options["columns"] = dict(_key_value(item) for item in args.column)
    return options


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep:
        raise ValueError(f"--column takes ROLE=NAME (for example instruction=prompt), not {item!r}")
    return key, value


# -- demo -------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from .local import LocalServer

    with resources.as_file(resources.files("coevol_hf.demo_data").joinpath(DEMO_SAMPLE)) as sample:
        argv = ["refine", str(sample), "--output", args.output, "--max-rounds", "2", "--max-new-tokens", "160", "--jsonl", "--license", "apache-2.0"]
        refine_args = _parser().parse_args(argv)
        refine_args.argv = argv
        print(f"Starting the local model (SmolLM2-135M-Instruct on llama.cpp) and refining {DEMO_SAMPLE} ...", flush=True)
        with LocalServer() as server:
            refine_args.endpoint = server.url
            _run_refine(refine_args, _options(refine_args))
    card = (Path(args.output) / "README.md").read_text(encoding="utf-8")
    example = card.split("## Example", 1)[1].split("## Reproduce", 1)[0].strip()
    print("\nOne example, before and after:\n\n" + example)
    return 0


# -- arguments --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coevol-hf", description="Refine instruction-tuning data with CoEvol.")
    parser.add_argument("--version", action="version", version=f"coevol-hf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the local model (llama.cpp + SmolLM2-135M-Instruct)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--parallel", type=int, default=4, help="requests served at once")
    serve.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    serve.set_defaults(run=_serve)

    refine = commands.add_parser("refine", help="refine a dataset file or Hub dataset")
    refine.add_argument("input", help="a .json/.jsonl/.parquet/.csv file, or a Hub dataset id")
    refine.add_argument("--output", "-o", required=True, help="directory for data.parquet and README.md")
    target = refine.add_mutually_exclusive_group()
    target.add_argument("--endpoint", help="TGI or Messages API server URL, comma-separated for replicas (default: $COEVOL_ENDPOINT)")
    target.add_argument("--local", action="store_true", help="start and use the local model")
    refine.add_argument("--split", default="train")
    refine.add_argument("--limit", type=int, help="refine only the first N rows")
    refine.add_argument("--jsonl", action="store_true", help="also write data.jsonl")
    refine.add_argument("--license", help="licence id for the card (default: the source dataset's, when known)")
    refine.add_argument("--batch-size", type=int, default=1000)
    refine.add_argument("--num-proc", type=int)
    refine.add_argument("--max-rounds", type=int, default=3)
    refine.add_argument("--judge-mode", choices=["compare", "score"], default="compare")
    refine.add_argument("--temperature", type=float, default=0.0)
    refine.add_argument("--max-new-tokens", type=int, default=1000)
    refine.add_argument("--seed", type=int, default=0)
    refine.add_argument("--context-turns", type=int, default=3)
    refine.add_argument("--api", choices=["chat", "generate"], default="chat")
    refine.add_argument("--chat-template", help="file with the Jinja chat template (with --api generate)")
    refine.add_argument("--model", help="the model the endpoint must serve")
    refine.add_argument("--no-structured-judge", action="store_true", help="free-text judge verdicts only")
    refine.add_argument("--prompts", help="JSON file of prompt template overrides")
    refine.add_argument("--format", choices=["auto", "alpaca", "sharegpt", "messages"])
    refine.add_argument("--column", action="append", help="ROLE=NAME column mapping, repeatable")
    refine.add_argument("--on-error", choices=["record", "raise"], default="record", help="a failed row: write coevol_error, or stop")
    refine.add_argument("--max-concurrency", type=int, default=64, help="calls in flight per endpoint at most")
    refine.add_argument("--timeout", type=float, default=600.0, help="seconds per call")
    refine.add_argument("--max-retries", type=int, default=6)
    refine.add_argument("--retry-backoff", type=float, default=1.0, help="first wait before a retry, in seconds")
    refine.add_argument("--no-request-cache", action="store_true", help="do not keep or reuse answered calls")
    refine.add_argument("--cache-dir", help="where the request cache lives (default: $HF_HOME/coevol-hf)")
    refine.add_argument("--token", help="token for the endpoint (default: $COEVOL_TOKEN)")
    refine.set_defaults(run=_refine)

    push = commands.add_parser("push", help="push a directory written by `refine` to the Hub, with its card")
    push.add_argument("directory")
    push.add_argument("repo_id", help="namespace/name of the dataset repo (created if needed)")
    push.add_argument("--private", action="store_true")
    push.add_argument("--token", help="Hub token with write access (default: the saved one)")
    card = commands.add_parser("card", help="render the dataset card of a directory written by `refine`")
    card.add_argument("directory")
    for command in (push, card):
        command.add_argument("--license", help="licence id for the card (default: the source dataset's, when known)")
        command.add_argument("--pretty-name")
    push.set_defaults(run=_push)
    card.set_defaults(run=_card)

    demo = commands.add_parser("demo", help="refine a small real sample on the local model")
    demo.add_argument("--output", "-o", default="coevol-demo")
    demo.set_defaults(run=_demo)

    for command in (serve, refine, push, card, demo):
        command.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


if __name__ == "__main__":
    sys.exit(main())
