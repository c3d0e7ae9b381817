"""Publishing refined data: `datasets` pushes the data, then the card and the run configuration.

`datasets` writes a README with `dataset_info` and `configs` (and keeps the metadata a card on
the repo already had); our card is built on top of that README, never in its place, and is
committed together with `coevol_config.json` on top of the data commit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import httpx2
from datasets import Dataset, DatasetDict
from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

from .card import CONFIG_FILE, build_card, split_stats
from .errors import PublishError


def push_to_hub(
    dataset: Dataset | DatasetDict,
    repo_id: str,
    *,
    refiner: Any,
    private: bool | None = None,
    token: str | None = None,
    license: str | None = None,
    source: str | None = None,
    pretty_name: str | None = None,
    commit_message: str = "Upload CoEvol-refined dataset",
) -> str:
    """Push refined data, its card and its run configuration; return the URL of the repo.

    `refiner` is the `CoEvol` that made the data, or the run configuration it wrote
    (`coevol_config.json`, as written by `coevol-hf refine`). `source` is the dataset that was
    refined: a Hub id links it and lends its licence and language to the card.
    """
    splits = dict(dataset) if isinstance(dataset, DatasetDict) else {"train": dataset}
    run = refiner if isinstance(refiner, Mapping) else refiner.run_config()
    api = HfApi(token=token)
    inherited = source_card(source, token) if source else None
    stats = split_stats(splits)
    build_card(splits, run, source=source, source_card=inherited, license=license, pretty_name=pretty_name, stats=stats)  # fail before uploading
    try:
        dataset.push_to_hub(repo_id, private=private, token=token, commit_message=commit_message)
        head = api.repo_info(repo_id, repo_type="dataset").sha
        written = DatasetCard.load(repo_id, repo_type="dataset", token=token)  # with dataset_info and configs
        card = build_card(splits, run, existing=written.data, source=source, source_card=inherited, license=license, pretty_name=pretty_name, stats=stats)
        api.create_commit(
            repo_id,
            repo_type="dataset",
            operations=[
                CommitOperationAdd("README.md", str(card).encode()),
                CommitOperationAdd(CONFIG_FILE, json.dumps(run, indent=2, ensure_ascii=False).encode()),
            ],
            commit_message="Add the CoEvol dataset card and run configuration",
            parent_commit=head,
        )
    except HfHubHTTPError as err:
        raise _publish_error(repo_id, err) from None
    except (httpx2.TransportError, RuntimeError, OSError) as err:
        raise PublishError(
            f"The push to {repo_id} was interrupted ({_cause(err)}). Nothing local was changed; run the push "
            "again: files the Hub already has are not uploaded twice."
        ) from None
    return f"{api.endpoint}/datasets/{repo_id}"


def source_card(source: str, token: str | None) -> Any:
    """The card data of a source dataset on the Hub, or None for a local file or no card."""
    if Path(source).exists() or source.count("/") != 1 or source.startswith((".", "/")):
        return None
    try:
        return DatasetCard.load(source, repo_type="dataset", token=token).data
    except (EntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError, httpx2.TransportError, ValueError):
        return None


def _publish_error(repo_id: str, err: HfHubHTTPError) -> PublishError:
    status = err.response.status_code if err.response is not None else None
    if status in (401, 403):
        return PublishError(
            f"The Hub refused the token ({status}) for {repo_id}: pass token= (a token with write access), "
            "or log in with `hf auth login`."
        )
    return PublishError(f"The Hub refused the push to {repo_id}: {err}".splitlines()[0])


def _cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
