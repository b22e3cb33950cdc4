"""The public per-request parameters and the step-level sampler that serving engines drive."""
from .params import SamplingParams
from .sampler import SampleOutput, Sampler

__all__ = ["SampleOutput", "Sampler", "SamplingParams"]
