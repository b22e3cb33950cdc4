"""The model step: runners over the KV cache (runner.py; seq2seq.py for encoder-decoders), the cache a call asks for
(caches.py, preallocated_cache.py, no_cache.py), prompt embeddings, positions, attention and output-head helpers."""
