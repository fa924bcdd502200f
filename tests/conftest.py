"""Fixtures most end-to-end modules share, each once per module: a work folder named after the
module, the demo upstream on a free port, and the test authorization server. A module that needs
another kind (JSON answers, TLS, a second upstream) defines its own fixture of the same name."""

from __future__ import annotations

import pytest

from tests.support.authserver import running_auth_server
from tests.support.gateway import DemoUpstream


@pytest.fixture(scope="module")
def workdir(request, tmp_path_factory):
    return tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2].removeprefix("test_"))


@pytest.fixture(scope="module")
def upstream(workdir):
    up = DemoUpstream(workdir)
    yield up
    up.stop()


@pytest.fixture(scope="module")
def auth():
    with running_auth_server() as server:
        yield server


def pytest_collection_modifyitems(config, items):
    from tests.support.file_order import sort_longest_first

    sort_longest_first(items)


def pytest_configure(config):
    import os

    if os.environ.get("MCPGW_TEST_DURATIONS") == "write" and not hasattr(config, "workerinput"):
        from tests.support.file_order import DurationRecorder

        config.pluginmanager.register(DurationRecorder(), "mcpgw-file-durations")
