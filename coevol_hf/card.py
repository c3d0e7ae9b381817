"""The dataset card of refined data: how it was made, and statistics computed from the data itself.

A card is built from the data alone: every number comes from its `coevol_*` columns, and how it
was made from the run each row's trace carries (`read_runs`), so data refined in one process can
be filtered and published in another. A run configuration (a `CoEvol`, or the
`coevol_config.json` that `coevol-hf refine` wrote) is optional: it is checked against the data,
lends every prompt template's text and adds where the data came from and the command that made
it. Existing metadata (the README `datasets` wrote, a card already on the repo, the source
dataset's card) is kept; ours is added where it is missing. The generated text sits between two
markers (`MARK_START`, `MARK_END`): a push replaces that part only, and hand-written text stays.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import shlex
from importlib import resources
from pathlib import Path, PurePath, PureWindowsPath
from string import Template
from typing import Any, Iterable, Mapping, Protocol, Sequence

from huggingface_hub import DatasetCard, DatasetCardData, get_token

from . import __version__
from .client.server import is_hf_api_host
from .formats import REFINED, splits_with_rows
from .options import PIPELINES, CoEvolOptions
from .stats import RunStats, cached_share, compute_stats
from .trace import RunInfo, Trace, prompts_digest, run_json

TAGS = ["coevol", "synthetic", "instruction-tuning"]
TASK_CATEGORIES = ["text-generation"]
CONFIG_FILE = "coevol_config.json"
MARK_START = "<!-- coevol-hf:start -->"
MARK_END = "<!-- coevol-hf:end -->"
_SUMMARY_COLUMNS = [REFINED.original, REFINED.rounds, REFINED.trace, REFINED.error]
_RUN_FIELDS = {field.name for field in dataclasses.fields(RunInfo)}
_DATA_SUFFIXES = {".json", ".jsonl", ".csv", ".tsv", ".parquet", ".arrow", ".txt", ".gz", ".zst", ".xz", ".bz2"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class Refiner(Protocol):
    """What made the data: `CoEvol` and the other operators describe their run this way."""

    def run_config(self) -> Mapping[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class DataRun:
    """One run that made rows of the data, as its traces record it.

    `prompts` holds every template's text when the run's digest confirms them (the installed
    defaults with the run's changes, or a given run configuration's), else None: the run records
    only the texts of the templates it changed. `extras` is what a run configuration adds (source,
    split, licence, command), already made fit to publish.
    """

    info: RunInfo
    rows: int
    prompts: Mapping[str, str] | None
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        """This run as `coevol_config.json` holds it: every option, and every template when known."""
        prompts = self.prompts if self.prompts is not None else self.info.options["prompts"]
        options = {**self.info.options, "prompts": dict(prompts)}
        return {**self.info.to_dict(), "options": options, "prompts_complete": self.prompts is not None, **self.extras}


def size_category(rows: int) -> str:
    """The Hub's `size_categories` bucket for a number of rows."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if rows < limit:
            return label
    return "n>10M"


def read_runs(splits: Mapping[str, Any], refiner: Refiner | Mapping[str, Any] | str | PurePath | None = None) -> list[DataRun]:
    """The distinct runs recorded in the rows' traces, in order of their first row.

    Rows whose trace is null (rows that failed before any round was done) carry no run. A `refiner` (a `CoEvol`, its run
    configuration, or that file's path) must be one of these runs (else ValueError, before
    anything is uploaded); it can only add to what the data says.
    """
    runs, models = recorded_runs(splits)
    if refiner is None:
        if not runs:
            raise ValueError("No row of the data was refined (every coevol_trace is null), so nothing in it says how it was made: pass refiner=.")
        return runs
    if isinstance(refiner, (str, PurePath)):
        refiner = json.loads(Path(refiner).read_text(encoding="utf-8"))
    config = _plain(refiner if isinstance(refiner, Mapping) else refiner.run_config())
    if "runs" in config:
        raise ValueError(
            "refiner= describes one run, and this run configuration holds several (`runs`): pass one of them, "
            "or none (each row's trace says how it was made)."
        )
    return _with_config(runs, config, models | {run.info.model for run in runs})


