"""Encoder-decoder models (T5, BART, Pegasus, Marian, ...): the same model step as :class:`ModelRunner`, over a
decoder that attends to encoder outputs computed once per call.

The strategies see the decoder side only: ``ctx.input_ids`` is the decoder prompt (``decoder_start_token_id`` or the
user's ``decoder_input_ids``), so ``max_length``, ``min_length``, the repetition penalty and the returned sequences
all count decoder tokens, as in transformers. The encoder runs once on the un-expanded batch; its outputs are
expanded for ``num_beams`` / ``num_return_sequences`` without recomputation. The decoder's first forward (which also
fills the cross-attention cache) runs on the un-expanded rows too, and its cache and outputs are then repeated: the
cross-attention keys and values are projected once per prompt, never again.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass

import torch
from transformers import DynamicCache, EncoderDecoderCache, StaticCache
from transformers.modeling_outputs import BaseModelOutput

from ..output import GenerateBeamOutput, Seq2SeqBeamOutput, Seq2SeqGenerateOutput
from .compat import USER_CACHE_KWARGS, cache_argument
from .compiled import mask_for_compiled_step
from .no_cache import TokenHistory
from .slot_mask import SlotMask

_MANAGED = ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask", "encoder_outputs",
            *USER_CACHE_KWARGS, "use_cache", "cache_position", "return_dict")
_NOT_FOR_ENCODER = ("decoder_", "cross_attn", "use_cache", *USER_CACHE_KWARGS, "cache_params")
# strategies whose loop only uses prefill / step / select_rows / cache.reorder_cache / step_candidates
SUPPORTED_STRATEGIES = ("sample", "beam", "contrastive", "assisted", "prompt_lookup")


def check_strategy(name: str) -> None:
    """Raise NotImplementedError for a strategy that does not run on encoder-decoder models yet."""
    if name not in SUPPORTED_STRATEGIES:
        raise NotImplementedError(f"pydecode.generate does not run the {name!r} strategy on encoder-decoder models yet "
                                  f"(supported: greedy, sampling, beam search, beam sampling, diverse beam search, "
                                  f"contrastive search, assisted decoding, prompt lookup)")


def decoder_prompt(model, config, model_kwargs: dict, batch: int, device):
    """The decoder prompt (batch, L) and its mask (or None), as transformers builds them.

    Takes ``decoder_input_ids`` / ``decoder_attention_mask`` out of ``model_kwargs``; without them the prompt is
    ``decoder_start_token_id`` (falling back to ``bos_token_id``). User ids that do not start with the start token
    get it prepended (with a 1 in their mask), as transformers does.
    """
    start = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.bos_token_id
    if start is None:
        raise ValueError("encoder-decoder generation needs a decoder start token: set decoder_start_token_id "
                         "(or bos_token_id) in the generation config or pass it to generate()")
    start = torch.as_tensor(start, dtype=torch.long, device=device).reshape(-1, 1)
    if start.shape[0] not in (1, batch):
        raise ValueError(f"decoder_start_token_id must be one id or one per prompt ({batch}), got {start.shape[0]}")
    start = start.expand(batch, 1)
    ids = model_kwargs.pop("decoder_input_ids", None)
    mask = model_kwargs.pop("decoder_attention_mask", None)
    if ids is None:
        return start.clone(), None
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[0] != batch or ids.is_floating_point():
        raise ValueError(f"decoder_input_ids must be an integer tensor of shape ({batch}, length)")
    ids = ids.to(device, torch.long)
    if mask is not None:
        if mask.shape != ids.shape:
            raise ValueError(f"decoder_attention_mask must have the shape of decoder_input_ids {tuple(ids.shape)}")
        mask = mask.to(device)
    if bool((ids[:, 0] != start[:, 0]).all()):
        ids = torch.cat([start, ids], dim=1)
        mask = torch.cat([mask.new_ones(batch, 1), mask], dim=1) if mask is not None else None
    return ids, mask


def encoder_length(encoder_ids, model_kwargs: dict) -> int:
    """How many positions the encoder's outputs have (the given ``encoder_outputs``', else the prompt's)."""
    given = model_kwargs.get("encoder_outputs")
    if given is not None:
        return int(given[0].shape[1])
    return int(encoder_ids.shape[1])


