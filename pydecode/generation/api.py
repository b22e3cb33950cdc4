"""``pydecode.generate``: transformers' ``model.generate`` signature and semantics, pydecode's kernels."""
from __future__ import annotations

import contextlib
import functools

import torch

from ..cache import KiviCache, activate
from ..sampling.params import RowParams
from . import compiled_decode, seq2seq, strategies
from .caches import call_cache
from .compile_options import check_compile
from .compiled import compiled_forward
from .config import check_supported, resolve_config
from .context import DecodeContext
from .embeds import embedded_prompt
from .contrastive import check_contrastive_args
from .extra_processors import make_watermark
from .guidance import make_guidance
from .prefix_constraint import PrefixConstraint
from .logits import LogitsPipeline
from .no_cache import TokenHistory
from .runner import ModelRunner
from .seq2seq import EncoderDecoderRunner
from .stopping import StopConditions
from .validate import check_inputs, check_lengths, check_model_kwargs, special_tokens


@torch.no_grad()
def generate(model, input_ids=None, attention_mask=None, generation_config=None, streamer=None, *, inputs=None,
             logits_processor=None, stopping_criteria=None, tokenizer=None, **kwargs):
    """Generate token ids with ``model``, as ``model.generate`` does, on pydecode's fastest backend.

    Takes the same arguments as transformers' ``generate`` (a ``GenerationConfig`` and/or its fields as keyword
    arguments; ``attention_mask`` for left-padded batches; ``streamer``; ``stop_strings`` with ``tokenizer``;
    ``logits_processor`` / ``stopping_criteria`` lists; ``prefix_allowed_tokens_fn``; ``inputs_embeds``;
    ``negative_prompt_ids``; ``assistant_model``) plus pydecode's: ``frequency_penalty``,
    ``presence_penalty``, ``seed``, ``output_logprobs``, ``top_logprobs``, ``backend`` and ``compile`` (True or a
    dict of settings: each decoding step of greedy decoding / sampling runs as one compiled graph, see
    :mod:`~pydecode.generation.compiled_decode`). Every sampling parameter
    and penalty may also be a tensor of shape (batch,), one value per prompt. Returns the sequences (B * n, L) as a
    LongTensor, or a :class:`~pydecode.generation.output.GenerateOutput` with ``return_dict_in_generate=True``.
    Encoder-decoder models (T5, BART, ...) take ``decoder_input_ids`` / ``decoder_start_token_id`` too, return
    decoder ids, and a :class:`~pydecode.generation.output.Seq2SeqGenerateOutput` (or ``Seq2SeqBeamOutput``).
    """
    compile_settings = check_compile(kwargs.pop("compile", False))
    ctx = prepare(model, input_ids if input_ids is not None else inputs, attention_mask, generation_config, streamer,
                  logits_processor, stopping_criteria, tokenizer, kwargs)
    if compile_settings is not None:
        return compiled_decode.run(ctx, compile_settings)
    with _attention_for(ctx.runner.cache, model):
        result = strategies.load(ctx.strategy)(ctx)
    if isinstance(ctx.runner, EncoderDecoderRunner):
        return ctx.runner.finish_output(result, ctx.config)
    return result


