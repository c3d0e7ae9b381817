"""Refine an Alpaca-style file (instruction / input / output) and save the result.

    COEVOL_ENDPOINT=http://gpu-box:8080 python examples/refine_alpaca.py alpaca.jsonl refined/

On the sample shipped here, with the local model (`coevol-hf serve` in another shell):

    python examples/refine_alpaca.py examples/data/self_instruct_sample.jsonl refined/
"""

import sys

from datasets import load_dataset

from coevol_hf import coevol_refine

source, output = sys.argv[1], sys.argv[2]
dataset = load_dataset("json", data_files=source, split="train")
refined = dataset.map(coevol_refine, batched=True, fn_kwargs={"max_rounds": 2})
refined.save_to_disk(output)
improved = sum(any(rounds) for rounds in refined["coevol_rounds"])
print(f"{improved} of {len(refined)} responses improved; errors: {sum(e is not None for e in refined['coevol_error'])}")