def recorded_runs(splits: Mapping[str, Any]) -> tuple[list[DataRun], set[str]]:
    """The runs the rows' traces record (none if no row has a trace), and the models the rows name."""
    infos: dict[str, RunInfo] = {}
    keys: dict[str, str] = {}  # a run's JSON text as the traces carry it -> its canonical key
    rows: collections.Counter[str] = collections.Counter()
    models: set[str] = set()
    for name, split in splits_with_rows(splits).items():
        missing = [c for c in _SUMMARY_COLUMNS + [REFINED.model] if c not in split.column_names]
        if missing:
            raise ValueError(f"Split {name!r} is not refined by coevol-hf: it lacks the columns {missing}.")
        models |= set(split.unique(REFINED.model)) - {None}
        for batch in split.select_columns([REFINED.trace]).iter(batch_size=1000):
            for text in batch[REFINED.trace]:
                if text is None:
                    continue
                run_text = run_json(text)
                key = keys.get(run_text)
                if key is None:
                    info = RunInfo(**json.loads(run_text))
                    key = keys[run_text] = json.dumps(info.to_dict(), sort_keys=True)
                    infos.setdefault(key, info)
                rows[key] += 1
    return [DataRun(info, rows[key], _known_prompts(info, [])) for key, info in infos.items()], models


def _with_config(runs: list[DataRun], config: Mapping[str, Any], models: set[str]) -> list[DataRun]:
    """`runs` with the one the run configuration describes completed by it; refuse another run's."""
    options = config["options"]
    prompts = options.get("prompts") or {}
    digest = config.get("prompts_sha256") or prompts_digest(prompts)
    extras = _public_extras({k: v for k, v in config.items() if k not in _RUN_FIELDS | {"prompts_complete", "rows"}})
    if models and config["model"] not in models:
        raise ValueError(
            f"The data was refined with {sorted(models)}, but the run configuration names {config['model']!r}: "
            "pass the run configuration of the run that made it, or none (each row's trace says how it was made)."
        )
    if not runs:  # every row failed: the configuration is all there is
        defaults = _default_prompts()
        info = RunInfo.of(
            version=config["coevol_hf_version"], implementation=config["implementation"], model=config["model"], server=config["server"],
            options=options, default_prompts=defaults,
        )
        return [DataRun(info, 0, _known_prompts(info, [prompts]), extras)]
    differences: list[str] = []
    for index, run in enumerate(runs):
        ours = {k: v for k, v in run.info.options.items() if k != "prompts"}
        theirs = {k: v for k, v in options.items() if k != "prompts"}
        if run.info.model == config["model"] and ours == theirs and run.info.prompts_sha256 == digest:
            return [*runs[:index], DataRun(run.info, run.rows, _known_prompts(run.info, [prompts]), extras), *runs[index + 1 :]]
        if run.info.model == config["model"] and not differences:
            differences = [f"`{k}` ({theirs.get(k)!r} there, {ours.get(k)!r} in the data)" for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)]
            differences += ["the prompt templates"] if run.info.prompts_sha256 != digest else []
    raise ValueError(
        f"The run configuration matches none of the {len(runs)} run(s) recorded in the data; it differs in "
        f"{', '.join(differences) or 'the model'}: pass the run configuration of the run that made it, or none."
    )


def _known_prompts(info: RunInfo, candidates: Iterable[Mapping[str, str]]) -> Mapping[str, str] | None:
    """Every template of the run, from the first source whose texts give the run's digest."""
    for prompts in [{**_default_prompts(), **info.options["prompts"]}, *candidates]:
        if prompts and prompts_digest(prompts) == info.prompts_sha256:
            return dict(prompts)
    return None


def run_configuration(runs: Sequence[DataRun]) -> dict[str, Any]:
    """What `coevol_config.json` holds: the run, or `{"runs": [...]}` (with row counts) for several."""
    if len(runs) == 1:
        return runs[0].config()
    return {"runs": [{**run.config(), "rows": run.rows} for run in runs]}


