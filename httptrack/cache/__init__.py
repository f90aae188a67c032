"""The response cache: identical requests answered locally, streams replayed.

It owns what is looked up and stored, for how long and in which mode; the keys; and the
entries, kept in a diskcache folder shared by processes (behind ``EntryStore``).

- ``_policy``: ``ResponseCache``, the policy (lookup on the app's thread, storing after the
  row is recorded, TTLs, modes, ``CacheMiss`` in replay mode).
- ``_key``: which requests are "the same request" (a keyed hash, credentials included).
- ``_store``: entries on disk and in memory, and the admin the CLI uses (stats, clear, prune).
"""

__all__: list[str] = []
