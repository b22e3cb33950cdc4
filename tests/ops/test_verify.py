"""The verify op on every backend against the reference (pydecode.ops.verify.reference), and the reference itself
against the definition of speculative sampling: the emitted token is distributed as the target (chi-square at the
0.1% level over fixed seeds: deterministic, it cannot flake)."""
import pytest
import torch
from scipy.stats import chisquare

from pydecode.ops.verify import verify
from pydecode.ops.verify.reference import verify as reference_verify

from tests.support.devices import on_device


def make_case(batch, k, vocab, seed=0, agree=0.5, filtered=True):
    """Processed logits (some entries -inf, as top-k leaves them), drafts drawn from the draft distribution."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(batch, k + 1, vocab, generator=g) * 2
    draft = agree * target[:, :k] + (1 - agree) * torch.randn(batch, k, vocab, generator=g) * 2
    if filtered:
        target = target.masked_fill(torch.rand(target.shape, generator=g) < 0.2, float("-inf"))
        draft = draft.masked_fill(torch.rand(draft.shape, generator=g) < 0.2, float("-inf"))
    tokens = torch.multinomial(draft.softmax(-1).reshape(-1, vocab), 1, generator=g).reshape(batch, k)
    num_draft = torch.randint(0, k + 1, (batch,), generator=g)
    seeds = torch.arange(batch, dtype=torch.int64) * 7919 + 11
    return tokens, draft, target, num_draft, seeds


@pytest.mark.parametrize("batch,k,vocab", [(5, 3, 37), (3, 4, 1000), (2, 1, 5000)])
@pytest.mark.parametrize("draft", ["model", "lookup"])
def test_matches_reference(kernel_backend, batch, k, vocab, draft):
    tokens, draft_logits, target, num_draft, seeds = make_case(batch, k, vocab, seed=batch + k)
    if draft == "lookup":
        draft_logits = None
    cases = [(1.0, 0), (0.0, 5), (torch.tensor([0.0, 1.0, 0.7, 0.0, 1.0])[:batch], 5)]
    if kernel_backend == "triton":  # the interpreter runs ~1 s per row and draft: one mixed case
        cases = cases[2:]
    for temperature, step in cases:
        expected = reference_verify(tokens, draft_logits, target, num_draft, temperature, seeds, step)
        got = on_device(verify, tokens, draft_logits, target, num_draft, temperature, seeds=seeds, step=step,
                        backend=kernel_backend)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1]), (temperature, step)


def test_all_accepted_self_draft_and_greedy_mismatch(backend):
    tokens, _, target, _, seeds = make_case(4, 3, 50, filtered=False)
    full = torch.full((4,), 3)
    accepted, _ = on_device(verify, tokens, target[:, :3].clone(), target, full, 1.0, seeds=seeds, backend=backend)
    assert torch.equal(accepted, full)  # p == q: every draft is accepted
    greedy_tokens = target[:, :3].argmax(-1)
    greedy_tokens[1, 1] = (greedy_tokens[1, 1] + 1) % 50
    accepted, nxt = on_device(verify, greedy_tokens, None, target, full, 0.0, seeds=seeds, backend=backend)
    assert accepted.tolist() == [3, 1, 3, 3]
    assert nxt[1] == target[1, 1].argmax() and nxt[0] == target[0, 3].argmax()


@pytest.mark.parametrize("agree", [0.9, 0.0])
@pytest.mark.parametrize("draft", ["model", "lookup"])
def test_first_emitted_token_follows_the_target(agree, draft):
    """One draft token drawn from q per row: accepted or corrected, the emitted token is distributed as p."""
    rows, vocab = 20000, 12
    g = torch.Generator().manual_seed(3)
    target_row = torch.randn(1, 2, vocab, generator=g) * 1.5
    draft_row = agree * target_row[:, :1] + (1 - agree) * torch.randn(1, 1, vocab, generator=g) * 1.5
    q = draft_row.softmax(-1)[0, 0] if draft == "model" else torch.nn.functional.one_hot(torch.tensor(4), vocab).float()
    tokens = torch.multinomial(q, rows, replacement=True, generator=g)[:, None]
    accepted, nxt = reference_verify(tokens, draft_row.expand(rows, 1, vocab) if draft == "model" else None,
                                     target_row.expand(rows, 2, vocab), torch.ones(rows, dtype=torch.long), 1.0,
                                     torch.arange(rows, dtype=torch.int64) * 104729, 9)
    emitted = torch.where(accepted > 0, tokens[:, 0], nxt)
    expected = target_row[0, 0].double().softmax(-1) * rows
    _, p_value = chisquare(torch.bincount(emitted, minlength=vocab).double(), expected)
    assert p_value > 1e-3


def test_bad_arguments():
    tokens, draft_logits, target, num_draft, seeds = make_case(2, 2, 10)
    with pytest.raises(ValueError, match="target_logits"):
        verify(tokens, draft_logits, target[:, :2], num_draft, seeds=seeds)
    with pytest.raises(ValueError, match="num_draft"):
        verify(tokens, draft_logits, target, num_draft + 5, seeds=seeds)
