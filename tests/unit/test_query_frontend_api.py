"""The query frontend's public API is what its __all__ says, and nothing more."""

import query_frontend


def test_public_api_is_pinned():
    assert sorted(query_frontend.__all__) == ["Config", "create_app"]
    for name in query_frontend.__all__:
        assert getattr(query_frontend, name) is not None
