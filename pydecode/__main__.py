"""``python -m pydecode``: the same as the ``pydecode`` command."""
import sys

from .cli import main

sys.exit(main())
