"""The `coevol-hf` command: `serve` the local model, `refine` a dataset, `push` it or render its `card`, run the `demo`."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import signal
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .errors import CoEvolError
from .options import CoEvolOptions, add_arguments, options_from_arguments

DEMO_SAMPLE = "self_instruct_sample.jsonl"
DATA_FILE = "data.parquet"
JSONL_FILE = "data.jsonl"
CARD_FILE = "README.md"
# What coevol-hf wrote in an output folder (name -> SHA-256), so that it never replaces a user's file.
MANIFEST_FILE = ".coevol-hf-files.json"
_DATA_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
# Suffixes that make a missing name a local file rather than a Hub id (ids may hold dots: "org/data-2.5").
_FILE_SUFFIXES = {*_DATA_SUFFIXES, ".txt", ".tsv", ".arrow", ".gz", ".bz2", ".xz", ".zst", ".zip", ".tar"}
# Flags whose value is a local path: the recorded command keeps the file name only.
_PATH_FLAGS = {"--output", "-o", "--chat-template", "--prompts", "--cache-dir"}
# Flags whose value is an address: kept only if it is one of Hugging Face's API hosts.
_ADDRESS_FLAGS = {"--endpoint", "--ray"}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except OSError as err:  # a file a flag names (--prompts, --chat-template) cannot be read
        reason = f"cannot read {err.filename}: {err.strerror}" if err.filename else str(err)
        print(f"coevol-hf {next((a for a in argv if not a.startswith('-')), '')}: {reason}", file=sys.stderr)
        return 1
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
    folder = OutputFolder(Path(args.output))
    folder.check(overwrite=args.overwrite, source=args.input)
    dataset = _load(args.input, args.split, args.limit)
    if args.local:
        from .local import LocalServer

        with LocalServer() as server:
            return _run_refine(args, dataset, {**options, "endpoint": server.url}, folder)
    return _run_refine(args, dataset, options, folder)


def _run_refine(args: argparse.Namespace, dataset: Any, options: dict[str, Any], folder: OutputFolder) -> int:
    from .transform import CoEvol

    transform = CoEvol(**options)
    if args.ray:
        from .ray import connect, refine_on_ray

        connect(None if args.ray == "local" else args.ray)
        run = refine_on_ray(dataset, transform, concurrency=args.ray_actors, batch_size=args.batch_size)
        _write(run.dataset, transform, args, folder, run.seconds, reused=False, calls=run.calls)
        return 0
    before = _cache_files_state(dataset)
    started = time.perf_counter()
    refined = dataset.map(
        transform, batched=True, batch_size=args.batch_size, num_proc=args.num_proc, load_from_cache_file=not args.retry_errors, desc="CoEvol"
    )
    seconds = time.perf_counter() - started
    reused = bool(refined.cache_files) and all(before.get(f["filename"]) == _file_state(f["filename"]) for f in refined.cache_files)
    _write(refined, transform, args, folder, seconds, reused)
    return 0


def _write(refined: Any, transform: Any, args: argparse.Namespace, folder: OutputFolder, seconds: float, reused: bool, calls: tuple[int, int, int] | None = None) -> None:
    """Write the data, the run configuration, the card and the report; print the summary.

    `calls`: (requests sent, cache hits, misses) when another engine counted them (Ray).
    """
    from .card import CONFIG_FILE, build_card, recorded_runs, split_stats
    from .hub import source_card
    from .report import REPORT_FILE, report
    from .stats import format_stats

    source = _public_source(args.input)
    splits = {_split_name(args.split): refined}
    # The run the rows record made them (a result from the datasets cache: an earlier server
    # version, and no server needed); the operator says it only when no row got a trace.
    recorded, _ = recorded_runs(splits)
    made_by = recorded[0].config() if len(recorded) == 1 else transform.run_config()
    run = {**made_by, "source": source, "split": args.split, "license": args.license, "command": _command(args)}
    stats = split_stats(splits)
    card = build_card(splits, run, source=source, source_card=source_card(args.input, None), license=args.license, reproduce=_reproduce(run), stats=stats)
    written = {DATA_FILE: lambda path: refined.to_parquet(str(path))}
    if args.jsonl:
        written[JSONL_FILE] = lambda path: refined.to_json(str(path), lines=True, force_ascii=False)
    written[CONFIG_FILE] = lambda path: path.write_text(json.dumps(run, indent=2, ensure_ascii=False), encoding="utf-8")
    written[CARD_FILE] = lambda path: path.write_text(str(card), encoding="utf-8")
    written[REPORT_FILE] = lambda path: report(refined, path)
    folder.remove_earlier(keep=list(written))
    for name, write in written.items():
        folder.write(name, write)

    made = calls if calls is not None else None if args.num_proc or reused else (transform.calls_made, transform.cache_hits, transform.cache_misses)
    print(format_stats(stats, calls=made, seconds=seconds))
    if reused:
        print(f"result loaded from the datasets cache: no LLM call was made; the {stats.llm_calls} above are the calls recorded in the data")
        if stats.errors_by_kind:
            print(f"rows with a coevol_error: {sum(stats.errors_by_kind.values())}; --retry-errors asks again for their calls only")
    print(f"wrote {', '.join(written)} in {folder.path}")
    print(f"report: {folder.path / REPORT_FILE}")


def _cache_files_state(dataset: Any) -> dict[str, tuple[int, int]]:
    """Every cache file beside the dataset's own, with its modification time and size: `map` rewrites what it computes."""
    folders = {Path(entry["filename"]).parent for entry in dataset.cache_files}
    return {str(path): _file_state(path) for folder in folders for path in folder.glob("*.arrow")}


