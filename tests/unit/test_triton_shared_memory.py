"""The Triton client's system shared-memory region and its "is this server on this host" check (issue 26.4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from repoforge.triton.client import SystemSharedMemory, is_local_server


def test_loopback_and_own_names_are_local_other_hosts_are_not() -> None:
    assert is_local_server("127.0.0.1:8001")
    assert is_local_server("localhost:8001")
    assert is_local_server("[::1]:8001")
    assert not is_local_server("192.0.2.7:8001")  # TEST-NET-1: never this host
    assert not is_local_server("no-such-host.invalid:8001")


def test_a_region_round_trips_arrays_and_is_gone_after_destroy() -> None:
    region = SystemSharedMemory(4096, prefix="repoforge_test")
    try:
        assert region.key == "/" + region.name and Path("/dev/shm", region.name).exists()
        a = np.arange(24, dtype=np.float32).reshape(4, 6)
        assert region.write(128, a) == a.nbytes
        got = region.read(128, (4, 6), np.dtype(np.float32))
        region.write(128, np.zeros_like(a))  # the copy read before does not change with the region
        assert np.array_equal(got, a)
    finally:
        region.destroy()
    region.destroy()  # idempotent
    assert not Path("/dev/shm", region.name).exists()
