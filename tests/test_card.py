"""The card and run configuration read from the data alone: runs from traces, markers, public names.

Rows are built here with the trace's documented shape (`coevol_hf.trace`): every refined row's
`coevol_trace` carries its `run`, whose `options.prompts` holds only the changed templates and
whose `prompts_sha256` is the digest of all of them. Pushing is tested in test_hub.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from datasets import Dataset
from huggingface_hub import DatasetCard

from coevol_hf import __version__
from coevol_hf.card import (
    MARK_END,
    MARK_START,
    DataRun,
    build_card,
    card_text,
    is_hub_id,
    public_command,
    read_runs,
    reproduce_snippet,
    run_configuration,
)
from coevol_hf import CoEvol
from coevol_hf.options import CoEvolOptions
from coevol_hf.prompts import TEMPLATE_FIELDS
from coevol_hf.trace import Round, RunInfo, Trace, Turn, Usage, prompts_digest

MODEL = "org/model@abc123"
DEFAULTS = CoEvolOptions().output_options()


def run_info(*, model: str = MODEL, prompts: dict[str, str] | None = None, defaults: dict[str, str] | None = None, **options: object) -> RunInfo:
    """A run as `CoEvol` records it; `defaults` stands for another version's default templates."""
    everything = {**DEFAULTS, **options, "prompts": {**(defaults or DEFAULTS["prompts"]), **(prompts or {})}}
    return RunInfo.of(
        version=__version__, implementation="sha256:impl", model=model, server={"kind": "tgi", "version": "3.3.6"},
        options=everything, default_prompts=defaults or DEFAULTS["prompts"],
    )


def row(number: int, run: RunInfo | None) -> dict:
    """A refined row (its edit accepted), or a failed one (no trace) when `run` is None."""
    original, edited = f"Answer {number}.", f"Answer {number}, edited."
    trace = None
    if run is not None:
        turn = Turn(0, f"Question {number}?", original, (Round(1, edit=edited, accepted=True),))
        trace = Trace(run, (turn,), Usage(calls=4, prompt_tokens=100, completion_tokens=20)).to_json()
    return {
        "instruction": f"Question {number}?",
        "input": "",
        "output": edited if run is not None else original,
        "coevol_original": [original],
        "coevol_rounds": [1] if run is not None else [],
        "coevol_trace": trace,
        "coevol_error": None if run is not None else "server: gave up",
        "coevol_model": run.model if run is not None else MODEL,
    }


def dataset(*runs: RunInfo | None) -> Dataset:
    return Dataset.from_list([row(n, run) for n, run in enumerate(runs)])


def config_of(run: RunInfo, **extras: object) -> dict:
    """A run configuration as `CoEvol.run_config()` and `coevol-hf refine` write it: every template."""
    prompts = {**DEFAULTS["prompts"], **run.options["prompts"]}
    return {**run.to_dict(), "options": {**run.options, "prompts": prompts}, **extras}


def test_one_run_is_read_from_the_traces_and_failed_rows_carry_none() -> None:
    run = run_info(max_rounds=2, prompts={"editor_task": "Rewrite: {response}"})
    (found,) = read_runs({"train": dataset(run, None, run)})
    assert found.info == run and found.rows == 2
    assert found.prompts == {**DEFAULTS["prompts"], "editor_task": "Rewrite: {response}"}
    config = run_configuration([found])
    assert config["model"] == MODEL and config["options"]["max_rounds"] == 2 and config["prompts_complete"] is True
    assert set(config["options"]["prompts"]) == set(TEMPLATE_FIELDS) and prompts_digest(config["options"]["prompts"]) == run.prompts_sha256