def _file_state(path: str | Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size


class OutputFolder:
    """A folder coevol-hf writes into, and the files it wrote there (kept in `MANIFEST_FILE`).

    Files the manifest does not list, or that changed since coevol-hf wrote them, are the
    user's: a folder holding any is refused without `--overwrite`, and even then only the
    files coevol-hf writes are replaced.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files = self._read_manifest()

    def _read_manifest(self) -> dict[str, str | None]:
        try:
            files = json.loads((self.path / MANIFEST_FILE).read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return {}
        return files if isinstance(files, dict) else {}

    def check(self, *, overwrite: bool, source: str | None = None, names: Sequence[str] = ()) -> None:
        """Refuse, before any work, to write where a user's files would be lost."""
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"{self.path} is a file, not a folder: give a folder for the output.")
        if source is not None and Path(source).is_file() and Path(source).resolve().parent == self.path.resolve():
            from .card import CONFIG_FILE

            if Path(source).name in (DATA_FILE, JSONL_FILE, CARD_FILE, CONFIG_FILE, MANIFEST_FILE):
                raise ValueError(f"{source} is the input: writing the output into {self.path} would replace it; give another folder.")
        theirs = [name for name in self._present() if not self.wrote(name) and (not names or name in names)]
        if theirs and not overwrite:
            listed = ", ".join(theirs[:5]) + (f" and {len(theirs) - 5} more" if len(theirs) > 5 else "")
            advice = "pass --overwrite to replace them" if names else "give a new or empty folder, or pass --overwrite"
            raise ValueError(f"{self.path} holds files coevol-hf did not write ({listed}): {advice}.")

    def wrote(self, name: str) -> bool:
        """Whether `name` is a file coevol-hf wrote here and nobody changed since."""
        path = self.path / name
        if name not in self.files or not path.is_file():
            return False
        digest = self.files[name]
        return digest is None or digest == _sha256(path)  # None: the write was interrupted

    def remove_earlier(self, keep: Sequence[str]) -> None:
        """Remove the files an earlier run wrote here that this one does not write (unchanged ones only)."""
        for name in [n for n in self.files if n not in keep]:
            if self.wrote(name):
                (self.path / name).unlink()
            del self.files[name]
        self._save()

    def write(self, name: str, write: Callable[[Path], Any]) -> None:
        """Write one file, recorded before (an interrupted write stays ours) and after (its digest)."""
        self.files[name] = None
        self._save()
        write(self.path / name)
        self.files[name] = _sha256(self.path / name)
        self._save()

    def _present(self) -> list[str]:
        return sorted(p.name for p in self.path.iterdir() if p.name != MANIFEST_FILE) if self.path.is_dir() else []

    def _save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        manifest = {"written_by": f"coevol-hf {__version__}", "files": self.files}
        (self.path / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _public_source(source: str) -> str:
    """A local file by its name only (its folder is the user's business); a Hub id as it is."""
    return Path(source).name if Path(source).exists() else source


def _command(args: argparse.Namespace) -> str:
    """The command that made this run, fit to publish: no token, no local paths, no private endpoint."""
    shown: list[str] = []
    pending: str | None = None  # the flag whose value comes next
    for item in args.argv:
        if pending == "--ray" and item.startswith("-"):
            pending = None  # --ray without an address (argparse's rule for an optional value)
        if pending is not None:
            if pending != "--token":
                shown.append(_public_value(pending, item))
            pending = None
            continue
        flag, has_value, value = item.partition("=")
        if flag == "--token":
            pending = None if has_value else flag
        elif flag in _PATH_FLAGS | _ADDRESS_FLAGS and item.startswith("--"):
            if has_value:
                shown.append(f"{flag}={_public_value(flag, value)}")
            else:
                shown.append(flag)
                pending = flag
        elif item == "-o":
            shown.append(item)
            pending = item
        elif item.startswith("-o") and not item.startswith("--"):
            shown.append("-o" + _public_value("-o", item[2:]))
        elif item == args.input:
            shown.append(_public_source(item))
        else:
            shown.append(item)
    from .card import known_secrets, redact

    secrets = known_secrets(args.token)
    return "coevol-hf " + shlex.join(redact(item, secrets) for item in shown)


def _public_value(flag: str, value: str) -> str:
    from .card import public_endpoint

    if flag == "--ray" and value in ("auto", "local"):
        return value
    if flag in _ADDRESS_FLAGS:
        return ",".join(map(public_endpoint, value.split(",")))
    return Path(value).name


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
    return {_split_name(run.get("split") or "train"): Dataset.from_parquet(str(folder / DATA_FILE), keep_in_memory=True)}, run


def _split_name(spec: str) -> str:
    """The name a split is written and pushed under: `train` for `train[:100]`; `train` for a sum
    of splits (`train+test`), which has no name of its own."""
    name = re.match(r"\w+(?:\.\w+)*", spec)
    return name.group(0) if name and "+" not in spec else "train"


def _push(args: argparse.Namespace) -> int:
    from datasets import DatasetDict

    from .hub import push_to_hub

    splits, run = _read_output(args.directory)
    url = push_to_hub(DatasetDict(splits), args.repo_id, refiner=run, private=args.private or None, token=args.token, license=args.license, source=run.get("source"), pretty_name=args.pretty_name, replace_card=args.replace_card)
    print(f"pushed {sum(map(len, splits.values()))} rows, the card and the run configuration to {url}")
    return 0


def _card(args: argparse.Namespace) -> int:
    from .card import build_card
    from .hub import source_card

    splits, run = _read_output(args.directory)
    folder = OutputFolder(Path(args.directory))
    folder.check(overwrite=args.overwrite, names=[CARD_FILE])
    source = run.get("source")
    card = build_card(splits, run, source=source, source_card=source_card(source, None) if source else None, license=args.license, pretty_name=args.pretty_name, reproduce=_reproduce(run))
    folder.write(CARD_FILE, lambda path: path.write_text(str(card), encoding="utf-8"))
    print(f"wrote {folder.path / CARD_FILE}")
    return 0


def _load(source: str, split: str, limit: int | None) -> Any:
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError

    path = Path(source)
    if path.exists():
        if split != "train":
            raise ValueError(f"--split names a split of a Hub dataset; {source} is a local file, read whole: drop --split (--limit N takes its first N rows).")
        builder = _DATA_SUFFIXES.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"{source}: unsupported file type {path.suffix!r}; accepted: {sorted(_DATA_SUFFIXES)}, or a Hub dataset id.")
        try:
            dataset = load_dataset(builder, data_files=str(path), split="train")
        except StopIteration:  # what datasets' json reader raises for an empty file
            raise ValueError(f"{source} is empty: nothing to refine.") from None
        except DatasetGenerationError as err:  # a malformed line: the reader's own words say where
            raise ValueError(f"{source} cannot be read as {builder}: {err.__cause__ or err}") from err
    elif _names_a_file(source):
        raise FileNotFoundError(f"no such file: {source}")
    else:
        dataset = load_dataset(source, split=split)
    if len(dataset) == 0:
        raise ValueError(f"{source} has no rows: nothing to refine.")
    return dataset.select(range(min(limit, len(dataset)))) if limit is not None else dataset


