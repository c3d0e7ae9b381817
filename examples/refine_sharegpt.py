"""Refine every assistant turn of ShareGPT multi-turn conversations.

    python examples/refine_sharegpt.py conversations.json refined.jsonl --endpoint http://gpu-box:8080

On the three MT-Bench conversations shipped here, with the local model (`coevol-hf serve`):

    python examples/refine_sharegpt.py examples/data/mt_bench_sample.json refined.jsonl
"""

import argparse

from datasets import load_dataset

from coevol_hf import CoEvol

parser = argparse.ArgumentParser()
parser.add_argument("source")
parser.add_argument("output")
parser.add_argument("--endpoint", default="http://127.0.0.1:8080")
args = parser.parse_args()

conversations = load_dataset("json", data_files=args.source, split="train")
# Each gpt turn is refined in order and sees the two exchanges before it, already refined.
refine = CoEvol(endpoint=args.endpoint, format="sharegpt", context_turns=2, max_rounds=2)
refined = conversations.map(refine, batched=True)
refined.to_json(args.output, lines=True)
for row in refined.select(range(min(3, len(refined)))):
    print(row["coevol_rounds"], row["coevol_error"])
