"""Publishing to the Hub, against the in-process Hub server (`HF_ENDPOINT`, `HF_HUB_DISABLE_XET=1`).

Pushes run in a subprocess, as a user's would: huggingface_hub reads `HF_ENDPOINT` at import.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import alpaca_rows
from hub_server import HubServer
from tgi_server import TGIServer

from coevol_hf.card import MARK_END, MARK_START
from coevol_hf.cli import main
from coevol_hf.prompts import TEMPLATE_FIELDS

TOKEN = "hf_test_write_token"


@pytest.fixture
def refined_dir(tmp_path: Path) -> Path:
    """A directory written by `coevol-hf refine`: 4 Self-Instruct rows, one of them unusable."""
    rows = alpaca_rows(4)
    rows[2]["output"] = ""
    source = tmp_path / "seed_tasks.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with TGIServer(prefix_cache=True) as server:
        assert main(["refine", str(source), "-o", str(tmp_path / "out"), "--endpoint", server.url, "--max-rounds", "2"]) == 0
    return tmp_path / "out"


def run(code: str, hub: HubServer, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", **extra_env}
    env.pop("HF_DATASETS_OFFLINE", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def push(directory: Path, repo_id: str, hub: HubServer, *extra: str, token: str = TOKEN) -> subprocess.CompletedProcess:
    argv = ["push", str(directory), repo_id, "--token", token, *extra]
    return run(f"import sys; from coevol_hf.cli import main; sys.exit(main({argv!r}))", hub)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one line the command printed about its failure (progress bars share stderr)."""
    (line,) = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("coevol-hf push:")]
    return line


def read_anonymously(hub: HubServer, repo_id: str, path: str = "README.md") -> tuple[int, str | None]:
    """GET a file of a dataset repo as a visitor without a token does: (status, X-Error-Code)."""
    try:
        with urllib.request.urlopen(f"{hub.url}/datasets/{repo_id}/resolve/main/{path}", timeout=30) as response:
            return response.status, None
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("X-Error-Code")


def card_of(hub: HubServer, repo_id: str) -> tuple[dict, str]:
    text = hub.repos[repo_id].files["README.md"].decode()
    _, metadata, body = text.split("---\n", 2)
    return yaml.safe_load(metadata), body


def pushed_rows(hub: HubServer, repo_id: str, split: str = "train") -> list[dict]:
    files = hub.repos[repo_id].files
    shards = sorted(p for p in files if p.startswith(f"data/{split}-"))
    return [row for shard in shards for row in pq.read_table(io.BytesIO(files[shard])).to_pylist()]