def test_several_runs_are_each_described_with_their_rows() -> None:
    first, second = run_info(max_rounds=1), run_info(max_rounds=3, prompts={"judge_persona": "You are strict."})
    splits = {"train": dataset(first, second, second, None), "test": dataset(second)}
    runs = read_runs(splits)
    assert [(r.info.options["max_rounds"], r.rows) for r in runs] == [(1, 1), (3, 3)]
    config = run_configuration(runs)
    assert [(r["options"]["max_rounds"], r["rows"]) for r in config["runs"]] == [(1, 1), (3, 3)]
    body = str(build_card(splits, runs=runs))
    assert "The rows were made by 2 runs" in body
    assert "### Run 1 of 2: 1 rows" in body and "### Run 2 of 2: 3 rows" in body
    assert "| `max_rounds` | `1` |" in body and "| `max_rounds` | `3` |" in body
    assert 'json.load(open("coevol_config.json"))["runs"][1]["options"]["prompts"]' in body


def test_the_card_names_the_method_the_runs_used() -> None:
    full = str(build_card({"train": dataset(run_info())}))
    assert "Responses refined with [CoEvol](https://arxiv.org/abs/2406.07054) (a two-stage debate, an advisor, an editor and a judge" in full
    one_pass = CoEvolOptions(pipeline="advise_edit").output_options()
    baseline = str(build_card({"train": dataset(run_info(**{k: v for k, v in one_pass.items() if k != "prompts"}))}))
    assert "paper (`advise_edit`: advisor sees the instruction and the response, then the editor revises it)" in baseline
    (method,) = [line for line in baseline.splitlines() if line.startswith("Responses refined with")]
    assert "judge" not in method and "debate" not in method


def test_option_values_with_pipes_stay_in_their_table_cell() -> None:
    template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}{% endfor %}"
    body = str(build_card({"train": dataset(run_info(api="generate", chat_template=template))}))
    (line,) = [line for line in body.splitlines() if line.startswith("| `chat_template` |")]
    assert line == '| `chat_template` | `"{% for m in messages %}<\\|{{ m.role }}\\|>{{ m.content \\| trim }}{% endfor %}"` |'
    assert line.replace("\\|", "").count("|") == 3  # two cells, as a Markdown table reads them


def test_runs_are_told_apart_whatever_text_the_traces_hold() -> None:
    """`read_runs` reads only each trace's run: a `"run": {` inside answers or inside the run
    itself, and a trace written with its keys in another order, must not mislead it."""
    plain = run_info(max_rounds=1)
    nested = RunInfo.of(
        version=__version__, implementation="sha256:impl", model=MODEL, server={"kind": "tgi", "run": {"id": 7}},
        options={**DEFAULTS, "max_rounds": 2}, default_prompts=DEFAULTS["prompts"],
    )
    tricky = dataset(plain, nested, plain)
    quoted = Turn(0, 'Write JSON: {"run": {"a": 1}}', 'Answer "run": {', (Round(1, edit='{"run": {"b": 2}}', accepted=True),))
    texts = [Trace(plain, (quoted,), Usage(calls=4)).to_json(), Trace(nested, (quoted,), Usage(calls=4)).to_json()]
    run_first = json.dumps({"run": nested.to_dict(), **{k: v for k, v in json.loads(texts[1]).items() if k != "run"}})
    tricky = Dataset.from_list([*tricky.to_list(), *({**tricky[0], "coevol_trace": text} for text in (*texts, run_first))])
    runs = read_runs({"train": tricky})
    assert [(r.info, r.rows) for r in runs] == [(plain, 3), (nested, 3)]


