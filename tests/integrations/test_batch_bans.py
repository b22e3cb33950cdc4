"""BatchBans (the whole batch's bans and biases in batched device ops) against RequestBans (one request at a time,
pydecode's reference processors), on random batches with ragged histories, reused slots and repeated tokens."""
import pytest
import torch

from pydecode.integrations.batch_bans import BatchBans
from pydecode.integrations.request_args import parse_request_args

from tests.support.request_bans import RequestBans

VOCAB = 12
REQUESTS = [
    {"no_repeat_ngram_size": 2, "bad_words_ids": [[5], [1, 2, 3]], "sequence_bias": [[[7], 3.0], [[2, 4], -1.5]]},
    {},
    {"no_repeat_ngram_size": 3, "sequence_bias": [[[1, 2, 4], 2.0], [[7], 1.0], [[VOCAB + 3], 9.0]]},
    {"bad_words_ids": [[2, 4], [1, 2, 3], [VOCAB, 1]], "no_repeat_ngram_size": 1},
    {"no_repeat_ngram_size": 2, "bad_words_ids": [[1, 2, 3]]},
]


@pytest.mark.parametrize("seed", range(6))
def test_batch_equals_one_request_at_a_time(seed):
    gen = torch.Generator().manual_seed(seed)
    bans = BatchBans(8, VOCAB, "cpu")
    slots = torch.randperm(8, generator=gen)[:len(REQUESTS)]
    bans.add(int(slots[0]), parse_request_args({"no_repeat_ngram_size": 4, "bad_words_ids": [[9]]}))  # reused
    for slot, extras in zip(slots.tolist(), REQUESTS):
        assert bans.add(slot, parse_request_args(extras)) == bool(extras)
    width = 14
    history = torch.randint(0, 5, (len(REQUESTS), width), generator=gen)  # few ids: many repeats and matches
    length = torch.randint(0, width + 1, (len(REQUESTS),), generator=gen)
    scores = torch.randn(len(REQUESTS), VOCAB + 3, generator=gen)  # a padded LM head
    got = bans.apply(scores, slots, history, length)
    for row, extras in enumerate(REQUESTS):
        want = RequestBans(parse_request_args(extras), VOCAB, "cpu").apply(
            scores[row:row + 1, :VOCAB], history[row:row + 1, :int(length[row])])
        torch.testing.assert_close(got[row, :VOCAB], want[0], msg=f"row {row}: {extras}")
    assert torch.equal(got[:, VOCAB:], scores[:, VOCAB:])


def test_removed_slot_is_untouched():
    bans = BatchBans(2, VOCAB, "cpu")
    bans.add(1, parse_request_args(REQUESTS[0]))
    bans.remove(1)
    scores = torch.randn(1, VOCAB)
    got = bans.apply(scores, torch.tensor([1]), torch.tensor([[1, 2, 1, 2]]), torch.tensor([4]))
    assert torch.equal(got, scores)


def test_history_shorter_than_a_prefix_matches_nothing():
    bans = BatchBans(1, VOCAB, "cpu")
    bans.add(0, parse_request_args({"sequence_bias": [[[3, 3, 4], 1.0]], "bad_words_ids": [[3, 3, 5]]}))
    scores = torch.randn(1, VOCAB)
    got = bans.apply(scores, torch.tensor([0]), torch.tensor([[3, 0, 0]]), torch.tensor([1]))
    assert torch.equal(got, scores)
