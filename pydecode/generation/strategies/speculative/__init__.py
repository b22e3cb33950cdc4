"""The speculative family: one draft-and-verify loop (speculative.py, block_pipeline.py) and its draft proposers:
an assistant model (assisted.py) or n-gram lookup in the prompt (prompt_lookup.py)."""
