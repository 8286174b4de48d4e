"""training/rendezvous.py: the errors a host gets when it cannot meet the master."""

from __future__ import annotations

import pytest

from object2vec.errors import ClientError
from object2vec.training.rendezvous import _rendezvous_store
from object2vec.training.topology import Topology


def test_worker_that_cannot_reach_the_master_names_host_and_port() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        topology = Topology(("127.0.0.1", "localhost"), 1, 1, "cpu", port, 1.0)
        with pytest.raises(ClientError) as info:
            _rendezvous_store(topology, rank=1)
    assert str(info.value).startswith(
        f"host localhost could not reach the master host 127.0.0.1 on port {port} within 1 s"
    )


def test_master_name_that_never_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    topology = Topology(("no-such-host.invalid", "localhost"), 1, 1, "cpu", 29500, 0.5)
    with pytest.raises(ClientError, match="host localhost could not resolve the master host name no-such-host.invalid"):
        _rendezvous_store(topology, rank=1)
