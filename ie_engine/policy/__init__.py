"""The concept policy: GP / ridge reward prediction and tiered softmax-range sampling."""

from ie_engine.policy.concept_policy import ConceptPolicy, Distribution
from ie_engine.policy.gp import Prediction, fit_gp, fit_predict_ridge, predict_gp
from ie_engine.policy.sampler import (
    concept_distribution,
    sample_concepts,
    scaled_tier_sizes,
    softmax_range,
)

__all__ = [
    "ConceptPolicy",
    "Distribution",
    "Prediction",
    "concept_distribution",
    "fit_gp",
    "fit_predict_ridge",
    "predict_gp",
    "sample_concepts",
    "scaled_tier_sizes",
    "softmax_range",
]
