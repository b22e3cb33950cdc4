"""Which strategy runs a generate() call, decided here once, before anything is built.

:func:`choose` names the strategy transformers would pick for the config, runs that strategy's own config checks,
and resolves the fallbacks (diverse beam search for beam search with ``num_beam_groups > 1``, sampling for
contrastive search with ``do_sample=True``, contrastive search for DoLa where transformers 4.x ignores
``dola_layers``). Each strategy module has ``run(ctx: DecodeContext)``; strategies never import one another.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..model.seq2seq import check_strategy as check_encoder_decoder_strategy
from . import contrastive, dola, sample
from .beam import beam, group_beam
from .speculative import assisted, prompt_lookup

RUNS = {
    "sample": sample.run,  # greedy and multinomial sampling
    "contrastive": contrastive.run,
    "dola": dola.run,
    "beam": beam.run,  # beam search and beam sampling
    "group_beam": group_beam.run,  # diverse beam search
    "assisted": assisted.run,
    "prompt_lookup": prompt_lookup.run,
}


@dataclass(frozen=True)
class Choice:
    """``name``: the strategy the config asks for (what capability checks and messages name; ``"beam"`` covers the
    beam family); ``runs``: the key of :data:`RUNS` that decodes the call."""

    name: str
    runs: str


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
    if contrastive.asks_for_contrastive(config):
        return "contrastive"
    return "sample"


def choose(config, model, model_kwargs: dict, streamer) -> Choice:
    """The strategy of this call after its config checks (ValueError / NotImplementedError naming the setting)."""
    contrastive.check_contrastive_args(config)  # before the choice: a bad penalty_alpha must not fall back to greedy
    name = strategy_name(config, model_kwargs)
    if getattr(model.config, "is_encoder_decoder", False):
        check_encoder_decoder_strategy(name)
    runs = name
    if name == "beam":
        beam.check_beam_config(config, streamer)
        if (config.num_beam_groups or 1) > 1:
            runs = "group_beam"
    elif name == "contrastive" and config.do_sample:  # transformers samples and ignores penalty_alpha
        runs = "sample"
    elif name == "dola":
        dola.check_beams(config)
        if not config.do_sample and contrastive.asks_for_contrastive(config):
            runs = "contrastive"  # where transformers 4.x ignores dola_layers
        else:
            dola.layers_and_head(config, model)
    elif name == "assisted":
        assisted.check_assisted(config, model, model_kwargs["assistant_model"])
    elif name == "prompt_lookup":
        prompt_lookup.check_prompt_lookup(config)
    return Choice(name, runs)


def expand_factor(name: str, config) -> int:
    """How many rows each prompt becomes: beams for the beam family, return sequences otherwise."""
    if name == "beam":
        return int(config.num_beams)
    return int(config.num_return_sequences or 1)


def load(runs: str):
    """The ``run`` function of :data:`RUNS` key ``runs``."""
    return RUNS[runs]
