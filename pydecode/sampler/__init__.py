"""The public per-request parameters and the step-level sampler that serving engines drive."""
from .params import SamplingParams

__all__ = ["SamplingParams"]
