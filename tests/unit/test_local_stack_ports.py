"""The local stack never gives one port to two components."""

import pytest

from infra.local import LocalStack, StackConfig
from infra.local.process import StartupError, free_port


def test_free_port_never_gives_the_same_port_twice():
    # Nothing binds these: the kernel would happily offer a just-released port again.
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)


def test_a_port_given_to_two_components_stops_the_start_before_anything_runs(tmp_path):
    config = StackConfig(
        state_dir=tmp_path,
        gateway_port=free_port(),
        auth_port=5999,
        api_port=5999,
        database_url="postgresql+pg8000://x@127.0.0.1:9/x",
        pubsub_emulator_host="127.0.0.1:9",
        storage_emulator_host="http://127.0.0.1:9",
        services=["auth", "api"],
    )
    stack = LocalStack(config)
    with pytest.raises(StartupError, match="5999 \\(auth and api\\)"):
        stack.start()
    assert stack.processes == []
