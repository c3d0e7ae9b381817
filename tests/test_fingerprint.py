"""The `datasets` fingerprint of an operator: what enters it, and the private hook it relies on.

`datasets.utils._dill.pklregister` is private API. If a `datasets` release stops consulting it,
these tests fail loudly: the fingerprint would silently include the endpoint and the token.
"""

from __future__ import annotations

from datasets.fingerprint import Hasher
from datasets.utils import _dill

from coevol_hf import CoEvol, PairwiseJudge


def test_the_private_hook_is_what_hashes_operators() -> None:
    CoEvol(model="m")
    assert CoEvol in _dill.Pickler.dispatch, "datasets no longer has the pklregister dispatch table coevol-hf relies on"
    PairwiseJudge(a="x", b="y", model="m")
    assert PairwiseJudge in _dill.Pickler.dispatch


def test_connection_options_do_not_enter_the_fingerprint() -> None:
    base = CoEvol(endpoint="http://127.0.0.1:1", model="m")
    same = CoEvol(endpoint=["http://127.0.0.1:2", "http://127.0.0.1:3"], model="m", token="secret", max_concurrency=3, timeout=5, max_retries=0, cache_dir="/tmp/x")
    assert Hasher.hash(base) == Hasher.hash(same)
    for changed in ({"max_rounds": 2}, {"judge_mode": "score"}, {"seed": 1}, {"model_revision": "abc"}, {"prompts": {"editor_task": "Fix: {suggestions}"}}, {"format": "alpaca"}):
        assert Hasher.hash(CoEvol(model="m", **changed)) != Hasher.hash(base), changed


def test_a_temperature_written_as_an_integer_is_the_same_run() -> None:
    # `temperature=0` and the default 0.0 send the same body, so they share fingerprint and cache keys.
    assert Hasher.hash(CoEvol(model="m", temperature=0)) == Hasher.hash(CoEvol(model="m"))
    assert Hasher.hash(CoEvol(model="m", temperature=1)) == Hasher.hash(CoEvol(model="m", temperature=1.0))


def test_the_token_is_not_in_what_is_hashed() -> None:
    state = CoEvol(model="m", token="hf_secret_value").fingerprint_state()
    assert "hf_secret_value" not in repr(state)


def test_a_one_pass_pipeline_ignores_the_options_of_judged_rounds() -> None:
    # No judge and no second round: changing them neither recomputes the map nor shows in the record.
    base = CoEvol(model="m", pipeline="advise_edit")
    for changed in ({"max_rounds": 1}, {"judge_mode": "score"}, {"structured_judge": False}):
        assert Hasher.hash(CoEvol(model="m", pipeline="advise_edit", **changed)) == Hasher.hash(base), changed
    assert not {"max_rounds", "judge_mode", "structured_judge"} & set(base.options.output_options())
    assert Hasher.hash(CoEvol(model="m", pipeline="edit")) != Hasher.hash(base)


def test_a_change_to_the_package_code_changes_the_fingerprint(monkeypatch) -> None:
    # datasets pickles importable code by reference: without the code's hash, an upgrade that
    # changes what the agents write would reuse the results of the old code.
    import coevol_hf.operator as operator

    before = Hasher.hash(CoEvol(model="m"))
    monkeypatch.setattr(operator, "IMPLEMENTATION", operator.IMPLEMENTATION + " edited")
    assert Hasher.hash(CoEvol(model="m")) != before
