"""``python -m ops_platform``: the ``ops-platform`` command."""

from .cli import main

main(prog_name="ops-platform")
