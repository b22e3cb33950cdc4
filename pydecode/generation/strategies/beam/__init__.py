"""The beam family: beam search and beam sampling (beam.py), diverse group beam search (group_beam.py)."""
