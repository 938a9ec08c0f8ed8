"""A local cluster for a test module: started, and stopped however the module ends.

@pytest.fixture(scope="module")
def conn(tmp_path_factory, local_manager):
    with started(local_manager(tmp_path_factory.mktemp("cluster"))) as c:
        yield c
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from admin import Connection, LocalContainerManager


@contextlib.contextmanager
def started(manager: LocalContainerManager) -> Iterator[Connection]:
    """A connection to ``manager``'s cluster, started; every process stopped on exit."""
    c = Connection(manager)
    c.start()
    try:
        yield c
    finally:
        c.stop_all()
