"""The dataset card written next to refined data: how it was made and what it holds."""

from __future__ import annotations

import json
from importlib import resources
from string import Template
from typing import Any, Mapping

from . import __version__
from .stats import RunStats

TAGS = ["coevol", "synthetic", "instruction-tuning"]


def size_category(rows: int) -> str:
    """The Hub's `size_categories` bucket for a number of rows."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if rows < limit:
            return label
    return "n>10M"


def render_card(
    *,
    stats: RunStats,
    options: Mapping[str, Any],
    model: str,
    server: str,
    source: str,
    example: Mapping[str, str] | None,
    reproduce: str,
    pretty_name: str,
) -> str:
    metadata = [
        f"pretty_name: {json.dumps(pretty_name)}",
        "task_categories:\n- text-generation",
        "tags:\n" + "\n".join(f"- {tag}" for tag in TAGS),
        f"size_categories:\n- {size_category(stats.rows)}",
        f"source_datasets:\n- {json.dumps(source)}",
    ]
    share = f"{stats.rows_improved / stats.rows:.1%}" if stats.rows else "n/a"
    stats_lines = [
        f"- Rows: {stats.rows}; improved: {stats.rows_improved} ({share})",
        "- Accepted edits per turn (edits: turns): " + (", ".join(f"{k}: {v}" for k, v in stats.rounds_histogram.items()) or "none"),
        f"- Judge orders agreeing: {stats.judges_agree} of {stats.judged_rounds} judged rounds",
        f"- Response length (characters): {stats.chars_before} before, {stats.chars_after} after",
        "- Rows left unrefined, by reason: " + (", ".join(f"{k}: {v}" for k, v in stats.errors_by_kind.items()) or "none"),
        f"- LLM calls: {stats.llm_calls}; tokens: {stats.prompt_tokens} prompt, {stats.completion_tokens} completion",
    ]
    template = Template(resources.files("coevol_hf.cards").joinpath("dataset_card.md").read_text(encoding="utf-8"))
    example = example or {"instruction": "(no refined row)", "before": "", "after": ""}
    return template.substitute(
        metadata="\n".join(metadata),
        pretty_name=pretty_name,
        package_version=__version__,
        source=source,
        model=model,
        server=server,
        options=", ".join(f"`{k}={v!r}`" for k, v in options.items()),
        stats="\n".join(stats_lines),
        example_instruction=_quote(example["instruction"]),
        example_before=_quote(example["before"]),
        example_after=_quote(example["after"]),
        reproduce=reproduce,
    )


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.splitlines()) or ">"