def test_push_to_a_fresh_repo(refined_dir: Path) -> None:
    with HubServer(token=TOKEN) as hub:
        result = push(refined_dir, "me/refined", hub, "--license", "mit")
        assert result.returncode == 0, result.stderr
        assert f"{hub.url}/datasets/me/refined" in result.stdout
        metadata, body = card_of(hub, "me/refined")
        rows = pushed_rows(hub, "me/refined")
        config = json.loads(hub.repos["me/refined"].files["coevol_config.json"])
        loaded = run("import json; from datasets import load_dataset; print(json.dumps(load_dataset('me/refined', split='train', token=%r).to_list()))" % TOKEN, hub)

    local = pq.read_table(refined_dir / "data.parquet").to_pylist()
    assert rows == local
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == local

    # Metadata: what datasets wrote, and ours.
    assert metadata["dataset_info"]["splits"] == [{"name": "train", "num_bytes": metadata["dataset_info"]["splits"][0]["num_bytes"], "num_examples": 4}]
    assert metadata["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert metadata["license"] == "mit" and metadata["size_categories"] == ["n<1K"]
    assert metadata["task_categories"] == ["text-generation"] and set(metadata["tags"]) >= {"coevol", "synthetic", "instruction-tuning"}
    assert metadata["pretty_name"] == "seed_tasks (CoEvol-refined)"

    # The numbers are true of the pushed data.
    improved = sum(1 for r in rows if r["coevol_error"] is None and any(r["coevol_rounds"]))
    errors = sum(1 for r in rows if r["coevol_error"] is not None)
    calls = sum(json.loads(r["coevol_trace"])["usage"]["calls"] for r in rows if r["coevol_trace"])
    prompt, cached = (sum(json.loads(r["coevol_trace"])["usage"][key] for r in rows if r["coevol_trace"]) for key in ("prompt_tokens", "cached_tokens"))
    assert (improved, errors) == (3, 1)
    assert "| rows | 4 |" in body and f"| rows improved | {improved} (75.0%) |" in body
    assert "| rows with a `coevol_error`, by reason (edits accepted before it kept) | input: 1 |" in body and f"| LLM calls | {calls} |" in body
    assert "| accepted edits per turn (edits: turns) | 2: 3 |" in body
    assert cached > 0 and f"| prompt tokens the server read from its prefix cache | {cached} ({cached / prompt:.0%}) |" in body
    refined_rows = [r for r in rows if r["coevol_error"] is None]
    before, after = sum(len(r["coevol_original"][0]) for r in refined_rows), sum(len(r["output"]) for r in refined_rows)
    assert f"| response length in characters, before → after | {before} → {after} |" in body
    assert "Model: `test-org/test-model@0123abcd`, served by Text Generation Inference 3.3.6" in body
    assert "| `max_rounds` | `2` |" in body and "| `pipeline` | `\"coevol\"` |" in body
    assert "**After**" in body and "[edited] [edited]" in body and "@inproceedings{li-etal-2024-coevol" in body

    # The run configuration holds every option and every template.
    assert config["model"] == "test-org/test-model@0123abcd" and config["options"]["max_rounds"] == 2
    assert set(config["options"]["prompts"]) == set(TEMPLATE_FIELDS) and TOKEN not in json.dumps(config)


def test_push_private_makes_a_repo_only_its_owner_can_read(refined_dir: Path) -> None:
    # No token required by the server as a whole: anonymous reads work, as on the Hub, for public repos.
    with HubServer() as hub:
        result = push(refined_dir, "me/refined", hub, "--private")
        assert result.returncode == 0, result.stderr
        repo = hub.repos["me/refined"]
        rows = pushed_rows(hub, "me/refined")
        anonymous = read_anonymously(hub, "me/refined")
        owner = run(
            "from huggingface_hub import hf_hub_download\n"
            f"print(open(hf_hub_download('me/refined', 'README.md', repo_type='dataset', token={TOKEN!r})).read() == {repo.files['README.md'].decode()!r})",
            hub,
        )
    assert repo.private is True
    assert rows == pq.read_table(refined_dir / "data.parquet").to_pylist() and "coevol_config.json" in repo.files
    assert anonymous == (401, "RepoNotFound")  # what the Hub answers a visitor about a private repo
    assert owner.returncode == 0 and owner.stdout.strip().splitlines()[-1] == "True", owner.stderr


def test_push_to_hub_private_true_makes_a_private_repo_and_the_default_a_public_one(refined_dir: Path) -> None:
    code = f"""
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import RepositoryNotFoundError
refined = Dataset.from_parquet({str(refined_dir / "data.parquet")!r})
push_to_hub(refined, "me/private", private=True, token={TOKEN!r})
push_to_hub(refined, "me/public", token={TOKEN!r})
for repo_id in ("me/private", "me/public"):
    try:
        hf_hub_download(repo_id, "README.md", repo_type="dataset", token=False)
        print(repo_id, "readable by anyone")
    except RepositoryNotFoundError:
        print(repo_id, "not found without a token")
"""
    with HubServer() as hub:
        result = python_push(code, hub)
        assert result.returncode == 0, result.stderr
        private, public = hub.repos["me/private"], hub.repos["me/public"]
        anonymous = read_anonymously(hub, "me/private"), read_anonymously(hub, "me/public")
    assert (private.private, public.private) == (True, False)
    assert "coevol_config.json" in private.files and MARK_START.encode() in private.files["README.md"]
    assert result.stdout.strip().splitlines()[-2:] == ["me/private not found without a token", "me/public readable by anyone"]
    assert anonymous == ((401, "RepoNotFound"), (200, None))


def test_private_push_to_an_existing_public_repo_uploads_nothing(refined_dir: Path) -> None:
    with HubServer() as hub:
        hub.create("me/refined", {"README.md": b"# Someone's public dataset\n"})
        result = push(refined_dir, "me/refined", hub, "--private")
        repo = hub.repos["me/refined"]
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "coevol-hf push: me/refined exists and is public, so private=True would publish this data to everyone: nothing was "
        "uploaded. Make the repo private on the Hub (its settings), push to a new repo, or push without private."
    )
    assert set(repo.files) == {"README.md"} and repo.private is False


