import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def images64():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 64, 64, generator=g) * 2 - 1


@pytest.fixture
def one_thread():
    """torch on one thread for the test (a module opts in with pytestmark = usefixtures("one_thread"))."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
