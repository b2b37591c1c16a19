"""``python -m ctrlsock``: the same as the ``ctrlsock`` command."""

from ctrlsock.cli import main

main()