def test_existing_card_metadata_survives(refined_dir: Path) -> None:
    with HubServer(token=TOKEN) as hub:
        hub.create("me/refined", {"README.md": b"---\nlicense: apache-2.0\ntags:\n- my-own-tag\nlanguage:\n- en\n---\n# An older card\n"})
        result = push(refined_dir, "me/refined", hub)
        assert result.returncode == 0, result.stderr
        metadata, body = card_of(hub, "me/refined")
    assert metadata["license"] == "apache-2.0" and metadata["language"] == ["en"]
    assert metadata["tags"][0] == "my-own-tag" and "coevol" in metadata["tags"]
    assert "dataset_info" in metadata and "configs" in metadata
    assert "# seed_tasks (CoEvol-refined)" in body
    assert body.startswith(f"# An older card\n\n{MARK_START}\n") and body.rstrip().endswith(MARK_END)


def test_source_dataset_lends_its_licence(tmp_path: Path) -> None:
    rows = alpaca_rows(2)
    code = f"""
import json
from datasets import Dataset
from coevol_hf import CoEvol, push_to_hub
refiner = CoEvol(endpoint=URL, max_rounds=1)
refined = Dataset.from_list({rows!r}).map(refiner, batched=True)
print(push_to_hub(refined, "me/refined", refiner=refiner, token={TOKEN!r}, source="org/seed-tasks"))
"""
    with HubServer(token=TOKEN) as hub, TGIServer() as server:
        hub.create("org/seed-tasks", {"README.md": b"---\nlicense: apache-2.0\nlanguage:\n- en\n---\n# Seed tasks\n"})
        result = run(code.replace("URL", repr(server.url)), hub)
        assert result.returncode == 0, result.stderr
        metadata, body = card_of(hub, "me/refined")
    assert metadata["license"] == "apache-2.0" and metadata["language"] == ["en"]
    assert metadata["source_datasets"] == ["org/seed-tasks"] and "[org/seed-tasks](https://huggingface.co/datasets/org/seed-tasks)" in body


def test_dataset_dict_with_two_splits(tmp_path: Path) -> None:
    rows = alpaca_rows(5)
    code = f"""
import json
from datasets import Dataset, DatasetDict
from coevol_hf import CoEvol, push_to_hub
refiner = CoEvol(endpoint=URL, max_rounds=1)
splits = DatasetDict(train=Dataset.from_list({rows[:3]!r}), test=Dataset.from_list({rows[3:]!r})).map(refiner, batched=True)
push_to_hub(splits, "me/two-splits", refiner=refiner, token={TOKEN!r})
"""
    with HubServer(token=TOKEN) as hub, TGIServer() as server:
        result = run(code.replace("URL", repr(server.url)), hub)
        assert result.returncode == 0, result.stderr
        metadata, body = card_of(hub, "me/two-splits")
        train, test = pushed_rows(hub, "me/two-splits", "train"), pushed_rows(hub, "me/two-splits", "test")
    assert [r["instruction"] for r in train] == [r["instruction"] for r in rows[:3]]
    assert [r["instruction"] for r in test] == [r["instruction"] for r in rows[3:]]
    assert {s["split"] for s in metadata["configs"][0]["data_files"]} == {"train", "test"}
    assert "| rows | 5 |" in body


