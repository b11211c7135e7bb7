"""``python -m vfe``: the same as the ``vfe`` command."""

from .cli import run

run()
