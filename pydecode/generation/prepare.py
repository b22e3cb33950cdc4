"""Everything one generate() call builds before its strategy runs, one named step at a time:
config -> strategy choice -> checked prompt -> rows expanded -> logits pipeline pieces -> KV cache and model runner."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cache import KiviCache
from ..ops.backends import requested_backend
from ..sampling.params import RowParams
from . import strategies
from .config import ResolvedConfig, check_supported, resolve_config
from .context import DecodeContext
from .logits.extra_processors import make_watermark
from .logits.guidance import make_guidance
from .logits.pipeline import LogitsPipeline
from .logits.prefix_constraint import PrefixConstraint
from .model import seq2seq
from .model.caches import call_cache
from .model.compiled import compiled_forward
from .model.embeds import EmbeddedPrompt, embedded_prompt
from .model.no_cache import TokenHistory
from .model.runner import ModelRunner
from .stopping import StopConditions
from .validate import check_counts, check_inputs, check_lengths, check_model_kwargs, special_tokens


@dataclass
class Prompt:
    """The checked prompt rows. ``input_ids`` / ``attention_mask`` are the decoder's; ``encoder_inputs`` the
    encoder's ``(ids, mask)`` of an encoder-decoder model (else None); ``embedded`` is set for ``inputs_embeds``."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    embedded: EmbeddedPrompt | None = None
    encoder_inputs: tuple | None = None


def prepare(model, input_ids, attention_mask, generation_config, streamer, logits_processor, stopping_criteria,
            tokenizer, kwargs, compile_settings: dict | None = None) -> DecodeContext:
    """Resolve the config, choose the strategy (and, with ``compile_settings``, its compiled runner), check the
    prompt, expand the rows and build the shared pieces."""
    check_counts(kwargs.get)
    resolved = resolve_config(model, generation_config, kwargs)
    config, model_kwargs = resolved.config, dict(resolved.model_kwargs)
    check_call(model, config, model_kwargs)
    choice = strategies.choose(config, model, model_kwargs, streamer, compile_settings)
    if attention_mask is None:
        attention_mask = model_kwargs.pop("attention_mask", None)
    eos_ids, pad_id = special_tokens(config, model)
    prompt = checked_prompt(model, resolved, model_kwargs, input_ids, attention_mask, choice.name, eos_ids, pad_id)
    max_length = config.max_length = check_lengths(model, config, prompt.input_ids.shape[1],
                                                   resolved.has_default_max_length)
    batch = prompt.input_ids.shape[0]
    expand = strategies.expand_factor(choice.name, config)
    params = RowParams.build(resolved, batch, expand, prompt.input_ids.device)
    prompt = expanded(prompt, expand)
    if config.token_healing:
        prompt.input_ids = heal_prompt(model, prompt.input_ids, prompt.attention_mask, tokenizer,
                                       prompt.embedded is not None or prompt.encoder_inputs is not None)
    if streamer is not None:
        streamer.put(prompt.input_ids.cpu())
    eos_tensor = torch.tensor(eos_ids, device=prompt.input_ids.device) if eos_ids else None  # the one form kept
    backend = requested_backend(resolved.extra("backend"))  # PYDECODE_BACKEND read once per call
    pipeline = logits_pipeline(model, config, model_kwargs, params, prompt, choice.name, expand, eos_tensor,
                               logits_processor, backend)
    runner = model_runner(model, config, model_kwargs, prompt, choice.name, expand, max_length)
    return DecodeContext(
        model=model, config=config, params=params, pipeline=pipeline,
        stops=StopConditions(config, eos_tensor, tokenizer, stopping_criteria),
        runner=runner,
        input_ids=prompt.input_ids, attention_mask=prompt.attention_mask, batch=batch, expand=expand,
        max_length=max_length, eos_ids=eos_tensor, pad_id=pad_id, streamer=streamer, backend=backend,
        model_kwargs=model_kwargs, strategy=choice.name, runs=choice.runs, compiled=choice.compiled,
    )


def check_call(model, config, model_kwargs: dict) -> None:
    """What needs no prompt: the config's supported fields, the model's keyword arguments."""
    check_supported(config)
    check_model_kwargs(model, model_kwargs)
    if not _encoder_decoder(model) and "decoder_input_ids" in model_kwargs:
        raise ValueError("decoder_input_ids is only for encoder-decoder models; this model is decoder-only")


