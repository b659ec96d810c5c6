"""Shared fixtures: every test gets its own data root, cache and report folders."""
import pytest


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """Point the library's three folders at fresh temporary directories.

    Tests never read a real dataset mirror, never touch the repository's
    cache or reports, and never try the network.
    """
    monkeypatch.setenv("HASHSTUDY_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HASHSTUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HASHSTUDY_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("HASHSTUDY_DOWNLOAD", "0")
    monkeypatch.delenv("HASHSTUDY_STAGING", raising=False)  # set only by the report command
    (tmp_path / "data").mkdir()
    return tmp_path


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Every test runs torch on one thread.

    Small networks train fastest on one thread and do not fight parallel jobs;
    above all, a float sum's order depends on the thread count, so a training
    test's outcome must not depend on which tests ran before it.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
