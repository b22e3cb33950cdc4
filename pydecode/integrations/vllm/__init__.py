"""pydecode in vLLM (v1 engine), tested with vLLM 0.32 on CPU.

- :mod:`.logits_processors`: pydecode's processors vLLM lacks, per request from ``SamplingParams.extra_args``
  (``vllm_xargs`` over HTTP); registered under the ``vllm.logits_processors`` entry point.
- :mod:`.plugin`: the ``vllm.general_plugins`` entry point; with ``PYDECODE_VLLM_SAMPLER=1`` vLLM's model runner
  samples with a :class:`pydecode.Sampler` (:mod:`.sampler` and its batch state :mod:`.batch_slots` for the v1
  runner, :mod:`.sampler_v2` for the GPU model runner v2).

Importing this package imports vLLM; ``import pydecode`` never imports it.
"""
