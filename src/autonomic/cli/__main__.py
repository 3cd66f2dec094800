"""``python -m autonomic.cli``: the same as the ``autonomic`` command."""

from autonomic.cli.app import main

main()