@pytest.mark.parametrize("changed", [{}, {"format": "alpaca"}, {"format": "sharegpt", "columns": {"conversations": "dialog"}, "max_rounds": 1}])
def test_the_cards_python_snippet_makes_the_same_run(changed: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = CoEvolOptions(**changed, prompts={"editor_task": "Rewrite it: {suggestions}"}).output_options()
    run = config_of(run_info(**options))
    (tmp_path / "coevol_config.json").write_text(json.dumps(run))
    monkeypatch.chdir(tmp_path)
    (line,) = [line for line in reproduce_snippet(run).splitlines() if line.startswith("refined = source.map(")]
    made = eval(line.removeprefix("refined = source.map(").removesuffix(", batched=True)"), {"CoEvol": CoEvol, "URL": "http://127.0.0.1:8080", "json": json})
    assert made.options.output_options() == options


def test_the_example_shows_data_text_verbatim_and_renders_none_of_its_markup() -> None:
    run = run_info()
    question = "Show ``` fences and <b>tags</b>?"
    before = "![pixel](https://tracker.example/p.png) <img src=x onerror=alert(1)>"
    after = before + "\n```python\nprint('code')\n```"
    turn = Turn(0, question, before, (Round(1, edit=after, accepted=True),))
    refined = {**row(0, run), "instruction": question, "output": after, "coevol_original": [before]}
    refined["coevol_trace"] = Trace(run, (turn,), Usage(calls=4)).to_json()
    body = str(build_card({"train": Dataset.from_list([refined])}))
    assert f"**Instruction**\n\n````text\n{question}\n````" in body
    assert f"**Before**\n\n```text\n{before}\n```" in body
    assert f"**After**\n\n````text\n{after}\n````" in body


def test_templates_the_installed_defaults_cannot_confirm_are_said_to_be_unknown() -> None:
    """A run made by a version whose default templates differ: only its changed texts are known."""
    older = {**DEFAULTS["prompts"], "advisor_task": "An older advisor task: {response}"}
    run = run_info(defaults=older, prompts={"editor_task": "Rewrite: {response}"})
    (found,) = read_runs({"train": dataset(run)})
    assert found.prompts is None
    config = run_configuration([found])
    assert config["prompts_complete"] is False and config["options"]["prompts"] == {"editor_task": "Rewrite: {response}"}
    body = str(build_card({"train": dataset(run)}, runs=[found]))
    assert "changed from the defaults of coevol-hf" in body and "`editor_task`" in body
    assert "The texts of the other templates are not known here" in body and run.prompts_sha256[:16] in body
    assert "every option and the changed templates" in body

    # A run configuration holding every text completes them, when its texts give the digest.
    (completed,) = read_runs({"train": dataset(run)}, {**run.to_dict(), "options": {**run.options, "prompts": {**older, "editor_task": "Rewrite: {response}"}}})
    assert completed.prompts == {**older, "editor_task": "Rewrite: {response}"}


def test_a_refiner_of_another_run_is_refused() -> None:
    run = run_info(max_rounds=2)
    data = {"train": dataset(run, None)}
    with pytest.raises(ValueError, match=r"The data was refined with \['org/model@abc123'\], but the run configuration names 'other/model'"):
        read_runs(data, {**config_of(run), "model": "other/model"})
    with pytest.raises(ValueError, match=r"matches none of the 1 run\(s\) recorded in the data; it differs in `max_rounds` \(3 there, 2 in the data\)"):
        read_runs(data, config_of(run_info(max_rounds=3)))
    with pytest.raises(ValueError, match="it differs in the prompt templates"):
        read_runs(data, config_of(run_info(max_rounds=2, prompts={"editor_task": "Other: {response}"})))
    # A model that only failed rows (no trace) is no run of the data either.
    failed_elsewhere = {"train": Dataset.from_list([row(0, run), {**row(1, None), "coevol_model": "other/model"}])}
    with pytest.raises(ValueError, match="it differs in the model: pass"):
        read_runs(failed_elsewhere, config_of(run_info(model="other/model", max_rounds=2)))


def test_a_refiner_adds_where_the_data_came_from_made_public() -> None:
    run = run_info()
    command = "coevol-hf refine /home/alice/private/seed.jsonl -o /home/alice/out --endpoint http://10.1.2.3:8080 --prompts=/home/alice/p.json"
    (found,) = read_runs({"train": dataset(run)}, config_of(run, source="/home/alice/private/seed.jsonl", split="train", command=command))
    assert found.extras == {"source": "seed.jsonl", "split": "train", "command": "coevol-hf refine seed.jsonl -o out --endpoint URL --prompts=p.json"}
    assert "/home/alice" not in json.dumps(run_configuration([found])) and "10.1.2.3" not in json.dumps(run_configuration([found]))
    assert "# coevol-hf refine seed.jsonl -o out --endpoint URL --prompts=p.json" in str(build_card({"train": dataset(run)}, runs=[found]))


def test_a_run_configuration_of_several_runs_is_refused_as_refiner() -> None:
    first, second = run_info(max_rounds=1), run_info(max_rounds=3)
    several = run_configuration(read_runs({"train": dataset(first, second)}))
    with pytest.raises(ValueError, match=r"refiner= describes one run, and this run configuration holds several"):
        read_runs({"train": dataset(first, second)}, several)


def test_data_whose_rows_all_failed_needs_a_refiner() -> None:
    with pytest.raises(ValueError, match="No row of the data was refined .* pass refiner="):
        read_runs({"train": dataset(None, None)})
    run = run_info(max_rounds=2)
    (found,) = read_runs({"train": dataset(None, None)}, config_of(run))
    assert found.rows == 0 and found.info.options == run.options and found.prompts is not None


def test_public_names() -> None:
    assert is_hub_id("tatsu-lab/alpaca") and is_hub_id("org/data.v2")
    assert not is_hub_id("/home/alice/seed.jsonl") and not is_hub_id("data/seed.jsonl") and not is_hub_id("seed.jsonl")
    endpoints = "https://router.huggingface.co/v1,https://x.endpoints.huggingface.cloud,https://me-private.hf.space,http://192.168.0.2"
    assert public_command(f"coevol-hf refine tatsu-lab/alpaca --endpoint {endpoints}") == (
        "coevol-hf refine tatsu-lab/alpaca --endpoint https://router.huggingface.co/v1,URL,URL,URL"
    )
    assert public_command("coevol-hf refine ~/seed.jsonl 'C:\\Users\\bob\\seed two.jsonl'") == "coevol-hf refine seed.jsonl 'seed two.jsonl'"


def test_a_local_source_is_named_by_its_file_name(tmp_path: Path) -> None:
    source = tmp_path / "self_instruct_sample.jsonl"
    source.write_text("{}\n")
    card = str(build_card({"train": dataset(run_info())}, source=str(source)))
    assert "Source: `self_instruct_sample.jsonl`." in card and str(tmp_path) not in card
    assert yaml.safe_load(card.split("---\n", 2)[1])["pretty_name"] == "self_instruct_sample (CoEvol-refined)"


def test_generated_text_sits_between_markers_and_hand_written_text_stays() -> None:
    block = f"{MARK_START}\nnew\n{MARK_END}\n"
    assert card_text("", block) == "\n" + block
    assert card_text("\n# My data\n\nNotes.\n", block) == f"\n# My data\n\nNotes.\n\n{block}"
    replaced = card_text(f"\n# My data\n\n{MARK_START}\nold\n{MARK_END}\n\nMore notes.\n", block)
    assert replaced == f"\n# My data\n\n{MARK_START}\nnew\n{MARK_END}\n\nMore notes.\n"
    assert card_text(replaced, block) == replaced
    for broken in (f"{MARK_START}\nold\n", f"{MARK_END}\n{MARK_START}\n", f"{MARK_START}{MARK_END}{MARK_START}{MARK_END}"):
        with pytest.raises(ValueError, match="markers: keep one pair around the generated part"):
            card_text(broken, block)


def test_card_over_an_existing_readme_keeps_its_text_and_metadata_unless_replaced() -> None:
    existing = DatasetCard("---\nlicense: apache-2.0\ntags:\n- mine\n---\n# Notes\n\nHand-written.\n")
    data = {"train": dataset(run_info())}
    card = build_card(data, existing=existing)
    assert card.data.license == "apache-2.0" and card.data.tags == ["mine", "coevol", "synthetic", "instruction-tuning"]
    assert card.text.startswith("# Notes\n\nHand-written.\n\n" + MARK_START) and card.text.rstrip().endswith(MARK_END)
    assert str(build_card(data, existing=card)) == str(card)
    replaced = build_card(data, existing=existing, replace_card=True)
    assert "Hand-written" not in replaced.text and replaced.text.startswith("\n" + MARK_START) and replaced.data.license == "apache-2.0"


def test_data_run_config_keeps_extras_after_the_run() -> None:
    run = run_info()
    found = DataRun(run, 1, None, {"split": "train"})
    assert run_configuration([found]) == {**run.to_dict(), "prompts_complete": False, "split": "train"}
