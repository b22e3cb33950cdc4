"""pydecode's SGLang CustomLogitProcessor against SGLang's real class, with stand-in requests; run by
test_sglang.py with the SGLang side venv's python (tests/integrations/setup_sglang.sh). Exits non-zero on a
mismatch."""
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).parent))
from sglang_import import import_sglang  # noqa: E402

_, CustomLogitProcessor = import_sglang()

from pydecode.integrations.processors import apply_warpers  # noqa: E402
from pydecode.integrations.request_args import parse_request_args  # noqa: E402
from pydecode.integrations.sglang.logit_processor import PydecodeLogitProcessor  # noqa: E402

from tests.support.request_bans import RequestBans  # noqa: E402

VOCAB = 40
BANS = {"no_repeat_ngram_size": 2, "bad_words_ids": [[5], [1, 2, 3]], "sequence_bias": [[[7], 3.0]]}
WARPS = {"typical_p": 0.6, "epsilon_cutoff": 0.02}


def request(prompt, output, temperature):
    return SimpleNamespace(origin_input_ids=prompt, output_ids=output,
                           sampling_params=SimpleNamespace(temperature=temperature))


def main():
    processor = CustomLogitProcessor.from_str(PydecodeLogitProcessor.to_str())  # SGLang's own (de)serialisation
    assert isinstance(processor, PydecodeLogitProcessor)
    requests = [request([1, 2, 1], [2, 3], 0.0), request([4], [], 0.7), request([6, 6], [1, 2], 0.9)]
    params = [{**BANS, "__req__": requests[0]}, {**WARPS, "__req__": requests[1]},
              {**BANS, **WARPS, "__req__": requests[2]}]
    logits = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(0)) * 3
    got = processor(logits.clone(), params)
    bans = RequestBans(parse_request_args(BANS), VOCAB, "cpu")
    torch.testing.assert_close(got[0], bans.apply(logits[:1], torch.tensor([[1, 2, 1, 2, 3]]))[0])
    warped = apply_warpers(logits[1:2] / 0.7, [parse_request_args(WARPS)], [0.7]) * 0.7
    torch.testing.assert_close(got[1], warped[0])
    both = bans.apply(logits[2:3], torch.tensor([[6, 6, 1, 2]]))
    both = apply_warpers(both / 0.9, [parse_request_args({**BANS, **WARPS})], [0.9]) * 0.9
    torch.testing.assert_close(got[2], both[0])
    try:
        processor(logits.clone(), [{"typical_p": 2.0, "__req__": requests[0]}])
    except ValueError as error:
        assert "typical_p" in str(error)
    else:
        raise AssertionError("typical_p=2.0 was accepted")
    print("sglang processor: ok")


if __name__ == "__main__":
    main()
