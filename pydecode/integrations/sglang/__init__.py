"""pydecode in SGLang: :mod:`.sampler` (the sampling backend ``--sampling-backend pydecode``) and
:mod:`.logit_processor` (a ``CustomLogitProcessor`` running pydecode's processors SGLang lacks).

Importing this package imports SGLang; ``import pydecode`` never imports it. Tested against the classes of the
``sglang`` 0.5.23 wheel on CPU (``tests/integrations/setup_sglang.sh``); SGLang's engine needs CUDA.
"""
