"""coevol-hf: refine instruction-tuning responses with CoEvol, as a `datasets` map transform.

    from coevol_hf import coevol_refine, CoEvol
    refined = ds.map(coevol_refine, batched=True)

Names are imported on first use (as huggingface_hub does): `import coevol_hf` reads no
environment, contacts nothing and loads neither `datasets` nor an HTTP client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_NAMES = {
    "CoEvol": "transform",
    "coevol_refine": "transform",
    "PairwiseJudge": "pairwise",
    "push_to_hub": "hub",
    "report": "report",
    "Columns": "formats",
    "Prompts": "prompts",
    "CoEvolOptions": "options",
    "PairwiseOptions": "options",
    "Trace": "trace",
    "CoEvolError": "errors",
    "ConfigError": "errors",
    "EndpointError": "errors",
    "InputFormatError": "errors",
    "PublishError": "errors",
}

__all__ = sorted([*_NAMES, "__version__"])


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'coevol_hf' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # what type checkers and IDEs see
    from .errors import CoEvolError, ConfigError, EndpointError, InputFormatError, PublishError
    from .formats import Columns
    from .hub import push_to_hub
    from .options import CoEvolOptions, PairwiseOptions
    from .pairwise import PairwiseJudge
    from .prompts import Prompts
    from .report import report
    from .trace import Trace
    from .transform import CoEvol, coevol_refine