def _count_of(what: str) -> Callable[[str], int]:
    """A flag's converter to a whole number of `what`, at least 1."""

    def convert(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"expected a whole number of {what}, at least 1, not {text!r}")
        return int(text)

    return convert


def _names_a_file(source: str) -> bool:
    """Whether `source` can only be a local path: a file suffix, or a path form no Hub id (`namespace/name`) has."""
    return Path(source).suffix.lower() in _FILE_SUFFIXES or source.startswith((".", "/", "~")) or "\\" in source or source.count("/") > 1


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The `CoEvol` keywords the command line sets (the others keep their defaults)."""
    if args.local and args.endpoint:
        raise ValueError("--local starts its own server: drop --endpoint, or --local.")
    if args.ray and args.num_proc:
        raise ValueError("--ray and --num-proc are two ways to run in parallel: give one.")
    if args.local and args.ray not in (None, "local"):
        raise ValueError("--local serves the model on this machine only: use --ray without an address, or --endpoint.")
    if args.retry_errors and not args.request_cache:
        raise ValueError("--retry-errors relies on the request cache to answer the rows that succeeded: drop --no-request-cache.")
    options = options_from_arguments(args, CoEvolOptions)
    token = args.token or os.environ.get("COEVOL_TOKEN")
    if token:
        options["token"] = token
    return options


# -- demo -------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from .local import LocalServer

    folder = OutputFolder(Path(args.output))
    folder.check(overwrite=args.overwrite)
    with resources.as_file(resources.files("coevol_hf.demo_data").joinpath(DEMO_SAMPLE)) as sample:
        # Chosen from benchmarks/demo_settings.py: the compare judge read 23 of 24 verdicts (score: 12 of 16).
        argv = ["refine", str(sample), "--output", args.output, "--judge-mode", "compare", "--max-rounds", "2", "--max-new-tokens", "160", "--jsonl", "--license", "apache-2.0"]
        refine_args = _parser().parse_args(argv)
        refine_args.argv = argv
        dataset = _load(str(sample), "train", None)
        print(f"Starting the local model (SmolLM2-135M-Instruct on llama.cpp) and refining {DEMO_SAMPLE} ...", flush=True)
        with LocalServer() as server:
            refine_args.endpoint = server.url
            _run_refine(refine_args, dataset, _options(refine_args), folder)
    from datasets import Dataset

    from .story import story

    refined = Dataset.from_parquet(str(folder.path / DATA_FILE), keep_in_memory=True)
    print("\n" + story(refined))
    return 0


# -- report -----------------------------------------------------------------------------------


def _report(args: argparse.Namespace) -> int:
    from .report import REPORT_FILE, report

    splits, _ = _read_output(args.directory)
    (data,) = splits.values()
    folder = OutputFolder(Path(args.directory))
    folder.check(overwrite=args.overwrite, names=[REPORT_FILE])
    folder.write(REPORT_FILE, lambda path: report(data, path))
    print(f"report: {folder.path / REPORT_FILE}")
    return 0


# -- arguments --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    # allow_abbrev=False everywhere: `--tok` must not be taken for `--token` (and then be recorded).
    parser = argparse.ArgumentParser(prog="coevol-hf", description="Refine instruction-tuning data with CoEvol.", allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"coevol-hf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the local model (llama.cpp + SmolLM2-135M-Instruct)", allow_abbrev=False)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--parallel", type=int, default=4, help="requests served at once")
    serve.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    serve.set_defaults(run=_serve)

    refine = commands.add_parser("refine", help="refine a dataset file or Hub dataset", allow_abbrev=False)
    refine.add_argument("input", help="a .json/.jsonl/.parquet/.csv file, or a Hub dataset id")
    refine.add_argument("--output", "-o", required=True, help="folder for data.parquet (and data.jsonl with --jsonl), coevol_config.json, README.md (the card), report.html and .coevol-hf-files.json (what coevol-hf wrote)")
    refine.add_argument("--local", action="store_true", help="start and use the local model")
    # The command line's own defaults: both are read from the environment, the token only here.
    refine.add_argument("--endpoint", help="TGI or Messages API server URL, comma-separated for replicas (default: $COEVOL_ENDPOINT)")
    refine.add_argument("--token", help="token for the endpoint (default: $COEVOL_TOKEN)")
    add_arguments(refine, CoEvolOptions, skip=("endpoint", "token"))
    refine.add_argument("--split", default="train")
    refine.add_argument("--limit", type=_count_of("rows"), help="refine only the first N rows")
    refine.add_argument("--jsonl", action="store_true", help="also write data.jsonl")
    refine.add_argument("--license", help="licence id for the card (default: the source dataset's, when known)")
    refine.add_argument("--batch-size", type=_count_of("rows"), default=1000)
    refine.add_argument("--num-proc", type=_count_of("processes"))
    refine.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS", help="run on Ray Data: a local instance on 127.0.0.1, or the cluster at ADDRESS ('auto', 'ray://head:10001'); needs coevol-hf[ray]")
    refine.add_argument("--ray-actors", type=_count_of("actors"), default=2, help="with --ray: actors, each with its own connections, max_concurrency and request cache")
    refine.add_argument("--retry-errors", action="store_true", help="refine again the rows recorded with coevol_error; the request cache answers the others")
    refine.set_defaults(run=_refine)

    push = commands.add_parser("push", help="push a directory written by `refine` to the Hub, with its card", allow_abbrev=False)
    push.add_argument("directory")
    push.add_argument("repo_id", help="namespace/name of the dataset repo (created if needed)")
    push.add_argument("--private", action="store_true")
    push.add_argument("--token", help="Hub token with write access (default: the saved one)")
    push.add_argument("--replace-card", action="store_true", help="replace the repo card's whole text, not only the part coevol-hf generated")
    card = commands.add_parser("card", help="render the dataset card of a directory written by `refine`", allow_abbrev=False)
    card.add_argument("directory")
    for command in (push, card):
        command.add_argument("--license", help="licence id for the card (default: the source dataset's, when known)")
        command.add_argument("--pretty-name")
    push.set_defaults(run=_push)
    card.set_defaults(run=_card)

    demo = commands.add_parser("demo", help="refine a small real sample on the local model", allow_abbrev=False)
    demo.add_argument("--output", "-o", default="coevol-demo")
    demo.set_defaults(run=_demo)

    report_command = commands.add_parser("report", help="write report.html (every row's changes, suggestions, verdicts and decision) into a directory written by `refine`", allow_abbrev=False)
    report_command.add_argument("directory")
    report_command.set_defaults(run=_report)

    for command in (refine, card, demo, report_command):
        command.add_argument("--overwrite", action="store_true", help="replace files in the output folder that coevol-hf did not write")
    for command in (serve, refine, push, card, demo, report_command):
        command.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


if __name__ == "__main__":
    sys.exit(main())
