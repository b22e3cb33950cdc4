"""``pydecode.generate``: transformers' ``model.generate`` signature and semantics, pydecode's kernels."""
from __future__ import annotations

import contextlib
import functools

import torch

from ..cache import KiviCache, activate
from . import strategies
from .compile_options import check_compile
from .model.seq2seq import EncoderDecoderRunner
from .prepare import prepare


@torch.no_grad()
def generate(model, input_ids=None, attention_mask=None, generation_config=None, streamer=None, *, inputs=None,
             logits_processor=None, stopping_criteria=None, tokenizer=None, **kwargs):
    """Generate token ids with ``model``, as ``model.generate`` does, on pydecode's fastest backend.

    Takes the same arguments as transformers' ``generate`` (a ``GenerationConfig`` and/or its fields as keyword
    arguments; ``attention_mask`` for left-padded batches; ``streamer``; ``stop_strings`` with ``tokenizer``;
    ``logits_processor`` / ``stopping_criteria`` lists; ``prefix_allowed_tokens_fn``; ``inputs_embeds``;
    ``negative_prompt_ids``; ``assistant_model``) plus pydecode's: ``frequency_penalty``,
    ``presence_penalty``, ``seed``, ``output_logprobs``, ``top_logprobs``, ``backend`` and ``compile`` (True or a
    dict of settings: each decoding step of greedy decoding, sampling and the beam family runs as one compiled graph,
    see :mod:`~pydecode.generation.strategies.compiled_decode`). Every sampling parameter
    and penalty may also be a tensor of shape (batch,), one value per prompt. Returns the sequences (B * n, L) as a
    LongTensor, or a :class:`~pydecode.generation.output.GenerateOutput` with ``return_dict_in_generate=True``.
    Encoder-decoder models (T5, BART, ...) take ``decoder_input_ids`` / ``decoder_start_token_id`` too, return
    decoder ids, and a :class:`~pydecode.generation.output.Seq2SeqGenerateOutput` (or ``Seq2SeqBeamOutput``).
    """
    compile_settings = check_compile(kwargs.pop("compile", False))
    ctx = prepare(model, input_ids if input_ids is not None else inputs, attention_mask, generation_config, streamer,
                  logits_processor, stopping_criteria, tokenizer, kwargs, compile_settings)
    with _attention_for(ctx.runner.cache, model):
        if ctx.compiled is not None:
            return strategies.load_compiled(ctx.compiled)(ctx, compile_settings)
        result = strategies.load(ctx.runs)(ctx)
    if isinstance(ctx.runner, EncoderDecoderRunner):
        return ctx.runner.finish_output(result, ctx.config)
    return result


def _attention_for(cache, model):
    """A KIVI cache needs the model's attention switched to the packed-cache kernel for the call."""
    return activate(model) if isinstance(cache, KiviCache) else contextlib.nullcontext()


def patch(model):
    """Make ``model.generate`` route through :func:`generate` (undo with :func:`unpatch`). Returns the model."""
    if "generate" not in vars(model):
        model.generate = functools.partial(generate, model)
    return model


def unpatch(model):
    """Restore the model's own ``generate``. Returns the model."""
    vars(model).pop("generate", None)
    return model
