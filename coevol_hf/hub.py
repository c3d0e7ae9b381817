"""Publishing refined data: `datasets` pushes the data, then the card and the run configuration.

Everything published is read from the data (each row's trace carries its run), so data refined in
one process can be filtered and pushed from another. `datasets` writes a README with
`dataset_info` and `configs` and keeps the text of a card already on the repo; our card is built
on that README (only the part between the coevol-hf markers is ours) and committed with
`coevol_config.json` on top of the data commit, unless both are already there as they would be
written: pushing the same data twice makes no commit. No token value, local path or private
endpoint is published.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import httpx2
from datasets import Dataset, DatasetDict
from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from .card import CONFIG_FILE, Refiner, build_card, is_hub_id, known_secrets, read_runs, redact, run_configuration, split_stats
from .errors import PublishError
from .formats import splits_with_rows

logger = logging.getLogger(__name__)
README = "README.md"


def push_to_hub(
    dataset: Dataset | DatasetDict,
    repo_id: str,
    *,
    refiner: Refiner | Mapping[str, Any] | str | Path | None = None,
    private: bool | None = None,
    token: str | None = None,
    license: str | None = None,
    source: str | None = None,
    pretty_name: str | None = None,
    replace_card: bool = False,
    commit_message: str = "Upload CoEvol-refined dataset",
) -> str:
    """Push refined data, its card and its run configuration; return the URL of the repo.

    The card and `coevol_config.json` describe the run(s) recorded in the data's traces.
    `refiner` is optional: the `CoEvol` that made the data, or the run configuration it wrote
    (`coevol_config.json`, loaded or its path); one that did not make this data is refused before
    anything is uploaded. `source` is the dataset that was refined: a Hub id links it and lends its licence
    and language to the card; a local file is named by its file name only. Text the repo's card
    has outside the coevol-hf markers is kept, unless `replace_card`. `private=True` makes a new
    repo private and refuses an existing public one before uploading anything.
    """
    all_splits = dict(dataset) if isinstance(dataset, DatasetDict) else {"train": dataset}
    splits = splits_with_rows(all_splits)
    if isinstance(dataset, DatasetDict) and splits and len(splits) < len(all_splits):
        # A DatasetDict whose splits differ in columns cannot be pushed: an empty one gets the refined columns.
        features = next(iter(splits.values())).features
        dataset = DatasetDict({name: splits[name] if name in splits else Dataset.from_dict({c: [] for c in features}, features=features) for name in all_splits})
    runs = read_runs(splits, refiner)
    stats = split_stats(splits)
    secrets = known_secrets(token)
    api = HfApi(token=token)
    inherited = source_card(source, token) if source else None

    def render(existing: bytes | None) -> dict[str, bytes]:
        """README.md and coevol_config.json as they are to be published."""
        card = build_card(
            splits, runs=runs, existing=DatasetCard(existing.decode()) if existing is not None else None, replace_card=replace_card,
            source=source, source_card=inherited, license=license, pretty_name=pretty_name, stats=stats,
        )
        config = json.dumps(redact(run_configuration(runs), secrets), indent=2, ensure_ascii=False)
        return {README: redact(str(card), secrets).encode(), CONFIG_FILE: config.encode()}

    try:
        render(_file_at(api, repo_id, README, None))  # fail before uploading
        if private:
            _refuse_public(api, repo_id)
        dataset.push_to_hub(repo_id, private=private, token=token, commit_message=commit_message)
    except HfHubHTTPError as err:
        raise _publish_error(repo_id, err) from None
    except (httpx2.TransportError, RuntimeError, OSError) as err:
        raise PublishError(
            f"The push to {repo_id} was interrupted ({_cause(err)}). Nothing local was changed; run the push "
            "again: files the Hub already has are not uploaded twice."
        ) from None
    try:
        head = api.repo_info(repo_id, repo_type="dataset").sha
        wanted = render(_file_at(api, repo_id, README, head))  # the README datasets wrote: dataset_info, configs
        changed = [CommitOperationAdd(path, content) for path, content in wanted.items() if _file_at(api, repo_id, path, head) != content]
        if changed:
            api.create_commit(
                repo_id, repo_type="dataset", operations=changed, parent_commit=head,
                commit_message="Add the CoEvol dataset card and run configuration",
            )
        else:
            logger.info("%s already has this card and run configuration: no commit made", repo_id)
    except (HfHubHTTPError, httpx2.TransportError, OSError) as err:
        raise PublishError(
            f"The data of {repo_id} was pushed, but its card and {CONFIG_FILE} were not ({_cause(err)}). To finish, push "
            "again (`coevol-hf push` with the same arguments, or push_to_hub): the data already on the Hub is not "
            "uploaded again."
        ) from None
    return f"{api.endpoint}/datasets/{repo_id}"


def source_card(source: str, token: str | None) -> Any:
    """The card data of a source dataset on the Hub, or None for a local file or no card."""
    if not is_hub_id(source):
        return None
    try:
        return DatasetCard.load(source, repo_type="dataset", token=token).data
    except (EntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError, httpx2.TransportError, ValueError):
        return None


def _refuse_public(api: HfApi, repo_id: str) -> None:
    """`private=True` makes a new repo private; an existing public repo would stay public (`datasets`
    sets visibility only when it creates the repo), so the data would be published to everyone."""
    try:
        info = api.repo_info(repo_id, repo_type="dataset")
    except RepositoryNotFoundError:
        return
    if not info.private:
        raise PublishError(
            f"{repo_id} exists and is public, so private=True would publish this data to everyone: nothing was "
            "uploaded. Make the repo private on the Hub (its settings), push to a new repo, or push without private."
        )


def _file_at(api: HfApi, repo_id: str, path: str, revision: str | None) -> bytes | None:
    """A file of the repo at `revision`, or None when the repo, the revision or the file does not exist."""
    try:
        return Path(api.hf_hub_download(repo_id, path, repo_type="dataset", revision=revision)).read_bytes()
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError):
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
    if isinstance(err, HfHubHTTPError) and err.response is not None:
        return f"the Hub answered {err.response.status_code}: {err.server_message or err.response.reason_phrase}"
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
