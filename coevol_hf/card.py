"""The dataset card of refined data: how it was made, and statistics computed from the data itself.

A card is built from three things only: the data (every number is computed from its `coevol_*`
columns), the run configuration (`run_config`: every option and prompt template, also uploaded
as `coevol_config.json`), and metadata that already exists (the README `datasets` wrote with
`dataset_info` and `configs`, a card already on the repo, the source dataset's card). Existing
metadata is kept; ours is added where it is missing.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import PurePath
from string import Template
from typing import Any, Iterable, Mapping

from huggingface_hub import DatasetCard, DatasetCardData

from . import __version__
from .options import CoEvolOptions
from .stats import RunStats, compute_stats
from .trace import Trace

TAGS = ["coevol", "synthetic", "instruction-tuning"]
TASK_CATEGORIES = ["text-generation"]
CONFIG_FILE = "coevol_config.json"
_SUMMARY_COLUMNS = ["coevol_original", "coevol_rounds", "coevol_trace", "coevol_error"]


def size_category(rows: int) -> str:
    """The Hub's `size_categories` bucket for a number of rows."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if rows < limit:
            return label
    return "n>10M"


def build_card(
    splits: Mapping[str, Any],
    run: Mapping[str, Any],
    *,
    existing: DatasetCardData | None = None,
    source: str | None = None,
    source_card: DatasetCardData | None = None,
    license: str | None = None,
    pretty_name: str | None = None,
    reproduce: str | None = None,
    stats: RunStats | None = None,
) -> DatasetCard:
    """The card for `splits` (split name -> refined Dataset) made by the run `run` (see `run_config`).

    `stats` are `split_stats(splits)`, when the caller already has them (they read every row).
    """
    check_run_matches(splits, run)
    stats = stats or split_stats(splits)
    data = DatasetCardData(**(existing.to_dict() if existing is not None else {}))
    inherited = source_card.to_dict() if source_card is not None else {}
    data.license = license or data.license or inherited.get("license")
    data.language = data.language or inherited.get("language")
    source_name = (source.rsplit("/", 1)[-1] if source_card is not None else PurePath(source).stem) if source else None
    data.pretty_name = pretty_name or data.pretty_name or (f"{source_name} (CoEvol-refined)" if source_name else "CoEvol-refined responses")
    data.task_categories = _union(data.task_categories, TASK_CATEGORIES)
    data.tags = _union(getattr(data, "tags", None), TAGS)
    data.size_categories = [size_category(stats.rows)]
    if source is not None and source_card is not None:  # a Hub dataset: the only kind the Hub links
        data.source_datasets = _union(data.source_datasets, [source])

    options = run["options"]
    template = Template(resources.files("coevol_hf.cards").joinpath("dataset_card.md").read_text(encoding="utf-8"))
    body = template.substitute(
        pretty_name=data.pretty_name,
        package_version=run["coevol_hf_version"],
        implementation=run["implementation"],
        source=f"[{source}](https://huggingface.co/datasets/{source})" if source_card is not None else (f"`{source}`" if source else "not recorded"),
        model=run["model"],
        server=_server_name(run["server"]),
        pipeline=options["pipeline"],
        options="\n".join(f"| `{k}` | `{json.dumps(v)}` |" for k, v in options.items() if k not in ("prompts", "columns")),
        columns=", ".join(f"{k}=`{v}`" for k, v in options["columns"].items() if v is not None),
        prompts=_prompts_note(options["prompts"]),
        config_file=CONFIG_FILE,
        stats=_stats_lines(stats),
        example=_example_section(splits),
        reproduce=reproduce or reproduce_snippet(run),
    )
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def split_stats(splits: Mapping[str, Any]) -> RunStats:
    """The statistics of all splits together, from their `coevol_*` columns."""
    return compute_stats(_rows(splits))


def check_run_matches(splits: Mapping[str, Any], run: Mapping[str, Any]) -> None:
    """Refuse a run configuration that did not make this data (it names another model)."""
    for name, split in splits.items():
        missing = [c for c in _SUMMARY_COLUMNS + ["coevol_model"] if c not in split.column_names]
        if missing:
            raise ValueError(f"Split {name!r} is not refined by coevol-hf: it lacks the columns {missing}.")
        models = set(split.unique("coevol_model")) - {None}
        if models - {run["model"]}:
            raise ValueError(f"Split {name!r} was refined with {sorted(models)}, but the run configuration names {run['model']!r}.")


def reproduce_snippet(run: Mapping[str, Any]) -> str:
    """Python that repeats the run: the options that differ from the defaults, prompts from the config file."""
    defaults = CoEvolOptions().output_options()
    options = run["options"]
    changed = {k: v for k, v in options.items() if k not in ("prompts", "columns") and v != defaults[k]}
    if options["columns"] != defaults["columns"]:
        changed["columns"] = {k: v for k, v in options["columns"].items() if v != defaults["columns"][k]}
    arguments = "".join(f", {k}={v!r}" for k, v in changed.items())
    if options["prompts"] != defaults["prompts"]:
        arguments += f', prompts=json.load(open("{CONFIG_FILE}"))["options"]["prompts"]'
    return (
        f"# pip install coevol-hf=={run['coevol_hf_version']}\n"
        "import json\n"
        "from datasets import load_dataset\n"
        "from coevol_hf import CoEvol\n\n"
        "URL = \"http://127.0.0.1:8080\"  # a TGI or Messages API server of the model above\n"
        "source = load_dataset(...)  # the source dataset\n"
        f"refined = source.map(CoEvol(endpoint=URL{arguments}), batched=True)"
    )


def _rows(splits: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for split in splits.values():
        yield from split.select_columns(_SUMMARY_COLUMNS)


def _union(existing: Any, ours: list[str]) -> list[str]:
    current = [existing] if isinstance(existing, str) else list(existing or [])
    return current + [item for item in ours if item not in current]


def _server_name(server: Mapping[str, Any]) -> str:
    if server.get("kind") == "tgi":
        return f"Text Generation Inference {server.get('version') or ''}".strip()
    return "a Messages API server (OpenAI-compatible)"


def _prompts_note(prompts: Mapping[str, str]) -> str:
    defaults = CoEvolOptions().output_options()["prompts"]
    changed = sorted(k for k, v in prompts.items() if v != defaults[k])
    listed = ", ".join(f"`{k}`" for k in changed) if changed else "none"
    return f"All {len(prompts)} templates are in `{CONFIG_FILE}`; changed from the package defaults: {listed}."


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
            f"| rows left unrefined, by reason | {errors} |",
            f"| LLM calls | {stats.llm_calls} |",
            f"| tokens (prompt, completion) | {stats.prompt_tokens}, {stats.completion_tokens} |",
        ]
    )


def pick_example(splits: Mapping[str, Any]) -> dict[str, str] | None:
    """The first row whose first response changed, else the first refined row."""
    fallback = None
    for row in _rows(splits):
        if row["coevol_error"] is not None:
            continue
        trace = Trace.from_json(row["coevol_trace"])
        after = trace.turns[0].final
        candidate = {"instruction": trace.turns[0].instruction, "before": row["coevol_original"][0], "after": after}
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
            _quote(example["instruction"]),
            "**Before**",
            _quote(example["before"]),
            "**After**",
            _quote(example["after"]),
        ]
    )


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.splitlines()) or ">"