def test_a_split_without_rows_and_a_run_configuration_file(tmp_path: Path) -> None:
    # `map` leaves an empty split without the coevol_* columns; the refiner given as a file's path.
    rows = alpaca_rows(3)
    config = tmp_path / "coevol_config.json"
    code = f"""
import json
from datasets import Dataset, DatasetDict
from coevol_hf import CoEvol, push_to_hub
refiner = CoEvol(endpoint=URL, max_rounds=1)
splits = DatasetDict(train=Dataset.from_list({rows!r}), test=Dataset.from_list({rows!r}).select([])).map(refiner, batched=True)
json.dump(refiner.run_config(), open({str(config)!r}, "w"))
push_to_hub(splits, "me/with-empty", refiner={str(config)!r}, token={TOKEN!r})
"""
    with HubServer(token=TOKEN) as hub, TGIServer() as server:
        result = run(code.replace("URL", repr(server.url)), hub)
        assert result.returncode == 0, result.stderr
        metadata, body = card_of(hub, "me/with-empty")
        train, test = pushed_rows(hub, "me/with-empty", "train"), pushed_rows(hub, "me/with-empty", "test")
    assert [r["instruction"] for r in train] == [r["instruction"] for r in rows] and test == []
    assert {s["split"] for s in metadata["configs"][0]["data_files"]} == {"train", "test"}
    assert "| rows | 3 |" in body


def test_wrong_token_is_a_clear_error(refined_dir: Path) -> None:
    with HubServer(token=TOKEN) as hub:
        result = push(refined_dir, "me/refined", hub, token="hf_wrong")
        assert hub.repos == {}
    assert result.returncode == 1
    assert error_line(result) == (
        "coevol-hf push: The Hub refused the token (401) for me/refined: pass token= (a token with write "
        "access), or log in with `hf auth login`."
    )


def test_connection_dropped_mid_push(refined_dir: Path) -> None:
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in refined_dir.iterdir()}
    with HubServer(token=TOKEN) as hub:
        hub.drop_after = 1  # the first upload request loses its connection
        result = push(refined_dir, "me/refined", hub)
        assert "README.md" not in hub.repos["me/refined"].files
    assert result.returncode == 1
    message = error_line(result)
    assert message.startswith("coevol-hf push: The push to me/refined was interrupted (") and "Nothing local was changed" in message
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in refined_dir.iterdir()} == before


def test_a_run_configuration_from_another_model_is_refused_before_upload(refined_dir: Path) -> None:
    config_path = refined_dir / "coevol_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "model": "other/model"}))
    with HubServer(token=TOKEN) as hub:
        result = push(refined_dir, "me/refined", hub)
        assert not [r for r in hub.requests if r.startswith(("POST", "PUT"))]
    assert result.returncode == 1 and "the run configuration names 'other/model'" in result.stderr


