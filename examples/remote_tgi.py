"""Use a remote TGI endpoint that needs a token, such as an HF Inference Endpoint.

    COEVOL_TOKEN=hf_... python examples/remote_tgi.py https://xyz.endpoints.huggingface.cloud examples/data/self_instruct_sample.jsonl out/ meta-llama/Llama-3.1-8B-Instruct@main

The token is sent to that endpoint only. Options that change outputs (model, rounds, judge mode,
sampling, prompts) name the cache; the endpoint and the token do not, so a re-run against another
replica of the same model loads from the cache. An Inference Endpoint reports its model as
`/repository`, with no revision: the last argument names the weights it serves (leave it out for
a TGI that reports its model id and revision).
"""

import os
import sys

from datasets import load_dataset

from coevol_hf import CoEvol

endpoint, source, output = sys.argv[1:4]
weights = sys.argv[4] if len(sys.argv) > 4 else None
refine = CoEvol(
    endpoint=endpoint,
    token=os.environ["COEVOL_TOKEN"],
    model_revision=weights,
    judge_mode="score",
    max_rounds=3,
    max_concurrency=96,  # below TGI's default max_concurrent_requests (128)
    timeout=300,
)
print("served model:", refine.server.identity)
dataset = load_dataset("json", data_files=source, split="train")
dataset.map(refine, batched=True).save_to_disk(output)
