"""DoLa: decoding by contrasting layers (Chuang et al. 2023, arXiv 2309.03883), with transformers 4.x semantics.

Per step:

1. one forward with every layer's hidden state; the LM head on the candidate premature layers' last positions
2. the premature layer: the candidate whose distribution is furthest, by Jensen-Shannon divergence averaged over the
   vocabulary and then over the batch, from the final layer's (a single candidate is taken as is)
3. adaptive plausibility: tokens whose final-layer log-probability is below ``max + log(0.1)`` get -inf (and the
   premature layer's -1e-3); the next-token logits are ``log p_final - log p_premature``
4. the logits pipeline of :mod:`.sample` (repetition penalty etc.), then greedy or the seeded sampler

Candidate layers, for a model of N layers (layer 0 is the embedding output): "low" is ``range(start, N // 2, 2)``
(``range(start, 20, 2)`` when N > 40), "high" is ``range(N // 2, N, 2)`` (``range(N - 20, N, 2)`` when N > 40),
where ``start`` skips the embedding layer when the embeddings are tied (2 when N > 2, 1 when N == 2); a list names
the layers itself (each in [0, N)).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..context import DecodeContext
from ..state import DecodeState
from ..step_record import StepRecorder

RELATIVE_TOP = 0.1
BASE_FILTER_VALUE = -1e-3
SMALLEST_NORMAL_LOG = -87.0  # exp(-87) = 1.6e-38, just above float32's smallest normal number (1.2e-38)


def candidate_layers(dola_layers, num_layers: int, tied_embeddings: bool) -> list[int]:
    """The premature layers DoLa chooses among; raises ValueError for a bad ``dola_layers``."""
    if not tied_embeddings:
        start = 0
    else:
        start = 2 if num_layers > 2 else (1 if num_layers == 2 else 0)
    if dola_layers == "low":
        if start == num_layers // 2:
            return [start]
        return list(range(start, num_layers // 2 if num_layers <= 40 else 20, 2))
    if dola_layers == "high":
        return list(range(num_layers // 2 if num_layers <= 40 else num_layers - 20, num_layers, 2))
    if isinstance(dola_layers, (list, tuple)) and dola_layers:
        for layer in dola_layers:
            if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < num_layers:
                raise ValueError(f"dola_layers must hold layer indices in [0, {num_layers}) for this "
                                 f"{num_layers}-layer model (0 = the embeddings), got {layer!r}")
        return list(dola_layers)
    raise ValueError(f"dola_layers must be 'low', 'high' or a non-empty list of layer indices, got {dola_layers!r}")


def contrast_layers(final_logits: torch.Tensor, premature_logits: torch.Tensor) -> torch.Tensor:
    """DoLa's next-token logits (B, V) float32 from the final layer's (B, V) and the candidates' (C, B, V) logits."""
    final = final_logits.float()
    premature = premature_logits.float()
    if premature.shape[0] > 1:
        log_final, log_premature = final.log_softmax(dim=-1), premature.log_softmax(dim=-1)
        middle = 0.5 * (_probs(log_final)[None] + _probs(log_premature))  # (C, B, V)
        js = 0.5 * (F.kl_div(log_final[None], middle, reduction="none").mean(-1)
                    + F.kl_div(log_premature, middle, reduction="none").mean(-1))  # (C, B)
        base = premature[js.mean(-1).argmax()]  # one premature layer for the whole batch, as transformers 4.x
    else:
        base = premature[0]
    log_final, log_base = final.log_softmax(dim=-1), base.log_softmax(dim=-1)
    implausible = log_final < (log_final.amax(dim=-1, keepdim=True) + math.log(RELATIVE_TOP))
    log_final = log_final.masked_fill(implausible, float("-inf"))
    log_base = log_base.masked_fill(implausible, BASE_FILTER_VALUE)
    return log_final - log_base


def _probs(log_probs: torch.Tensor) -> torch.Tensor:
    """``exp(log_probs)``, with probabilities below float32's smallest normal number raised to about it: most of an
    early layer's vocabulary lies there, subnormal arithmetic is many times slower on CPUs, and those tokens add
    nothing to the divergences at float32 precision."""
    return log_probs.clamp(min=SMALLEST_NORMAL_LOG).exp()


def check_beams(config) -> None:
    """Raise ValueError for DoLa with beam search (refused, as in transformers)."""
    if (config.num_beams or 1) > 1:
        raise ValueError("DoLa decoding runs with greedy search or sampling only: set num_beams=1 or drop dola_layers")


def layers_and_head(config, model) -> tuple[list[int], torch.nn.Module]:
    """The candidate premature layers and the LM head; raises ValueError for a bad ``dola_layers`` or no LM head."""
    text_config = model.config.get_text_config()
    num_layers = int(text_config.num_hidden_layers)
    tied = bool(getattr(text_config, "tie_word_embeddings", getattr(model.config, "tie_word_embeddings", False)))
    layers = candidate_layers(config.dola_layers, num_layers, tied)
    lm_head = model.get_output_embeddings()
    if lm_head is None:
        raise ValueError("DoLa needs a model with output embeddings (an LM head)")
    return layers, lm_head


def run(ctx: DecodeContext):
    """Decode with DoLa (greedy or sampling); returns a LongTensor (B, L) or a :class:`GenerateOutput`.

    Where transformers 4.x ignores ``dola_layers`` (contrastive search) the strategy choice runs contrastive search
    instead; beam search with DoLa is refused there.
    """
    config = ctx.config
    layers, lm_head = layers_and_head(config, ctx.model)

    runner, pipeline = ctx.runner, ctx.pipeline
    state = DecodeState(ctx)
    record = StepRecorder(config)
    want_processed = record.scores or record.processed_logprobs
    forward_kwargs = {"output_hidden_states": True, "output_attentions": record.attentions}

    outputs = runner.prefill(ctx.input_ids, **forward_kwargs)
    while True:
        logits = outputs.logits[:, -1, :].to(dtype=torch.float32, copy=True)
        hidden = torch.stack([outputs.hidden_states[layer][:, -1, :] for layer in layers])  # (C, B, H)
        contrasted = contrast_layers(logits, lm_head(hidden))
        scores = pipeline.process(contrasted, state.past(), state.cur_len)
        tokens, processed = pipeline.select(scores, state.step, want_processed)
        live = state.unfinished
        tokens = state.append(tokens, scores)
        record.add(outputs, logits, scores, processed, tokens, pipeline.backend, live=live)
        if state.done():
            break
        outputs = runner.step(tokens, **forward_kwargs)
    return state.finish(record)
