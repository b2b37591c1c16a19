"""``python -m ctrlsock``: the same as the ``ctrlsock`` command."""

from __future__ import annotations

from ctrlsock.cli import main

if __name__ == "__main__":
    main()
