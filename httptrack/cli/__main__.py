"""``python -m httptrack.cli``: the same as the ``httptrack`` command."""

from __future__ import annotations

from . import main

__all__: list[str] = []

if __name__ == "__main__":
    main(prog_name="httptrack")
