"""The one logits pipeline: the ordered processor list (processors.py, extra_processors.py, guidance.py,
prefix_constraint.py), then the warpers and the draw (pipeline.py)."""
