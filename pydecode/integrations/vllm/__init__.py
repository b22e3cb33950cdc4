"""pydecode in vLLM (v1 engine), tested with vLLM 0.32 on CPU.

- :mod:`.logits_processors`: pydecode's processors vLLM lacks, per request from ``SamplingParams.extra_args``
  (``vllm_xargs`` over HTTP); registered under the ``vllm.logits_processors`` entry point.
- :mod:`.plugin`: the ``vllm.general_plugins`` entry point; with ``PYDECODE_VLLM_SAMPLER=1`` vLLM's model runner
  samples with pydecode (:mod:`.sampler`).

Importing this package imports vLLM; ``import pydecode`` never imports it.
"""
