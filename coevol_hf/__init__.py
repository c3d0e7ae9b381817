"""coevol-hf: refine instruction-tuning responses with CoEvol, as a `datasets` map transform.

    from coevol_hf import coevol_refine, CoEvol
    refined = ds.map(coevol_refine, batched=True)
"""

__version__ = "0.1.0"

from .errors import CoEvolError, ConfigError, EndpointError, InputFormatError, PublishError  # noqa: E402
from .formats import Columns  # noqa: E402
from .hub import push_to_hub  # noqa: E402
from .pairwise import PairwiseJudge  # noqa: E402
from .prompts import Prompts  # noqa: E402
from .transform import CoEvol, coevol_refine  # noqa: E402

__all__ = [
    "CoEvol",
    "CoEvolError",
    "Columns",
    "ConfigError",
    "EndpointError",
    "InputFormatError",
    "PairwiseJudge",
    "Prompts",
    "PublishError",
    "__version__",
    "coevol_refine",
    "push_to_hub",
]