def build_card(
    splits: Mapping[str, Any],
    refiner: Refiner | Mapping[str, Any] | str | PurePath | None = None,
    *,
    runs: Sequence[DataRun] | None = None,
    existing: DatasetCard | None = None,
    replace_card: bool = False,
    source: str | None = None,
    source_card: DatasetCardData | None = None,
    license: str | None = None,
    pretty_name: str | None = None,
    reproduce: str | None = None,
    stats: RunStats | None = None,
) -> DatasetCard:
    """The card for `splits` (split name -> refined Dataset), on top of the `existing` README.

    `runs` are `read_runs(splits, refiner)` and `stats` are `split_stats(splits)`, when the caller
    already has them (both read every row). The existing README keeps its metadata and its text:
    only the part between the coevol-hf markers is replaced (added after the text when it has
    none), unless `replace_card`. `reproduce` replaces the generated code that repeats the run.
    """
    runs = runs if runs is not None else read_runs(splits, refiner)
    stats = stats or split_stats(splits)
    card = DatasetCard(str(existing) if existing is not None else "---\n\n---\n")
    data = DatasetCardData(**card.data.to_dict())
    inherited = source_card.to_dict() if source_card is not None else {}
    hub_source = source is not None and is_hub_id(source)
    # The licence given to `refine` is a default: one set on the repo since is kept.
    run_license = next((run.extras["license"] for run in runs if run.extras.get("license")), None)
    data.license = license or data.license or run_license or inherited.get("license")
    data.language = data.language or inherited.get("language")
    source_name = (source.rsplit("/", 1)[-1] if hub_source else PurePath(source).stem) if source else None
    data.pretty_name = pretty_name or data.pretty_name or (f"{source_name} (CoEvol-refined)" if source_name else "CoEvol-refined responses")
    data.task_categories = _union(data.task_categories, TASK_CATEGORIES)
    data.tags = _union(getattr(data, "tags", None), TAGS)
    data.size_categories = [size_category(stats.rows)]
    if hub_source:  # the only kind of source the Hub links
        data.source_datasets = _union(data.source_datasets, [source])

    template = Template(resources.files("coevol_hf.cards").joinpath("dataset_card.md").read_text(encoding="utf-8"))
    block = template.substitute(
        pretty_name=data.pretty_name,
        source=f"[{source}](https://huggingface.co/datasets/{source})" if hub_source else (f"`{PurePath(source).name}`" if source else "not recorded"),
        method=_method(runs),
        runs=_runs_section(runs),
        stats=_stats_lines(stats),
        example=_example_section(splits),
        reproduce=_reproduce_section(runs, reproduce),
    )
    card.data = data
    card.text = "\n" + block if replace_card else card_text(card.text, block)
    return card


def _method(runs: Sequence[DataRun]) -> str:
    """What made the rows: the full method, or the paper's one-pass baselines the runs used."""
    paper = "[CoEvol](https://arxiv.org/abs/2406.07054)"
    pipelines = list(dict.fromkeys(run.info.options.get("pipeline", "coevol") for run in runs))
    if pipelines in ([], ["coevol"]):
        return f"{paper} (a two-stage debate, an advisor, an editor and a judge that compares old and new in both orders)"
    described = "; ".join(f"`{name}`: {PIPELINES.get(name, 'unknown')}" for name in pipelines)
    return f"the pipelines of the {paper} paper ({described})"


def card_text(existing: str, block: str) -> str:
    """The README text with its coevol-hf part replaced by `block`, or `block` added after it."""
    starts, ends = existing.count(MARK_START), existing.count(MARK_END)
    if starts == ends == 0:
        return f"{existing.rstrip()}\n\n{block}" if existing.strip() else "\n" + block
    start, end = existing.find(MARK_START), existing.find(MARK_END)
    if starts == ends == 1 and start < end:
        return existing[:start] + block.rstrip("\n") + existing[end + len(MARK_END) :]
    raise ValueError(
        f"The README has {starts} `{MARK_START}` and {ends} `{MARK_END}` markers: keep one pair around the "
        "generated part (the text outside it is kept), or replace the whole card (replace_card=True)."
    )


def split_stats(splits: Mapping[str, Any]) -> RunStats:
    """The statistics of all splits together, from their `coevol_*` columns."""
    return compute_stats(_rows(splits))


def known_secrets(token: str | None) -> set[str]:
    """Every token value this process can know: the argument's, the environment's, the one saved
    by `hf auth login`; none of them may appear in anything published."""
    return {secret for secret in (token, os.environ.get("HF_TOKEN"), os.environ.get("COEVOL_TOKEN"), get_token()) if secret}


