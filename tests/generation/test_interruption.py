"""Interrupted generation: a streamer raising mid-generation, ``max_time`` expiring, ``KeyboardInterrupt`` from a
logits processor or a stopping criterion. The exception reaches the caller; pydecode and the model stay usable
and the next call's output is unchanged (with a KIVI cache too: the model's attention is switched back)."""
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

import pydecode
from pydecode.ops.backends import cpu_isa

from tests.generation.models import padded_batch, tiny_model

KIVI = dict(cache_implementation="kivi", cache_config={"nbits": 4, "group_size": 16, "residual_length": 16})
SETTINGS = [dict(do_sample=False), dict(do_sample=True, seed=7, top_p=0.9), dict(num_beams=2, do_sample=False),
            dict(do_sample=False, **KIVI)]


class AfterSteps:
    """Raises ``error`` on its ``steps``-th call."""

    def __init__(self, steps, error):
        self.calls, self.steps, self.error = 0, steps, error

    def tick(self):
        self.calls += 1
        if self.calls == self.steps:
            raise self.error


class RaisingStreamer(AfterSteps):
    def put(self, value):
        self.tick()

    def end(self):
        pass


class RaisingProcessor(AfterSteps, LogitsProcessor):
    def __call__(self, input_ids, scores):
        self.tick()
        return scores


class RaisingCriterion(AfterSteps, StoppingCriteria):
    def __call__(self, input_ids, scores, **kwargs):
        self.tick()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def _generate(model, **kwargs):
    ids, mask = padded_batch()
    return pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=10, **kwargs)


def _interrupt(how, steps, error):
    if how == "streamer":
        return dict(streamer=RaisingStreamer(steps, error))
    if how == "processor":
        return dict(logits_processor=LogitsProcessorList([RaisingProcessor(steps, error)]))
    return dict(stopping_criteria=StoppingCriteriaList([RaisingCriterion(steps, error)]))


@pytest.mark.parametrize("settings", SETTINGS, ids=["greedy", "sample", "beam", "kivi"])
@pytest.mark.parametrize("how", ["streamer", "processor", "criterion"])
@pytest.mark.parametrize("error", [RuntimeError("client went away"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_interrupted_call_leaves_the_next_one_unchanged(settings, how, error):
    if how == "streamer" and "num_beams" in settings:
        pytest.skip("beam search takes no streamer (as in transformers)")
    model = tiny_model("llama")
    attention, isa = model.config._attn_implementation, cpu_isa()
    before = _generate(model, **settings)
    with pytest.raises(type(error)):
        _generate(model, **settings, **_interrupt(how, 4, error))
    assert model.config._attn_implementation == attention and cpu_isa() == isa
    assert torch.equal(_generate(model, **settings), before)


@pytest.mark.parametrize("settings", SETTINGS, ids=["greedy", "sample", "beam", "kivi"])
def test_max_time_expiring_leaves_the_next_call_unchanged(settings):
    model = tiny_model("llama")
    before = _generate(model, **settings)
    short = _generate(model, max_time=1e-9, **settings)
    assert short.shape[1] < before.shape[1]
    assert torch.equal(_generate(model, **settings), before)
