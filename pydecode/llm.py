"""``pydecode.LLM``: text in, text out, over :func:`pydecode.generate`.

``LLM("smollm2").complete(["The capital of France is"], max_tokens=16, stop=["."])`` returns one
:class:`~pydecode.completion.Completion` per sequence. Settings come as a ``params`` object (pydecode's
``SamplingParams``, a transformers or pydecode ``GenerationConfig``, or a dict) and/or keywords, in pydecode's names
(``pydecode.generate``'s keywords, every strategy included: ``num_beams``, ``penalty_alpha``, ``assistant_model``,
...) or the hosted-API names (``max_tokens``, ``stop``, ``n``, ``logprobs``, ``logit_bias``); keywords override
``params``. Unset settings take the model's generation config, as ``pydecode.generate`` does (SmolLM2: greedy, 20
new tokens), so the same settings give ``pydecode.generate``'s tokens.
"""
from __future__ import annotations

import time

import torch

from .completion import Completion, completions, left_pad, to_generate_kwargs
from .generation import generate as pydecode_generate
from .generation.config import resolve_config
from .generation.validate import special_tokens
from .text_stream import stream_text

BACKENDS = ("auto", "torch", "cpp", "triton", "cuda")


class LLM:
    """A causal language model and its tokenizer, driven by text.

    ``model_or_name``: a built-in name (``"smollm2"``, ``"gemma3-270m"``: see :mod:`pydecode.models`), a local Hugging
    Face folder, or a loaded model (then ``tokenizer`` is required). ``device`` defaults to ``cuda`` when available,
    else ``cpu`` (a loaded model stays where it is unless ``device`` is given); ``dtype`` to the saved one;
    ``backend`` picks pydecode's kernels (``"auto"`` leaves the choice to ``PYDECODE_BACKEND`` / the registry).
    """

    def __init__(self, model_or_name, tokenizer=None, device=None, dtype=None, backend: str = "auto"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if device is not None and torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} needs CUDA, which this torch ({torch.__version__}) cannot use; "
                             "use device='cpu'")
        if isinstance(model_or_name, str):
            from .models import load_model

            model, loaded_tokenizer = load_model(model_or_name, dtype=dtype)
            tokenizer = tokenizer if tokenizer is not None else loaded_tokenizer
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        else:
            if tokenizer is None:
                raise TypeError("tokenizer is required when model_or_name is a model object")
            model = model_or_name if dtype is None else model_or_name.to(dtype)
        self.model = model.to(device) if device is not None else model
        self.tokenizer = tokenizer
        self.backend = None if backend == "auto" else backend

    @property
    def device(self) -> torch.device:
        return self.model.device

    def complete(self, prompts, params=None, **kwargs) -> list[Completion]:
        """Complete each prompt (a string or a list of strings). Returns the completions in prompt order, ``n`` per
        prompt (prompt ``i``'s at ``i*n .. i*n+n-1``)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return self._complete_ids([self._encode(prompt) for prompt in prompts], params, kwargs)

    def chat(self, messages, params=None, **kwargs) -> list[Completion]:
        """Answer a conversation (a list of ``{"role", "content"}`` dicts) or a list of conversations, through the
        tokenizer's chat template (with the generation prompt). Returns ``n`` completions per conversation."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        return self._complete_ids([self._chat_ids(conversation) for conversation in conversations], params, kwargs)

    def stream(self, prompt, params=None, **kwargs):
        """Yield the completion of one prompt (a string, or a conversation for the chat template) as text pieces
        while it decodes: whole characters only, a possible stop string held back until decided, the stop string
        itself never shown. The pieces join into :meth:`complete`'s text. Not for ``n > 1`` nor the beam family."""
        ids = self._chat_ids(prompt) if isinstance(prompt, list) else self._encode(prompt)
        settings = self._settings(params, kwargs)
        if (settings.get("num_return_sequences") or 1) > 1:
            raise ValueError("stream() returns one sequence: n / num_return_sequences must be 1")
        input_ids, mask = left_pad([ids], self._pad_id(), self.device)
        own_criteria = list(settings.pop("stopping_criteria", None) or [])

        def run(streamer, criterion):
            pydecode_generate(self.model, input_ids, mask, streamer=streamer, tokenizer=self.tokenizer,
                              stopping_criteria=[*own_criteria, criterion], **settings)

        return stream_text(run, self.tokenizer, _stop_list(self._resolved(settings)))

    def generate(self, texts=None, generation_config=None, **kwargs):
        """xTuring-style: the generated text of each of ``texts`` (a list of strings, or one string for one string),
        under ``generation_config`` (a transformers or pydecode ``GenerationConfig``) and keywords."""
        if texts is None:
            raise ValueError("texts is required: a string or a list of strings")
        results = self.complete(texts, generation_config, **kwargs)
        n = len(results) // (1 if isinstance(texts, str) else len(texts))
        outputs = [c.text for c in results] if n == 1 else [[c.text for c in results[i:i + n]]
                                                            for i in range(0, len(results), n)]
        return outputs[0] if isinstance(texts, str) else outputs

    def _complete_ids(self, rows: list[list[int]], params, kwargs) -> list[Completion]:
        if not rows:
            raise ValueError("prompts must hold at least one prompt")
        settings = self._settings(params, kwargs)
        settings["return_dict_in_generate"] = True
        input_ids, mask = left_pad(rows, self._pad_id(), self.device)
        start = time.perf_counter()
        output = pydecode_generate(self.model, input_ids, mask, tokenizer=self.tokenizer, **settings)
        seconds = time.perf_counter() - start
        config = self._resolved(settings)
        eos_ids, _ = special_tokens(config, self.model)
        n = output.sequences.shape[0] // len(rows)
        return completions(self.tokenizer, output, [len(row) for row in rows], input_ids.shape[1], n, set(eos_ids),
                           _stop_list(config), seconds)

    def _resolved(self, settings: dict):
        """The generation config a generate() call with ``settings`` runs with."""
        kwargs = {k: v for k, v in settings.items() if k != "generation_config"}
        return resolve_config(self.model, settings.get("generation_config"), kwargs).config

    def _settings(self, params, kwargs: dict) -> dict:
        """``params`` and ``kwargs`` as ``pydecode.generate`` keywords (``generation_config`` for a config)."""
        settings = {}
        if params is None:
            pass
        elif hasattr(params, "to_generate_kwargs"):  # pydecode.SamplingParams
            settings.update(params.to_generate_kwargs())
        elif hasattr(params, "to_diff_dict"):  # a transformers or pydecode GenerationConfig
            settings["generation_config"] = params
        elif isinstance(params, dict):
            settings.update(to_generate_kwargs(params))
        else:
            raise TypeError("params must be a SamplingParams, a GenerationConfig or a dict, "
                            f"got {type(params).__name__}")
        settings.update(to_generate_kwargs(kwargs))
        if self.backend is not None:
            settings.setdefault("backend", self.backend)
        return settings

    def _encode(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str):
            raise TypeError(f"each prompt must be a string, got {type(prompt).__name__}")
        return self.tokenizer(prompt)["input_ids"]

    def _chat_ids(self, conversation) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError("this tokenizer has no chat template; use complete() with plain prompts")
        text = self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _pad_id(self) -> int:
        for pad in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if pad is not None:
                return int(pad)
        return 0  # masked out; any id in the vocabulary does


def _stop_list(config) -> list[str]:
    stops = config.stop_strings
    return [stops] if isinstance(stops, str) else list(stops or [])
