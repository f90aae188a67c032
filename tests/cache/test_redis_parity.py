"""The local cache's own SDK-driven tests, run again with the cache in Redis: the same
functions (imported from test_cache.py and test_single_flight.py), with
``HTTPTRACK_CACHE_URL`` naming the session's throwaway redis-server, which wins over the
``cache_dir`` the tests pass (the folder is then not used)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cache import (  # noqa: F401 - collected here again, on Redis
    test_a_stream_httptrack_asked_usage_for_replays_exactly_what_the_app_saw,
    test_anthropic_stream_hit,
    test_equivalent_json_written_differently_hits,
    test_errors_are_never_stored,
    test_mode_off_neither_reads_nor_stores,
    test_mode_refresh_always_calls_then_stores,
    test_mode_replay_serves_hits_and_refuses_misses,
    test_model_list_is_cached,
    test_ollama_sync_and_async_stream_and_plain,
    test_openai_async_stream_replays_the_same_chunks,
    test_openai_repeat_is_served_from_the_cache,
    test_raw_chunk_boundaries_are_kept,
    test_streams_cut_short_are_not_stored,
)
from test_single_flight import (  # noqa: F401
    test_a_failed_leader_releases_the_followers,
    test_a_follower_gets_each_chunk_as_the_leader_receives_it,
    test_back_to_back_calls_hit_without_a_flush_async,
    test_back_to_back_calls_hit_without_a_flush_openai,
    test_back_to_back_calls_hit_without_a_flush_over_httpx,
    test_record_then_replay_in_one_process_needs_no_flush,
    test_ten_asyncio_tasks_make_one_provider_call,
    test_ten_threads_make_one_provider_call,
)


@pytest.fixture(autouse=True)
def _on_redis(
    _isolated: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    monkeypatch.setenv("HTTPTRACK_CACHE_URL", redis_url)
    yield
    assert not (tmp_path / "cache").exists(), "the cache folder was used: the test did not run on Redis"
