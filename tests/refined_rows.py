"""Refined rows for the report and story tests, made through `ds.map(CoEvol(...))` on the scripted TGI server.

Each Alpaca row takes a known path: row 0's edits win both rounds; row 1's judge prefers whichever
answer it reads first (rejected, as the 135M model does); row 2's response carries markup that
must stay text; row 3 has no output (an `input` error). The MT-Bench split is multi-turn.
"""

from __future__ import annotations

from conftest import alpaca_rows, mt_bench_conversations
from datasets import Dataset, DatasetDict
from tgi_server import Call, TGIServer, default_script, prefer_longer

from coevol_hf import CoEvol

MARKUP = "<script>document.title = 'pwned'</script><img src=x onerror=\"document.title = 'pwned'\"> & </script>"
FIRST_READ = "A\nThe first answer is better."


def script(call: Call) -> str:
    """The default replies, but row 1's judge names whichever answer it read first."""
    if call.role == "judge":
        return FIRST_READ if POSITION_BIASED in call.task else prefer_longer(call)
    return default_script(call)


def alpaca() -> list[dict]:
    rows = alpaca_rows(4)
    rows[2]["output"] = f"Answer {MARKUP} with markup."
    rows[3]["output"] = None
    return rows


POSITION_BIASED = alpaca()[1]["instruction"]


def refine(server: TGIServer) -> DatasetDict:
    """Two splits: 4 Alpaca rows (improved, rejected, markup, error) and 2 two-turn MT-Bench rows."""
    refiner = CoEvol(endpoint=server.url, max_rounds=2)
    return DatasetDict(
        {
            "alpaca": Dataset.from_list(alpaca()).map(refiner, batched=True),
            "mt_bench": Dataset.from_list(mt_bench_conversations()[:2]).map(refiner, batched=True),
        }
    )