def prepare(model, input_ids, attention_mask, generation_config, streamer, logits_processor, stopping_criteria,
            tokenizer, kwargs) -> DecodeContext:
    """Resolve the config, check the inputs, expand the rows and build the shared pieces for the strategy."""
    resolved = resolve_config(model, generation_config, kwargs)
    config = resolved.config
    check_supported(config)
    model_kwargs = dict(resolved.model_kwargs)
    check_model_kwargs(model, model_kwargs)
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    if not encoder_decoder and "decoder_input_ids" in model_kwargs:
        raise ValueError("decoder_input_ids is only for encoder-decoder models; this model is decoder-only")
    check_contrastive_args(config)  # before the mode is picked: a bad penalty_alpha must not fall back to greedy
    name = strategies.strategy_name(config, model_kwargs)
    if encoder_decoder:
        seq2seq.check_strategy(name)
    if attention_mask is None:
        attention_mask = model_kwargs.pop("attention_mask", None)
    eos_ids, pad_id = special_tokens(config, model)
    embedded = model_kwargs.pop("inputs_embeds", None)
    if embedded is not None:
        embedded = embedded_prompt(model, input_ids, attention_mask, embedded, config, resolved.has_default_max_length,
                                   name, encoder_decoder)
        input_ids, attention_mask = embedded.input_ids, embedded.attention_mask
        config.use_cache = True  # as transformers: the embedded prompt is read by the first forward only
    else:  # transformers infers an attention mask from pad tokens for decoder-only models only
        input_ids, attention_mask = check_inputs(model, input_ids, attention_mask, pad_id, eos_ids, config,
                                                 infer_mask=not encoder_decoder)
    if encoder_decoder:  # from here on input_ids / attention_mask are the decoder's; the runner keeps the encoder's
        encoder_inputs = (input_ids, attention_mask)
        input_ids, attention_mask = seq2seq.decoder_prompt(model, config, model_kwargs, input_ids.shape[0],
                                                           input_ids.device)
    max_length = config.max_length = check_lengths(model, config, input_ids.shape[1], resolved.has_default_max_length)

    batch = input_ids.shape[0]
    expand = strategies.expand_factor(name, config)
    device = input_ids.device
    params = RowParams.build(resolved, batch, expand, device)
    if expand > 1:
        input_ids = input_ids.repeat_interleave(expand, dim=0)
        attention_mask = attention_mask.repeat_interleave(expand, dim=0) if attention_mask is not None else None
    if embedded is not None:
        embedded.expand(expand)
    if config.token_healing:
        input_ids = heal_prompt(model, input_ids, attention_mask, tokenizer, embedded is not None or encoder_decoder)
    if streamer is not None:
        streamer.put(input_ids.cpu())
    guidance = make_guidance(model, config, model_kwargs, name, expand, encoder_decoder)
    watermark = make_watermark(config, model, name, device)
    prefix_fn = model_kwargs.pop("prefix_allowed_tokens_fn", None)
    constraint = PrefixConstraint(prefix_fn, batch * expand, expand) if prefix_fn is not None else None
    encoder_ids = encoder_inputs[0].repeat_interleave(expand, dim=0) if encoder_decoder else None
    backend = resolved.extra("backend")
    eos_tensor = torch.tensor(eos_ids, device=device) if eos_ids else None
    rows, prompt_len = input_ids.shape
    extra = embedded.extra_positions if embedded is not None else 0  # embedded positions the history lacks
    cache = call_cache(config, model_kwargs, model, rows, max_length + extra, encoder_decoder,
                       seq2seq.encoder_length(encoder_inputs[0], model_kwargs) if encoder_decoder else 0)
    check_without_cache(cache, name)
    chunk = check_prefill_chunk(config, name, cache, encoder_decoder)
    if encoder_decoder:
        runner = seq2seq.EncoderDecoderRunner(model, *encoder_inputs, attention_mask, expand, max_length, cache,
                                              model_kwargs)
    elif embedded is not None:  # the model sees the embedded positions, the history the tokens (if any)
        runner = ModelRunner(model, embedded.model_mask, rows, prompt_len + extra, max_length + extra, device, cache,
                             model_kwargs, expand, chunk, embedded.embeds)
    else:
        runner = ModelRunner(model, attention_mask, rows, prompt_len, max_length, device, cache, model_kwargs,
                             expand, chunk)
    runner.decode_forward = compiled_forward(model, config, runner.cache)
    ctx = DecodeContext(
        model=model, config=config, params=params,
        pipeline=LogitsPipeline(config, params, input_ids, attention_mask, eos_tensor, logits_processor, backend,
                                encoder_ids, guidance, watermark, constraint),
        stops=StopConditions(config, eos_tensor, tokenizer, stopping_criteria),
        runner=runner,
        input_ids=input_ids, attention_mask=attention_mask, batch=batch, expand=expand, max_length=max_length,
        eos_ids=eos_ids, pad_id=pad_id, streamer=streamer, backend=backend, tokenizer=tokenizer,
        model_kwargs=model_kwargs, strategy=name,
    )
    return ctx


def heal_prompt(model, input_ids, attention_mask, tokenizer, unsupported: bool):
    """``token_healing``: each prompt's last token replaced by the likeliest token that extends its text, by
    transformers' own ``heal_tokens`` (as its generate does it, after the rows are expanded)."""
    if unsupported:
        raise NotImplementedError("token_healing is supported for decoder-only models given input_ids")
    if tokenizer is None:
        raise ValueError("token_healing needs the model's tokenizer: pass tokenizer= to generate")
    healed = model.heal_tokens(input_ids, tokenizer)
    if attention_mask is not None and healed.shape != attention_mask.shape:
        raise ValueError(f"token_healing re-tokenized the prompts to shape {tuple(healed.shape)}, which no longer "
                         f"matches their attention_mask {tuple(attention_mask.shape)}")
    return healed


def check_without_cache(cache, strategy: str) -> None:
    """``use_cache=False`` runs greedy decoding, sampling, the beam family and DoLa."""
    if isinstance(cache, TokenHistory) and strategy not in ("sample", "beam", "dola"):
        raise NotImplementedError("use_cache=False is supported with greedy decoding, sampling, the beam family and "
                                  f"DoLa, not with the {strategy!r} strategy")


def check_prefill_chunk(config, strategy: str, cache, encoder_decoder: bool) -> int | None:
    """``prefill_chunk_size`` after checks: an int >= 1, for greedy decoding, sampling and the beam family on a
    decoder-only model with a full-precision cache; None when unset."""
    size = config.prefill_chunk_size
    if size is None:
        return None
    if isinstance(cache, TokenHistory):
        raise ValueError("prefill_chunk_size needs a KV cache: it cannot be used with use_cache=False")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"prefill_chunk_size must be an int >= 1, got {size!r}")
    if encoder_decoder or strategy not in ("sample", "beam") or isinstance(cache, KiviCache):
        raise NotImplementedError("prefill_chunk_size is supported with greedy decoding, sampling and the beam family "
                                  "on decoder-only models with a full-precision KV cache")
    return size


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
