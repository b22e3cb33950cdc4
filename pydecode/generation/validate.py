"""Checks and defaults applied once per generate() call, before any model step (host reads are fine here)."""
from __future__ import annotations

import inspect

import torch
from transformers.utils.generic import TransformersKwargs

from .model.compat import USER_CACHE_KWARGS

# generate() keywords pydecode itself consumes (beside its named parameters and the config's fields)
OWN_KWARGS = ("assistant_model", "inputs_embeds", "negative_prompt_ids", "negative_prompt_attention_mask",
              "prefix_allowed_tokens_fn", "attention_mask", "decoder_input_ids", "decoder_attention_mask",
              "use_cache", *USER_CACHE_KWARGS)


def check_model_kwargs(model, model_kwargs: dict) -> None:
    """Raise for keywords that neither pydecode nor the model's forward takes (typos included), as transformers
    does, and for transformers features that take keywords pydecode does not run."""
    if model_kwargs.get("assistant_tokenizer") is not None:
        raise NotImplementedError("assisted decoding with an assistant of another tokenizer (assistant_tokenizer) is "
                                  "not supported: use an assistant_model sharing the main model's vocabulary")
    if model_kwargs.get("custom_generate") is not None:
        raise NotImplementedError("custom_generate (a decoding loop from the Hub) is not supported by pydecode")
    if model_kwargs.get("synced_gpus"):
        raise NotImplementedError("synced_gpus (generation kept in step across processes) is not supported")
    accepted = set(OWN_KWARGS) | set(TransformersKwargs.__optional_keys__) | _parameters(model.forward)
    if getattr(model.config, "is_encoder_decoder", False):
        encoder, decoder = model.get_encoder(), getattr(model, "get_decoder", lambda: None)()
        accepted |= _parameters(encoder.forward) if encoder is not None else set()
        accepted |= {f"decoder_{name}" for name in _parameters(decoder.forward)} if decoder is not None else set()
    unknown = [name for name, value in model_kwargs.items()
               if value is not None and name not in accepted | {"synced_gpus"}]
    if unknown:
        raise ValueError(f"generate got keyword arguments that neither pydecode nor the model uses: {unknown} "
                         "(a typo in a generation parameter shows up here too)")


def _parameters(function) -> set[str]:
    return set(inspect.signature(function).parameters)


def _vocab_size(model) -> int | None:
    embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if embeddings is not None and hasattr(embeddings, "weight"):
        return int(embeddings.weight.shape[0])
    return getattr(model.config.get_text_config(), "vocab_size", None)


def special_tokens(config, model) -> tuple[list[int], int | None]:
    """``(eos ids, pad id)`` as transformers resolves them: pad defaults to the first eos id. A negative eos id
    (transformers' ``-1`` idiom) never matches a token: it is dropped, and generation runs to its length limit."""
    eos = config.eos_token_id
    if isinstance(eos, torch.Tensor):
        eos = eos.tolist()
    given = [] if eos is None else ([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])
    vocab = _vocab_size(model)
    for e in given:
        if vocab is not None and e >= vocab:
            raise ValueError(f"eos_token_id must lie in [0, {vocab}) (or be negative: never stop), got {e}")
    pad = config.pad_token_id
    if isinstance(pad, torch.Tensor):
        pad = int(pad)
    if pad is None and given:
        pad = given[0]
    return [e for e in given if e >= 0], pad


def check_inputs(model, input_ids, attention_mask, pad_id, eos_ids, config, infer_mask: bool = True):
    """Validate the prompt; build its attention mask as transformers does when none is given (``infer_mask``
    False: leave it None, as transformers does for an encoder's input)."""
    if input_ids is None:
        bos = config.bos_token_id
        if bos is None:
            raise ValueError("input_ids is required when the model has no bos_token_id")
        input_ids = torch.full((1, 1), int(bos), dtype=torch.long, device=model.device)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError("input_ids must be an integer tensor of shape (batch, length)")
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
    if input_ids.dim() != 2 or input_ids.numel() == 0:
        raise ValueError(f"input_ids must be a non-empty tensor of shape (batch, length), got {tuple(input_ids.shape)}")
    input_ids = input_ids.to(model.device, torch.long)
    vocab = _vocab_size(model)
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or (vocab is not None and high >= vocab):
        raise ValueError(f"input_ids must hold token ids in [0, {vocab}), got values in [{low}, {high}]")
    if attention_mask is None and infer_mask:
        pad_in_input = pad_id is not None and bool((input_ids == pad_id).any())
        if pad_in_input and pad_id not in eos_ids:
            attention_mask = (input_ids != pad_id).long()
    elif attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                             f"got {tuple(attention_mask.shape)}")
        attention_mask = attention_mask.to(model.device)
    return input_ids, attention_mask


# the integer settings and their lowest value
COUNTS = {"max_new_tokens": 1, "min_new_tokens": 0, "num_beams": 1, "num_return_sequences": 1,
          "no_repeat_ngram_size": 0, "top_logprobs": 0}


def check_counts(value_of) -> None:
    """Check every integer setting ``value_of(name)`` gives (None: not set); run on the keywords before
    transformers merges them too, whose own check compares them with ints and fails on a string unnamed."""
    for name, low in COUNTS.items():
        value = value_of(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_lengths(model, config, prompt_len: int, has_default_max_length: bool) -> int:
    """The total length to stop at, with transformers' rules for max_new_tokens / max_length defaults."""
    check_counts(lambda name: getattr(config, name, None))
    vocab = getattr(model.config.get_text_config(), "vocab_size", None)
    if vocab and (getattr(config, "top_logprobs", 0) or 0) > vocab:
        raise ValueError(f"top_logprobs must be an integer in [0, {vocab}] (the vocabulary's size), "
                         f"got {config.top_logprobs}")
    max_time = config.max_time
    if max_time is not None and (isinstance(max_time, bool) or not isinstance(max_time, (int, float))
                                 or not max_time > 0):
        raise ValueError(f"max_time must be a number of seconds > 0, got {max_time!r}")
    if config.max_new_tokens is not None:
        max_length = config.max_new_tokens + prompt_len
    elif has_default_max_length:
        max_length = (config.max_length or 20) + prompt_len
        limit = getattr(model.config, "max_position_embeddings", None)
        max_length = min(max_length, limit) if limit else max_length
    else:
        max_length = config.max_length
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= prompt_len:
        raise ValueError(f"max_length must be an integer > the prompt length ({prompt_len}), got {max_length!r}: "
                         "raise max_length or use max_new_tokens >= 1")
    return max_length
