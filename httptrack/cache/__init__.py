"""The response cache: identical requests answered locally, streams replayed.

It owns what is looked up and stored, for how long and in which mode; the keys; and the
entries, behind one seam (``_storage.CacheStorage``): a diskcache folder shared by the
processes of one machine (``_store.EntryStore``) today.

- ``_policy``: ``ResponseCache``, the policy (lookup on the app's thread, storing after the
  row is recorded, TTLs, modes, ``CacheMiss`` in replay mode).
- ``_storage``: the seam, ``CacheStorage``: what the policy needs from where entries live.
- ``_flight``: what the transports of one process share over one storage: calls in flight
  (single-flight), answers delivered but not stored yet (read-your-writes), the membership
  filter that answers misses from memory.
- ``_guard``: the loop guard (an identical request answered too often goes out again).
- ``_key``: which requests are "the same request" (a keyed hash, credentials included).
- ``_store``: entries on disk and in memory, and the admin the CLI uses (stats, clear, prune).
"""

__all__: list[str] = []
