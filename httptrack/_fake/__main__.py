"""``python -m httptrack._fake``: serve the fake provider until killed."""

from ._server import main

__all__: list[str] = []

raise SystemExit(main())
