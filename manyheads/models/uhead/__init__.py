"""Uncertainty heads (UHeads): step-level verification from a frozen backbone's features.

``StepVerifier.default()`` loads the head shipped for the embedded model; ``score(prompt, steps)``
returns a ``StepScore`` per step; ``best_of_n`` and ``resample_steps`` use the scores to guide
generation. Training, evaluation and data live in ``train``/``data``; the CLI in ``cli``.
"""

from manyheads.models.uhead.errors import UHeadError
from manyheads.models.uhead.features import FeatureConfig, FeatureObserver, prefill_features
from manyheads.models.uhead.head import UHead, UHeadConfig
from manyheads.models.uhead.steps import Step, split_steps, token_spans
from manyheads.models.uhead.verifier import Candidate, Guided, StepScore, StepVerifier

__all__ = ["Candidate", "FeatureConfig", "FeatureObserver", "Guided", "Step", "StepScore",
           "StepVerifier", "UHead", "UHeadConfig", "UHeadError", "prefill_features",
           "split_steps", "token_spans"]
