"""``python -m httptrack._fake``: serve the fake provider until killed."""

from ._server import main

raise SystemExit(main())