def test_card_command_renders_locally(refined_dir: Path, capsys: pytest.CaptureFixture) -> None:
    (refined_dir / "README.md").unlink()
    assert main(["card", str(refined_dir), "--license", "cc-by-4.0", "--pretty-name", "Refined seeds"]) == 0
    card = (refined_dir / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---\n", 2)[1])
    assert metadata["license"] == "cc-by-4.0" and metadata["pretty_name"] == "Refined seeds"
    assert "| rows | 4 |" in card and "coevol-hf refine" in card and "--token" not in card


def test_licence_given_to_refine_is_kept_by_push(tmp_path: Path) -> None:
    source = tmp_path / "seed_tasks.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(2)))
    with TGIServer() as server:
        assert main(["refine", str(source), "-o", str(tmp_path / "out"), "--endpoint", server.url, "--max-rounds", "1", "--license", "apache-2.0"]) == 0
    assert yaml.safe_load((tmp_path / "out" / "README.md").read_text().split("---\n", 2)[1])["license"] == "apache-2.0"
    with HubServer(token=TOKEN) as hub:
        result = push(tmp_path / "out", "me/refined", hub)
        assert result.returncode == 0, result.stderr
        assert card_of(hub, "me/refined")[0]["license"] == "apache-2.0"
        card = hub.repos["me/refined"].files["README.md"].decode()
        hub.repos["me/refined"].files["README.md"] = card.replace("license: apache-2.0", "license: mit").encode()  # changed on the Hub
        assert push(tmp_path / "out", "me/refined", hub).returncode == 0
        assert card_of(hub, "me/refined")[0]["license"] == "mit"
        assert push(tmp_path / "out", "me/refined", hub, "--license", "cc-by-4.0").returncode == 0
        assert card_of(hub, "me/refined")[0]["license"] == "cc-by-4.0"  # the flag of this push decides


# -- issue 13: the card is ours only between the markers; pushing is idempotent; the data carries its run --


def python_push(code: str, hub: HubServer, **env: str) -> subprocess.CompletedProcess:
    """Run `code` (after `from coevol_hf import push_to_hub`) in a fresh process, with extra environment."""
    return run(f"from datasets import Dataset\nfrom coevol_hf import push_to_hub\n{code}", hub, **env)


def test_hand_written_text_stays_and_only_the_generated_part_is_replaced(refined_dir: Path) -> None:
    data = refined_dir / "data.parquet"
    with HubServer(token=TOKEN) as hub:
        hub.create("me/refined", {"README.md": b"---\nlicense: apache-2.0\n---\n# My notes\n\nWritten by hand.\n"})
        assert push(refined_dir, "me/refined", hub).returncode == 0
        _, body = card_of(hub, "me/refined")
        assert body.startswith(f"# My notes\n\nWritten by hand.\n\n{MARK_START}\n") and "| rows | 4 |" in body

        # The owner edits the card on the Hub, before and after the generated part.
        readme = hub.repos["me/refined"].files["README.md"].decode()
        hub.edit("me/refined", {"README.md": readme.replace("Written by hand.", "Written by hand, edited.").encode() + b"\n## Licence notes\n\nMine.\n"})
        code = f"push_to_hub(Dataset.from_parquet({str(data)!r}).select(range(3)), 'me/refined', token={TOKEN!r})"
        result = python_push(code, hub)
        assert result.returncode == 0, result.stderr
        metadata, body = card_of(hub, "me/refined")
        assert body.startswith(f"# My notes\n\nWritten by hand, edited.\n\n{MARK_START}\n")
        assert body.endswith(f"{MARK_END}\n\n## Licence notes\n\nMine.\n")
        assert body.count(MARK_START) == body.count(MARK_END) == 1 and body.count("## How it was made") == 1
        assert "| rows | 3 |" in body and "| rows | 4 |" not in body and metadata["license"] == "apache-2.0"

        # replace_card=True: the generated card only, the metadata kept.
        result = python_push(code.replace("token=", "replace_card=True, token="), hub)
        assert result.returncode == 0, result.stderr
        metadata, body = card_of(hub, "me/refined")
    assert body.startswith(f"\n{MARK_START}\n") and body.rstrip().endswith(MARK_END)
    assert "by hand" not in body and "Licence notes" not in body and metadata["license"] == "apache-2.0"


def test_broken_markers_are_refused_before_upload(refined_dir: Path) -> None:
    with HubServer(token=TOKEN) as hub:
        hub.create("me/refined", {"README.md": f"# Notes\n{MARK_START}\nold\n{MARK_START}\n{MARK_END}\n".encode()})
        result = push(refined_dir, "me/refined", hub)
        assert not [r for r in hub.requests if r.startswith(("POST", "PUT"))]
    assert result.returncode == 1
    assert error_line(result) == (
        f"coevol-hf push: The README has 2 `{MARK_START}` and 1 `{MARK_END}` markers: keep one pair around the generated "
        "part (the text outside it is kept), or replace the whole card (replace_card=True)."
    )


def test_pushing_the_same_data_twice_makes_no_commit(refined_dir: Path) -> None:
    with HubServer(token=TOKEN) as hub:
        assert push(refined_dir, "me/refined", hub).returncode == 0
        commits = list(hub.repos["me/refined"].commits)
        commit_requests = len([r for r in hub.requests if "/commit/" in r])
        result = push(refined_dir, "me/refined", hub)
        assert result.returncode == 0, result.stderr
        assert hub.repos["me/refined"].commits == commits
        assert len([r for r in hub.requests if "/commit/" in r]) == commit_requests  # datasets' and ours: none
    # datasets asks huggingface_hub for a commit, which sees from preupload's oids that nothing changed;
    # we see it ourselves (README and coevol_config.json compared) and do not ask at all.
    assert result.stderr.count("No files have been modified since last commit") == 1
    assert len(commits) == 3  # creation, data, card


def test_a_failed_card_commit_says_the_data_is_there_and_a_second_push_finishes(refined_dir: Path) -> None:
    with HubServer(token=TOKEN) as hub:
        hub.fail_commit = 2  # the data commit goes through, the card's does not
        result = push(refined_dir, "me/refined", hub)
        assert result.returncode == 1
        assert error_line(result) == (
            "coevol-hf push: The data of me/refined was pushed, but its card and coevol_config.json were not "
            "(the Hub answered 500: Internal Error - We're working hard to fix this as soon as possible!). To finish, "
            "push again (`coevol-hf push` with the same arguments, or push_to_hub): the data already on the Hub is "
            "not uploaded again."
        )
        files = dict(hub.repos["me/refined"].files)
        assert "coevol_config.json" not in files and MARK_START.encode() not in files["README.md"]
        commits, requests = len(hub.repos["me/refined"].commits), len(hub.requests)

        result = push(refined_dir, "me/refined", hub)
        assert result.returncode == 0, result.stderr
        repo = hub.repos["me/refined"]
        assert len(repo.commits) == commits + 1  # the card's commit only: the data did not change
        assert {p: c for p, c in repo.files.items() if p.startswith("data/")} == {p: c for p, c in files.items() if p.startswith("data/")}
        assert MARK_START.encode() in repo.files["README.md"] and "coevol_config.json" in repo.files
        assert not [r for r in hub.requests[requests:] if r.startswith("PUT /lfs-upload/")]  # nor uploaded again


def test_push_without_refiner_after_filtering_in_another_process(refined_dir: Path) -> None:
    """Refined by `coevol-hf refine`, filtered and pushed later: the card and config come from the traces."""
    local = json.loads((refined_dir / "coevol_config.json").read_text())
    code = f"""
refined = Dataset.from_parquet({str(refined_dir / "data.parquet")!r})
kept = refined.filter(lambda row: row["coevol_error"] is None)
print(push_to_hub(kept, "me/filtered", token={TOKEN!r}))
"""
    with HubServer(token=TOKEN) as hub:
        result = python_push(code, hub)
        assert result.returncode == 0, result.stderr
        metadata, body = card_of(hub, "me/filtered")
        config = json.loads(hub.repos["me/filtered"].files["coevol_config.json"])
    assert "| rows | 3 |" in body and "| rows with a `coevol_error`, by reason (edits accepted before it kept) | none |" in body
    assert "Model: `test-org/test-model@0123abcd`, served by Text Generation Inference 3.3.6" in body and "| `max_rounds` | `2` |" in body
    assert f"All {len(TEMPLATE_FIELDS)} templates are in `coevol_config.json`" in body and "Source: not recorded." in body
    run_keys = ["coevol_hf_version", "implementation", "model", "server", "options", "prompts_sha256"]
    assert {k: config[k] for k in run_keys} == {k: local[k] for k in run_keys} and config["prompts_complete"] is True
    assert metadata["pretty_name"] == "CoEvol-refined responses"


def test_data_of_two_runs_is_described_run_by_run(tmp_path: Path) -> None:
    rows = alpaca_rows(5)
    code = f"""
from datasets import concatenate_datasets
from coevol_hf import CoEvol
one = Dataset.from_list({rows[:2]!r}).map(CoEvol(endpoint=URL, max_rounds=1), batched=True)
two = Dataset.from_list({rows[2:]!r}).map(CoEvol(endpoint=URL, max_rounds=2), batched=True)
push_to_hub(concatenate_datasets([one, two]), "me/two-runs", token={TOKEN!r})
"""
    with HubServer(token=TOKEN) as hub, TGIServer() as server:
        result = python_push(code.replace("URL", repr(server.url)), hub)
        assert result.returncode == 0, result.stderr
        _, body = card_of(hub, "me/two-runs")
        config = json.loads(hub.repos["me/two-runs"].files["coevol_config.json"])
    assert [(run["options"]["max_rounds"], run["rows"]) for run in config["runs"]] == [(1, 2), (2, 3)]
    assert all(set(run["options"]["prompts"]) == set(TEMPLATE_FIELDS) for run in config["runs"])
    assert "The rows were made by 2 runs" in body and "### Run 1 of 2: 2 rows" in body and "### Run 2 of 2: 3 rows" in body


def test_nothing_private_is_published(refined_dir: Path) -> None:
    """Local paths, a private endpoint and every token value this process knows stay out of the card and config."""
    hf_secret, coevol_secret = "hf_saved_in_the_environment", "coevol_server_key_123"
    config = json.loads((refined_dir / "coevol_config.json").read_text())
    config["source"] = "/home/alice/data/self_instruct_sample.jsonl"  # as a configuration written before names were made public
    config["command"] = (
        f"HF_TOKEN={hf_secret} COEVOL_TOKEN={coevol_secret} coevol-hf refine /home/alice/data/self_instruct_sample.jsonl "
        f"-o /home/alice/out --endpoint http://10.0.0.7:8080 --token {TOKEN}"
    )
    code = f"""
refined = Dataset.from_parquet({str(refined_dir / "data.parquet")!r})
push_to_hub(refined, "me/refined", refiner={config!r}, token={TOKEN!r}, source="/home/alice/data/self_instruct_sample.jsonl")
"""
    with HubServer(token=TOKEN) as hub:
        result = python_push(code, hub, HF_TOKEN=hf_secret, COEVOL_TOKEN=coevol_secret)
        assert result.returncode == 0, result.stderr
        readme = hub.repos["me/refined"].files["README.md"].decode()
        published = hub.repos["me/refined"].files["coevol_config.json"].decode()
    for text in (readme, published):
        for private in (TOKEN, hf_secret, coevol_secret, "/home/alice", "10.0.0.7"):
            assert private not in text
    assert "Source: `self_instruct_sample.jsonl`." in readme and "pretty_name: self_instruct_sample (CoEvol-refined)" in readme
    assert json.loads(published)["source"] == "self_instruct_sample.jsonl"
    assert json.loads(published)["command"] == "HF_TOKEN=*** COEVOL_TOKEN=*** coevol-hf refine self_instruct_sample.jsonl -o out --endpoint URL --token ***"
    assert "# HF_TOKEN=*** COEVOL_TOKEN=*** coevol-hf refine self_instruct_sample.jsonl" in readme
