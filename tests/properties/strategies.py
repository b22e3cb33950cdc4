"""Hypothesis strategies for the property suites: logits rows with the awkward values a serving stack meets, and the
per-row sampling parameters at their range edges.

Logits are built from a drawn description (shape, dtype, scale, which rows are special) and a drawn seed rather than
element by element, so a vocabulary of 300,000 costs one draw; hypothesis still shrinks the description. Big
vocabularies are rare and come with small batches (``MAX_ELEMENTS``), which bounds the suite's time.
"""
from __future__ import annotations

import torch
from hypothesis import strategies as st

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# vocabularies of real models and sizes around the kernels' block and radix boundaries
AWKWARD_VOCABS = (1, 2, 3, 7, 31, 32, 33, 127, 128, 129, 255, 256, 257, 1023, 1024, 1025, 2047, 2048, 2049, 4097)
MODEL_VOCABS = (32000, 49152, 50257, 128256, 151936, 262144, 300000)
MAX_ELEMENTS = 1 << 20  # batch * vocab per example
# what a row of a drawn batch can be, besides ordinary random logits
ROW_KINDS = ("plain", "ties", "all_equal", "all_masked", "nan", "pos_inf", "neg_inf", "huge", "tiny", "top_tie")


@st.composite
def vocab_sizes(draw, max_vocab: int = 300_000) -> int:
    """Mostly small awkward sizes; a real model's vocabulary one time in ten."""
    choice = draw(st.sampled_from(AWKWARD_VOCABS) | st.integers(1, 2100))
    big = [v for v in MODEL_VOCABS if v <= max_vocab]
    if big and draw(st.integers(0, 9)) == 0:
        choice = draw(st.sampled_from(big))
    return min(choice, max_vocab)


def _row(kind: str, vocab: int, dtype: torch.dtype, scale: float, gen: torch.Generator) -> torch.Tensor:
    """One float32 row of ``kind`` (the caller casts it to ``dtype``)."""
    finfo = torch.finfo(dtype)
    x = torch.randn(vocab, generator=gen) * scale
    some = torch.rand(vocab, generator=gen) < 0.1
    if kind == "ties":  # coarse values: groups of equal logits everywhere
        x = x.round()
    elif kind == "all_equal":
        x = torch.full((vocab,), float(x[0]))
    elif kind == "all_masked":
        x = torch.full((vocab,), float("-inf"))
    elif kind == "nan":
        x[some] = float("nan")
    elif kind == "pos_inf":
        x[int(torch.randint(vocab, (1,), generator=gen))] = float("inf")
    elif kind == "neg_inf":
        x[some] = float("-inf")
    elif kind == "huge":  # near the dtype's largest finite value
        x = torch.sign(x) * finfo.max * torch.rand(vocab, generator=gen).clamp(min=0.5)
    elif kind == "tiny":
        x = x * finfo.tiny
    elif kind == "top_tie":  # the top few tokens share one value: top-k / top-p boundaries fall inside the group
        top = x.topk(min(vocab, 1 + int(torch.randint(8, (1,), generator=gen)))).indices
        x[top] = float(x.max())
    return x


@st.composite
def logits_batches(draw, max_batch: int = 64, max_vocab: int = 300_000, dtypes=DTYPES,
                   kinds=ROW_KINDS) -> torch.Tensor:
    """(B, V) logits, B in [0, max_batch], every row of a drawn kind, in a drawn dtype."""
    vocab = draw(vocab_sizes(max_vocab))
    batch = draw(st.integers(0, min(max_batch, max(1, MAX_ELEMENTS // vocab))))
    dtype = draw(st.sampled_from(dtypes))
    scale = draw(st.sampled_from((1.0, 4.0, 1e-3, 30.0)))
    kind_of_row = draw(st.lists(st.sampled_from(kinds), min_size=batch, max_size=batch))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    rows = [_row(kind, vocab, dtype, scale, gen) for kind in kind_of_row]
    logits = torch.stack(rows) if rows else torch.empty(0, vocab)
    return logits.to(dtype)


def _per_row(draw, batch: int, values: st.SearchStrategy, dtype: torch.dtype):
    """A scalar for every row, or a (B,) tensor of drawn values."""
    if draw(st.booleans()):
        return draw(values)
    return torch.tensor(draw(st.lists(values, min_size=batch, max_size=batch)), dtype=dtype).reshape(batch)


def temperatures():
    return st.sampled_from((0.0, 1e-3, 0.5, 1.0, 2.0, 100.0)) | st.floats(0.05, 3.0)


def top_ks(vocab: int):
    return st.sampled_from(sorted({0, 1, 2, max(vocab - 1, 0), vocab, vocab + 5})) | st.integers(0, min(vocab, 100))


def top_ps():
    return st.sampled_from((1.0, 1e-6, 0.5, 0.9, 0.999)) | st.floats(0.01, 1.0)


def min_ps():
    return st.sampled_from((0.0, 1.0, 0.05, 0.5)) | st.floats(0.0, 1.0)


@st.composite
def sampling_params(draw, batch: int, vocab: int) -> dict:
    """``temperature``, ``top_k``, ``top_p`` and ``min_p``: each off, at a range edge or in between, per row or not."""
    return dict(temperature=_per_row(draw, batch, temperatures(), torch.float32),
                top_k=_per_row(draw, batch, top_ks(vocab), torch.int64),
                top_p=_per_row(draw, batch, top_ps(), torch.float32),
                min_p=_per_row(draw, batch, min_ps(), torch.float32))


def seeds_for(draw, batch: int) -> torch.Tensor:
    """(B,) int64 seeds over the whole int64 range."""
    return torch.tensor(draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=batch, max_size=batch)),
                        dtype=torch.int64).reshape(batch)


def examples(fraction: float) -> int:
    """``fraction`` of the loaded profile's examples per property (at least 5): for the costly backends and ops."""
    from hypothesis import settings

    return max(5, int(settings.default.max_examples * fraction))
