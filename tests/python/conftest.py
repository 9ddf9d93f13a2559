"""Start the real neurocube binary on a free port with a temporary data directory."""
import pytest

from serverproc import running


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    with running(tmp_path_factory.mktemp("data")) as url:
        yield url
