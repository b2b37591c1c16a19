"""ctrlsock: a daemon's Unix control socket, done right.

The lock and who holds it, recovery that removes only what is provably orphaned, and a JSON command
channel wire-compatible with ISC Kea's.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
