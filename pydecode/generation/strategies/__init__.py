"""Which strategy runs a generate() call, decided here once, before anything is built.

:func:`choose` names the strategy transformers would pick for the config, runs that strategy's own config checks,
and resolves the fallbacks (diverse beam search for beam search with ``num_beam_groups > 1``, sampling for
contrastive search with ``do_sample=True``, contrastive search for DoLa where transformers 4.x ignores
``dola_layers``), and, for ``generate(..., compile=...)``, whether a compiled runner decodes the call (one of
:data:`COMPILED_RUNS`, each ``run(ctx, settings)``) or which setting it does not run. Each strategy module has
``run(ctx: DecodeContext)``; strategies never import one another.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..model.seq2seq import check_strategy as check_encoder_decoder_strategy
from ..output import requested_logprobs
from . import compiled_decode, contrastive, dola, sample
from .beam import beam, compiled, group_beam
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
COMPILED_RUNS = {
    "sample": compiled_decode.run,  # greedy and multinomial sampling, each step one compiled graph
    "beam": compiled.run,  # beam search and beam sampling, each step one compiled graph
}


@dataclass(frozen=True)
class Choice:
    """``name``: the strategy the config asks for (what capability checks and messages name; ``"beam"`` covers the
    beam family); ``runs``: the key of :data:`RUNS` that decodes the call; ``compiled``: with ``compile=``, the key
    of :data:`COMPILED_RUNS` that decodes it instead (None: eager)."""

    name: str
    runs: str
    compiled: str | None = None


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


def choose(config, model, model_kwargs: dict, streamer, compile_settings: dict | None = None) -> Choice:
    """The strategy of this call after its config checks (ValueError / NotImplementedError naming the setting);
    with ``compile_settings`` (``generate``'s checked ``compile=``), the compiled runner too."""
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
    if compile_settings is None:
        return Choice(name, runs)
    return Choice(name, runs, compiled_runner(runs, config, model))


def compiled_runner(runs: str, config, model) -> str:
    """The key of :data:`COMPILED_RUNS` for a call that :data:`RUNS` key ``runs`` decodes eagerly; raises
    ``NotImplementedError`` naming the strategy or setting no compiled runner takes (those the config shows: the
    pieces the call builds are checked when it runs)."""
    if runs == "group_beam":
        raise NotImplementedError(f"compile=True does not run diverse beam search (num_beam_groups="
                                  f"{config.num_beam_groups} > 1); call generate without compile for it")
    if runs not in COMPILED_RUNS:
        raise NotImplementedError(f"compile=True runs greedy decoding, sampling, beam search and beam sampling, not "
                                  f"the {runs!r} strategy; call generate without compile for it")
    if getattr(model.config, "is_encoder_decoder", False):
        raise NotImplementedError("compile=True runs decoder-only models; call generate without compile for "
                                  "encoder-decoder models")
    kivi = config.cache_implementation == "kivi"  # greedy / sampling run it on a static KIVI cache
    if kivi and runs != "sample":
        raise NotImplementedError("compile=True runs the KIVI cache for greedy decoding and sampling only (its static "
                                  "variant has no beam reorder); call generate without compile for it")
    unsupported = {
        "cache_implementation": config.cache_implementation is not None and not kivi,
        "use_cache=False": config.use_cache is False,
        "max_time": runs == "beam" and config.max_time is not None,
        "return_dict_in_generate": runs == "sample" and bool(config.return_dict_in_generate),
        "output_attentions or output_hidden_states": bool(config.return_dict_in_generate)
        and bool(config.output_attentions or config.output_hidden_states),
        "output_logprobs or top_logprobs": requested_logprobs(config)[1],
    }
    named = [name for name, used in unsupported.items() if used]
    if named:
        raise NotImplementedError(f"compile=True does not support {', '.join(named)} yet; call generate without "
                                  "compile for it")
    return runs


def expand_factor(name: str, config) -> int:
    """How many rows each prompt becomes: beams for the beam family, return sequences otherwise."""
    if name == "beam":
        return int(config.num_beams)
    return int(config.num_return_sequences or 1)


def load(runs: str):
    """The ``run`` function of :data:`RUNS` key ``runs``."""
    return RUNS[runs]


def load_compiled(compiled: str):
    """The ``run(ctx, settings)`` function of :data:`COMPILED_RUNS` key ``compiled``."""
    return COMPILED_RUNS[compiled]