def checked_prompt(model, resolved: ResolvedConfig, model_kwargs: dict, input_ids, attention_mask, strategy: str,
                   eos_ids: list[int], pad_id: int | None) -> Prompt:
    """The prompt after its checks: token ids or ``inputs_embeds``; for an encoder-decoder model the decoder's
    start, the encoder's inputs kept aside."""
    config, encoder_decoder = resolved.config, _encoder_decoder(model)
    embedded = model_kwargs.pop("inputs_embeds", None)
    if embedded is not None:
        embedded = embedded_prompt(model, input_ids, attention_mask, embedded, config, resolved.has_default_max_length,
                                   strategy, encoder_decoder)
        config.use_cache = True  # as transformers: the embedded prompt is read by the first forward only
        return Prompt(embedded.input_ids, embedded.attention_mask, embedded=embedded)
    # transformers infers an attention mask from pad tokens for decoder-only models only
    input_ids, attention_mask = check_inputs(model, input_ids, attention_mask, pad_id, eos_ids, config,
                                             infer_mask=not encoder_decoder)
    if not encoder_decoder:
        return Prompt(input_ids, attention_mask)
    decoder_ids, decoder_mask = seq2seq.decoder_prompt(model, config, model_kwargs, input_ids.shape[0],
                                                       input_ids.device)
    return Prompt(decoder_ids, decoder_mask, encoder_inputs=(input_ids, attention_mask))


def expanded(prompt: Prompt, expand: int) -> Prompt:
    """Each prompt row repeated ``expand`` times (beams, or return sequences), next to each other."""
    if expand > 1:
        prompt.input_ids = prompt.input_ids.repeat_interleave(expand, dim=0)
        if prompt.attention_mask is not None:
            prompt.attention_mask = prompt.attention_mask.repeat_interleave(expand, dim=0)
    if prompt.embedded is not None:
        prompt.embedded.expand(expand)
    return prompt


def logits_pipeline(model, config, model_kwargs: dict, params: RowParams, prompt: Prompt, strategy: str,
                    expand: int, eos_ids, logits_processor, backend) -> LogitsPipeline:
    """The call's logits pipeline, with its optional pieces (guidance, watermark, prefix constraint) taken out of
    ``model_kwargs``."""
    encoder_decoder = prompt.encoder_inputs is not None
    guidance = make_guidance(model, config, model_kwargs, strategy, expand, encoder_decoder)
    watermark = make_watermark(config, model, strategy, prompt.input_ids.device)
    prefix_fn = model_kwargs.pop("prefix_allowed_tokens_fn", None)
    rows = prompt.input_ids.shape[0]
    constraint = PrefixConstraint(prefix_fn, rows, expand) if prefix_fn is not None else None
    encoder_ids = prompt.encoder_inputs[0].repeat_interleave(expand, dim=0) if encoder_decoder else None
    return LogitsPipeline(config=config, params=params, prompt_ids=prompt.input_ids,
                          attention_mask=prompt.attention_mask, eos_ids=eos_ids, logits_processor=logits_processor,
                          backend=backend, encoder_ids=encoder_ids, guidance=guidance, watermark=watermark,
                          constraint=constraint)


def model_runner(model, config, model_kwargs: dict, prompt: Prompt, strategy: str, expand: int, max_length: int):
    """The KV cache the call asks for and the runner that steps the model over it."""
    embedded, encoder_inputs = prompt.embedded, prompt.encoder_inputs
    rows, prompt_len = prompt.input_ids.shape
    extra = embedded.extra_positions if embedded is not None else 0  # embedded positions the history lacks
    encoder_length = seq2seq.encoder_length(encoder_inputs[0], model_kwargs) if encoder_inputs is not None else 0
    cache = call_cache(config, model_kwargs, model, rows, max_length + extra, encoder_inputs is not None,
                       encoder_length)
    check_without_cache(cache, strategy)
    chunk = check_prefill_chunk(config, strategy, cache, encoder_inputs is not None)
    device = prompt.input_ids.device
    if encoder_inputs is not None:
        runner = seq2seq.EncoderDecoderRunner(model, *encoder_inputs, prompt.attention_mask, expand, max_length, cache,
                                              model_kwargs)
    elif embedded is not None:  # the model sees the embedded positions, the history the tokens (if any)
        runner = ModelRunner(model, attention_mask=embedded.model_mask, batch=rows, prompt_len=prompt_len + extra,
                             max_length=max_length + extra, device=device, cache=cache, model_kwargs=model_kwargs,
                             expand=expand, prefill_chunk=chunk, prompt_embeds=embedded.embeds)
    else:
        runner = ModelRunner(model, attention_mask=prompt.attention_mask, batch=rows, prompt_len=prompt_len,
                             max_length=max_length, device=device, cache=cache, model_kwargs=model_kwargs,
                             expand=expand, prefill_chunk=chunk)
    runner.decode_forward = compiled_forward(model, config, runner.cache)
    return runner


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


def _encoder_decoder(model) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))
