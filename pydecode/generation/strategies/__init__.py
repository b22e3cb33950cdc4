"""Which strategy runs a call, and where it lives. Each strategy module has ``run(ctx: DecodeContext)``."""
from __future__ import annotations

import importlib

STRATEGIES = {
    "sample": "pydecode.generation.strategies.sample",  # greedy and multinomial sampling
    "beam": "pydecode.generation.strategies.beam.beam",  # beam search, beam sampling, diverse (group) beam search
    "contrastive": "pydecode.generation.strategies.contrastive",
    "dola": "pydecode.generation.strategies.dola",
    "assisted": "pydecode.generation.strategies.speculative.assisted",
    "prompt_lookup": "pydecode.generation.strategies.speculative.prompt_lookup",
}

def strategy_name(config, model_kwargs: dict) -> str:
    """The strategy transformers would pick for this config."""
    if model_kwargs.get("assistant_model") is not None:
        return "assisted"
    if config.prompt_lookup_num_tokens is not None:
        return "prompt_lookup"
    if config.dola_layers is not None:
        return "dola"
    if (config.num_beams or 1) > 1:
        return "beam"
    if config.penalty_alpha is not None and config.penalty_alpha > 0 and (config.top_k or 0) > 1:
        return "contrastive"
    return "sample"


def expand_factor(name: str, config) -> int:
    """How many rows each prompt becomes: beams for the beam family, return sequences otherwise."""
    if name == "beam":
        return int(config.num_beams)
    return int(config.num_return_sequences or 1)


def load(name: str):
    """The ``run`` function of strategy ``name``."""
    return importlib.import_module(STRATEGIES[name]).run
