"""Hosts of their own on this machine: network namespaces joined to it by veth pairs.

A worker started with ``VirtualHost.command(...)`` runs inside its namespace
and reaches this machine only through its veth link, at ``host_address``: a
server listening there is across a real (virtual) network from it, so cutting
the link (``cut``: the host-side end goes down) is what a pulled cable or a
partitioned network does to a worker, without killing its process or its
sessions. ``restore`` brings the link back.

Creating namespaces needs root and ``ip`` (iproute2); ``unavailable()`` says
why not, so tests can skip with that reason. ``virtual_hosts`` always removes
what it made, even after a failure halfway through.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["VirtualHost", "unavailable", "virtual_hosts"]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def unavailable() -> str | None:
    """None when namespaces can be made here, else why they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if _ip("netns", "list", check=False).returncode != 0:
        return "`ip netns` does not work here"
    return None


@dataclass(frozen=True, slots=True)
class VirtualHost:
    """One namespace; ``address`` is the worker's side, ``host_address`` this machine's."""

    namespace: str
    host_link: str  # the veth end on this machine: cut() takes it down
    address: str
    host_address: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` replaces itself: same pid)."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def cut(self) -> None:
        _ip("link", "set", self.host_link, "down")

    def restore(self) -> None:
        _ip("link", "set", self.host_link, "up")


def _create(index: int, tag: str, subnet: int) -> VirtualHost:
    namespace = f"encm-{tag}-{index}"
    host_link, inner_link = f"em{tag}{index}h", f"em{tag}{index}n"  # at most 15 characters
    host = VirtualHost(
        namespace=namespace,
        host_link=host_link,
        address=f"10.{subnet}.{index}.2",
        host_address=f"10.{subnet}.{index}.1",
    )
    _ip("netns", "add", namespace)
    _ip("link", "add", host_link, "type", "veth", "peer", "name", inner_link)
    _ip("link", "set", inner_link, "netns", namespace)
    _ip("addr", "add", f"{host.host_address}/24", "dev", host_link)
    _ip("link", "set", host_link, "up")
    inside = ("netns", "exec", namespace, "ip")
    _ip(*inside, "addr", "add", f"{host.address}/24", "dev", inner_link)
    _ip(*inside, "link", "set", inner_link, "up")
    _ip(*inside, "link", "set", "lo", "up")
    return host


def _remove(index: int, tag: str) -> None:
    # Deleting the namespace deletes its veth end, which deletes the pair.
    _ip("link", "del", f"em{tag}{index}h", check=False)
    _ip("netns", "del", f"encm-{tag}-{index}", check=False)


@contextlib.contextmanager
def virtual_hosts(count: int) -> Iterator[list[VirtualHost]]:
    """``count`` namespaces, the i-th on 10.<s>.<i>.0/24 (this machine at .1).

    Names carry a random tag and ``s`` (200 to 249) comes from it, so that two
    runs at once are unlikely to collide.
    """
    tag = uuid.uuid4().hex[:5]
    subnet = 200 + int(tag, 16) % 50
    made: list[int] = []
    try:
        hosts = []
        for index in range(1, count + 1):
            made.append(index)
            hosts.append(_create(index, tag, subnet))
        yield hosts
    finally:
        for index in made:
            _remove(index, tag)