@dataclass
class DecoderStep:
    """One decoder forward, named as the strategies read a decoder-only output (``attentions`` and
    ``hidden_states`` are the decoder's; ``cross_attentions`` the decoder-to-encoder ones)."""

    logits: torch.Tensor
    attentions: tuple | None = None
    hidden_states: tuple | None = None
    cross_attentions: tuple | None = None
    past_key_values: object = None


class EncoderDecoderRunner(SlotMask):
    """Runs an encoder-decoder model: the encoder once, then the decoder over an ``EncoderDecoderCache``.

    Same interface as :class:`~pydecode.generation.model.runner.ModelRunner` for the strategies that use ``prefill``,
    ``step``, ``select_rows`` and ``cache.reorder_cache`` (greedy, sampling, the beam family), and ``step_candidates`` /
    ``keep_candidate`` (contrastive search).

    Parameters
    ----------
    encoder_ids : (B, Le) encoder input ids, un-expanded
    encoder_mask : (B, Le) or None, the encoder attention mask (also masks cross-attention)
    decoder_mask : (B * expand, Ld) or None, the user's decoder attention mask (already expanded)
    expand : rows per prompt (``num_beams`` or ``num_return_sequences``)
    max_length : the decoder length limit (sizes the decoder mask buffer)
    cache : a transformers ``EncoderDecoderCache``, or None for a dynamic one
    model_kwargs : extra forward arguments (``output_attentions``, ``output_hidden_states``, ``encoder_outputs``...)
    """

    def __init__(self, model, encoder_ids, encoder_mask, decoder_mask, expand: int, max_length: int, cache=None,
                 model_kwargs=None):
        self.model = model
        self.expand = expand
        self.encoder_inputs = (encoder_ids, encoder_mask)  # what an assistant's own encoder reads
        self.positional = None  # per-position inputs are the encoder's here
        kwargs = dict(model_kwargs or {})
        encoder_outputs = kwargs.get("encoder_outputs")
        self.model_kwargs = {k: v for k, v in kwargs.items() if k not in _MANAGED}
        if encoder_outputs is None:
            encoder_outputs = self._encode(encoder_ids, encoder_mask)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        self.encoder_outputs = encoder_outputs  # un-expanded: what return_dict_in_generate reports
        # the first decoder forward runs on the un-expanded rows; later ones on every row
        self._prefill_states, self._prefill_mask = encoder_outputs.last_hidden_state, encoder_mask
        self.encoder_states = self._repeat(encoder_outputs.last_hidden_state)
        self.encoder_mask = self._repeat(encoder_mask)
        if cache is None:
            config = model.config.get_text_config(decoder=True)
            cache = EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
        elif not isinstance(cache, (EncoderDecoderCache, TokenHistory)):
            cache = EncoderDecoderCache(cache, DynamicCache(config=model.config.get_text_config(decoder=True)))
        self.cache = cache
        self.length = 0
        self.mask = None
        if decoder_mask is not None:
            self.mask = torch.ones(decoder_mask.shape[0], max(max_length, decoder_mask.shape[1]),
                                   dtype=decoder_mask.dtype, device=decoder_mask.device)
            self.mask[:, : decoder_mask.shape[1]] = decoder_mask
        self.decode_forward = None  # the model's compiled call for decoding steps, when transformers would use one
        self.record_cross = bool(self.model_kwargs.get("output_attentions"))
        self.cross_attentions: list = []

    def _encode(self, encoder_ids, encoder_mask) -> BaseModelOutput:
        """The encoder's outputs for the un-expanded batch (with attentions / hidden states when asked for)."""
        encoder = self.model.get_encoder()
        params = inspect.signature(encoder.forward).parameters
        wildcard = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs = {k: v for k, v in self.model_kwargs.items()
                  if not k.startswith(_NOT_FOR_ENCODER) and (wildcard or k in params)}
        kwargs["output_attentions"] = bool(self.model_kwargs.get("output_attentions", False))
        kwargs["output_hidden_states"] = bool(self.model_kwargs.get("output_hidden_states", False))
        if encoder_mask is not None:
            kwargs["attention_mask"] = encoder_mask
        return encoder(input_ids=encoder_ids, return_dict=True, **kwargs)

    def _repeat(self, tensor):
        if tensor is None or self.expand == 1:
            return tensor
        return tensor.repeat_interleave(self.expand, dim=0)

    def _forward(self, decoder_ids, states, encoder_mask, decoder_mask, model_call=None,
                 **forward_kwargs) -> DecoderStep:
        kwargs = dict(self.model_kwargs, **forward_kwargs)
        if encoder_mask is not None:
            kwargs["attention_mask"] = encoder_mask
        if decoder_mask is not None:
            kwargs["decoder_attention_mask"] = decoder_mask
        if isinstance(self.cache, TokenHistory):  # use_cache=False: the decoder runs its whole sequence so far
            decoder_ids = self.cache.extend(decoder_ids)
        else:
            kwargs[cache_argument(self.model)] = self.cache
        out = (model_call or self.model)(decoder_input_ids=decoder_ids,
                                         encoder_outputs=BaseModelOutput(last_hidden_state=states),
                                         use_cache=not isinstance(self.cache, TokenHistory), return_dict=True, **kwargs)
        step = DecoderStep(out.logits, out.decoder_attentions, out.decoder_hidden_states, out.cross_attentions,
                           self.cache)
        if self.record_cross:
            self.cross_attentions.append(step.cross_attentions)
        return step

    def prefill(self, input_ids: torch.Tensor, **forward_kwargs) -> DecoderStep:
        """Run the decoder prompt (B * expand, L0); returns the output at every prompt position.

        The rows of one prompt are copies, so the forward runs on the first row of each prompt and its cache (self-
        and cross-attention) and outputs are repeated ``expand`` times.
        """
        self.length = input_ids.shape[1]
        cached = self.cache.get_seq_length()
        if cached:  # a cache the caller filled: feed only the decoder positions it does not hold yet, on every row
            if cached >= self.length:
                raise ValueError(f"the cache passed to generate already holds {cached} decoder positions, the whole "
                                 f"decoder prompt of {self.length}: pass at least one position it does not hold")
            mask = self.mask[:, : self.length] if self.mask is not None else None
            self._prefill_states = self._prefill_mask = None
            return self._forward(input_ids[:, cached:], self.encoder_states, self.encoder_mask, mask, **forward_kwargs)
        if self.expand > 1 and not _repeatable(self.cache):  # a static cache is sized for every row
            self._prefill_states = self._prefill_mask = None
            mask = self.mask[:, : self.length] if self.mask is not None else None
            return self._forward(input_ids, self.encoder_states, self.encoder_mask, mask, **forward_kwargs)
        first = slice(None, None, self.expand)
        mask = self.mask[first, : self.length] if self.mask is not None else None
        out = self._forward(input_ids[first], self._prefill_states, self._prefill_mask, mask, **forward_kwargs)
        self._prefill_states = self._prefill_mask = None
        if self.expand == 1:
            return out
        self.cache.batch_repeat_interleave(self.expand)
        if self.record_cross:
            self.cross_attentions[-1] = _repeat_all(self.cross_attentions[-1], self.expand)
        return DecoderStep(self._repeat(out.logits), _repeat_all(out.attentions, self.expand),
                           _repeat_all(out.hidden_states, self.expand), _repeat_all(out.cross_attentions, self.expand),
                           self.cache)

    def step(self, tokens: torch.Tensor, **forward_kwargs) -> DecoderStep:
        """Feed each row's new token (rows,) and return the output for the next position."""
        self.length += 1
        mask = self.mask[:, : self.length] if self.mask is not None else None
        if self.decode_forward is not None:  # the compiled call takes the decoder mask 4D, as transformers gives it
            mask = mask_for_compiled_step(self.model, self.cache, mask, None, tokens.shape[0], 1, tokens.device)
        return self._forward(tokens[:, None], self.encoder_states, self.encoder_mask, mask, **forward_kwargs,
                             model_call=self.decode_forward)

    def step_candidates(self, tokens: torch.Tensor, **forward_kwargs):
        """Feed K candidate next tokens per row (B, K) in one (B * K)-row forward, keeping none of them yet.

        As transformers does for encoder-decoder models: the self- and cross-attention caches, the encoder states and
        masks are repeated K times along the batch. Follow with :meth:`keep_candidate`.
        """
        from .runner import CandidateStep

        batch, k = tokens.shape
        past = self.length
        self.cache.batch_repeat_interleave(k)
        states = self.encoder_states.repeat_interleave(k, dim=0)
        encoder_mask = self.encoder_mask.repeat_interleave(k, dim=0) if self.encoder_mask is not None else None
        mask = self.mask[:, : past + 1].repeat_interleave(k, dim=0) if self.mask is not None else None
        record, self.record_cross = self.record_cross, False
        try:
            out = self._forward(tokens.reshape(-1, 1), states, encoder_mask, mask, **forward_kwargs)
        finally:
            self.record_cross = record
        return CandidateStep(out, False, batch, k, past)

    def keep_candidate(self, step, index: torch.Tensor) -> None:
        """Keep candidate ``index[b]`` (B,) of each row in the caches, as if it had been fed by :meth:`step`."""
        rows = torch.arange(step.batch, device=index.device)
        self.cache.batch_select_indices(rows * step.k + index)
        if self.record_cross:
            chosen = rows * step.k + index
            self.cross_attentions.append(tuple(a[chosen] for a in step.outputs.cross_attentions))
        self.length += 1

    def set_prompt_mask(self, mask: torch.Tensor) -> None:
        """Use ``mask`` (rows, L) as the decoder mask of the prompt the next :meth:`prefill` feeds."""
        self.mask = None
        self._reserve_mask(mask.shape[1])
        self.mask[:, : mask.shape[1]] = mask

    def forward_block(self, tokens: torch.Tensor, valid: torch.Tensor, **forward_kwargs) -> DecoderStep:
        """Feed T decoder tokens per row (B, T) in one forward; ``valid`` (B, T) bool marks the real ones (the others
        are masked holes). Returns the output of all T positions; drop rejected tokens with :meth:`keep_last`."""
        t = tokens.shape[1]
        self._reserve_mask(self.length + t)
        self.mask[:, self.length: self.length + t] = valid
        self.length += t
        return self._forward(tokens, self.encoder_states, self.encoder_mask, self.mask[:, : self.length],
                             **forward_kwargs)

    def _mask_rows(self):
        return self.encoder_states.shape[0], self.encoder_states.device

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (a 1-D index tensor): the caches, encoder states and masks shrink with it."""
        self.cache.batch_select_indices(rows)
        self.encoder_states = self.encoder_states[rows]
        if self.encoder_mask is not None:
            self.encoder_mask = self.encoder_mask[rows]
        if self.mask is not None:
            self.mask = self.mask[rows]

    def finish_output(self, result, config):
        """The strategy's result as transformers' encoder-decoder output (a LongTensor passes through)."""
        if isinstance(result, torch.Tensor):
            return result
        attentions, hidden = bool(config.output_attentions), bool(config.output_hidden_states)
        fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
        decoder_attentions = fields.pop("attentions", None)
        fields.update(
            decoder_attentions=decoder_attentions,
            decoder_hidden_states=fields.pop("hidden_states", None),
            cross_attentions=(tuple(self.cross_attentions[: len(decoder_attentions)])
                              if decoder_attentions is not None else None),
            encoder_attentions=self.encoder_outputs.attentions if attentions else None,
            encoder_hidden_states=self.encoder_outputs.hidden_states if hidden else None,
        )
        cls = Seq2SeqBeamOutput if isinstance(result, GenerateBeamOutput) else Seq2SeqGenerateOutput
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})


def _repeatable(cache) -> bool:
    """Whether ``cache`` can be filled for one row per prompt and then repeated (not so a static cache)."""
    caches = (cache.self_attention_cache, cache.cross_attention_cache) if isinstance(cache, EncoderDecoderCache) \
        else (cache,)
    return not any(isinstance(c, StaticCache) for c in caches)


def _repeat_all(tensors, expand: int):
    """``repeat_interleave`` each tensor of a tuple along the batch (None passes through)."""
    if tensors is None:
        return None
    return tuple(t.repeat_interleave(expand, dim=0) for t in tensors)
