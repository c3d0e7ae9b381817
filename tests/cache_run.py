"""One refinement run in its own process, as a user's script would do it.

Usage: python cache_run.py DATA_FILE CACHE_DIR OPTIONS_JSON
OPTIONS_JSON may hold "map" (keyword arguments of Dataset.map) and "fn_kwargs"; every other key
is a CoEvol option. With "use_coevol_refine": true, the ready-made `coevol_refine` is used.
Prints the refined rows as JSON on the last line of stdout.
"""

import json
import sys

from datasets import load_dataset

from coevol_hf import CoEvol, coevol_refine

data_file, cache_dir, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
map_kwargs = options.pop("map", {})
transform = coevol_refine if options.pop("use_coevol_refine", False) else CoEvol(**options)
dataset = load_dataset("json", data_files=data_file, split="train", cache_dir=cache_dir)
refined = dataset.map(transform, batched=True, **map_kwargs)
print(json.dumps(refined.to_list()))
