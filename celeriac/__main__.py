"""``python -m celeriac`` is the ``celeriac`` command."""

from celeriac.cli.main import main

main()