def redact(value: Any, secrets: set[str]) -> Any:
    """`value` with every secret's text replaced by `***`, in every string it holds."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, Mapping):
        return {key: redact(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item, secrets) for item in value]
    return value


def is_hub_id(source: str) -> bool:
    """`owner/name` that is not a local file: a Hub dataset, which the card may name and link."""
    return bool(_HUB_ID.fullmatch(source)) and PurePath(source).suffix.lower() not in _DATA_SUFFIXES and not Path(source).exists()


def public_endpoint(url: str) -> str:
    """An endpoint as a published file may name it: Hugging Face's own API hosts as they are;
    any other (a private server, someone's Space or Inference Endpoint) as `URL`."""
    return url if is_hf_api_host(url.strip()) else "URL"


def public_command(command: str) -> str:
    """A recorded shell command fit to publish: local paths by file name, other endpoints as URL."""
    try:
        words = shlex.split(command)
    except ValueError:
        return "(not shown: it could not be read as a shell command)"
    return shlex.join(_public_word(word) for word in words)


def reproduce_snippet(run: Mapping[str, Any], *, index: int | None = None) -> str:
    """Python that repeats the run: the options that differ from the defaults, prompts from the config file.

    `run` is a run's object in `coevol_config.json`; `index` its place under `runs`, if several.
    """
    defaults = CoEvolOptions().output_options()
    options = run["options"]
    changed = {k: v for k, v in options.items() if k not in ("prompts", "columns") and (k not in defaults or v != defaults[k])}
    renamed = {k: v for k, v in options["columns"].items() if k in defaults["columns"] and v != defaults["columns"][k]}
    if renamed:
        changed["columns"] = renamed
    arguments = "".join(f", {k}={v!r}" for k, v in changed.items())
    if options["prompts"] != defaults["prompts"]:
        where = f'["runs"][{index}]' if index is not None else ""
        arguments += f', prompts=json.load(open("{CONFIG_FILE}")){where}["options"]["prompts"]'
    return (
        f"# pip install coevol-hf=={run['coevol_hf_version']}\n"
        "import json\n"
        "from datasets import load_dataset\n"
        "from coevol_hf import CoEvol\n\n"
        "URL = \"http://127.0.0.1:8080\"  # a TGI or Messages API server of the model above\n"
        "source = load_dataset(...)  # the source dataset\n"
        f"refined = source.map(CoEvol(endpoint=URL{arguments}), batched=True)"
    )


def _public_extras(extras: Mapping[str, Any]) -> dict[str, Any]:
    """A run configuration's own keys with no local path and no private endpoint."""
    public = dict(extras)
    if isinstance(public.get("source"), str) and not is_hub_id(public["source"]):
        public["source"] = PurePath(public["source"]).name
    if isinstance(public.get("command"), str):
        public["command"] = public_command(public["command"])
    return public


def _public_word(word: str) -> str:
    flag, has_value, value = word.partition("=")
    if has_value and flag.startswith("-"):
        return f"{flag}={_public_word(value)}"
    if "://" in word:
        return ",".join(map(public_endpoint, word.split(",")))
    if re.match(r"[A-Za-z]:[\\/]", word):
        return PureWindowsPath(word).name
    if word.startswith(("/", "~")) or ("/" in word and Path(word).exists()):
        return PurePath(word).name
    return word


def _plain(config: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration as JSON would give it back, so that it compares equal to a trace's."""
    return json.loads(json.dumps(dict(config)))


def _default_prompts() -> dict[str, str]:
    return CoEvolOptions().output_options()["prompts"]


def _rows(splits: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for split in splits_with_rows(splits).values():
        yield from split.select_columns(_SUMMARY_COLUMNS)


def _union(existing: Any, ours: list[str]) -> list[str]:
    current = [existing] if isinstance(existing, str) else list(existing or [])
    return current + [item for item in ours if item not in current]


def _server_name(server: Mapping[str, Any]) -> str:
    if server.get("kind") == "tgi":
        return f"Text Generation Inference {server.get('version') or ''}".strip()
    return "a Messages API server (OpenAI-compatible)"


def _runs_section(runs: Sequence[DataRun]) -> str:
    if len(runs) == 1:
        return _run_lines(runs[0], f"[`{CONFIG_FILE}`]({CONFIG_FILE})")
    sections = [f"The rows were made by {len(runs)} runs, described in turn below; each row's `coevol_trace` names its run."]
    for number, run in enumerate(runs, 1):
        where = f'[`{CONFIG_FILE}`]({CONFIG_FILE}) under `runs[{number - 1}]`'
        sections.append(f"### Run {number} of {len(runs)}: {run.rows} rows\n\n{_run_lines(run, where)}")
    return "\n\n".join(sections)


def _run_lines(run: DataRun, where: str) -> str:
    info = run.info
    options = info.options
    held = "every option and template" if run.prompts is not None else "every option and the changed templates"
    return "\n".join(
        [
            f"- Model: `{info.model}`, served by {_server_name(info.server)}",
            f"- Pipeline: `{options['pipeline']}`",
            f"- Package: coevol-hf {info.coevol_hf_version} (`{info.implementation}`)",
            "- Columns: " + ", ".join(f"{k}=`{v}`" for k, v in options["columns"].items() if v is not None),
            f"- Prompt templates: {_prompts_note(run)}",
            f"- The run configuration, {held}, is in {where}.",
            "",
            "| option | value |",
            "| --- | --- |",
            *(f"| `{k}` | `{_cell(json.dumps(v))}` |" for k, v in options.items() if k not in ("prompts", "columns")),
        ]
    )


def _cell(text: str) -> str:
    """Text for a Markdown table cell, which ends at any unescaped "|", even inside code
    (chat templates hold "<|im_start|>")."""
    return text.replace("|", "\\|")


def _prompts_note(run: DataRun) -> str:
    version = run.info.coevol_hf_version
    listed = ", ".join(f"`{k}`" for k in sorted(run.info.options["prompts"])) or "none"
    if run.prompts is not None:
        return f"All {len(run.prompts)} templates are in `{CONFIG_FILE}`; changed from the package defaults: {listed}."
    return (
        f"changed from the defaults of coevol-hf {version}: {listed} (their texts are in `{CONFIG_FILE}`). "
        f"The texts of the other templates are not known here: the defaults installed here (coevol-hf {__version__}) "
        f"do not give the run's template digest (sha256 `{run.info.prompts_sha256[:16]}`…); they are those of coevol-hf {version}."
    )


def _reproduce_section(runs: Sequence[DataRun], reproduce: str | None) -> str:
    if reproduce is not None:
        return f"```python\n{reproduce}\n```"
    if len(runs) == 1:
        return f"```python\n{_snippet(runs[0], None)}\n```"
    return "\n\n".join(f"Run {number}:\n\n```python\n{_snippet(run, number - 1)}\n```" for number, run in enumerate(runs, 1))


def _snippet(run: DataRun, index: int | None) -> str:
    command = run.extras.get("command")
    return reproduce_snippet(run.config(), index=index) + (f"\n\n# or, from the shell:\n# {command}" if command else "")


def _stats_lines(stats: RunStats) -> str:
    share = f"{stats.rows_improved / stats.rows:.1%}" if stats.rows else "n/a"
    histogram = ", ".join(f"{k}: {v}" for k, v in stats.rounds_histogram.items()) or "none"
    errors = ", ".join(f"{k}: {v}" for k, v in stats.errors_by_kind.items()) or "none"
    return "\n".join(
        [
            "| statistic | value |",
            "| --- | --- |",
            f"| rows | {stats.rows} |",
            f"| rows improved | {stats.rows_improved} ({share}) |",
            f"| accepted edits per turn (edits: turns) | {histogram} |",
            f"| judge orders agreeing | {stats.judges_agree} of {stats.judged_rounds} judged rounds |",
            f"| response length in characters, before → after | {stats.chars_before} → {stats.chars_after} |",
            f"| rows with a `coevol_error`, by reason (edits accepted before it kept) | {errors} |",
            f"| LLM calls | {stats.llm_calls} |",
            f"| tokens (prompt, completion) | {stats.prompt_tokens}, {stats.completion_tokens} |",
            f"| prompt tokens the server read from its prefix cache | {stats.cached_tokens} ({cached_share(stats)}) |",
        ]
    )


def pick_example(splits: Mapping[str, Any]) -> dict[str, str] | None:
    """The first row whose first response changed, else the first refined row."""
    fallback = None
    for row in _rows(splits):
        if row[REFINED.error] is not None:
            continue
        trace = Trace.from_json(row[REFINED.trace])
        after = trace.turns[0].final
        candidate = {"instruction": trace.turns[0].instruction, "before": row[REFINED.original][0], "after": after}
        if after != candidate["before"]:
            return candidate
        fallback = fallback or candidate
    return fallback


def _example_section(splits: Mapping[str, Any]) -> str:
    example = pick_example(splits)
    if example is None:
        return "No row could be refined."
    return "\n\n".join(
        [
            "**Instruction**",
            _verbatim(example["instruction"]),
            "**Before**",
            _verbatim(example["before"]),
            "**After**",
            _verbatim(example["after"]),
        ]
    )


def _verbatim(text: str) -> str:
    """Data text as it is: in a fence longer than any run of backticks it holds, so that no markup
    in the data (HTML, images, links) renders on the dataset's page."""
    fence = "`" * max(3, 1 + max(map(len, re.findall("`+", text)), default=0))
    return f"{fence}text\n{text}\n{fence}"
