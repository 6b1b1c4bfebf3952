"""ivr.sip.udp_send: the send clock's sendto, through libc with the GIL held, on real sockets."""

from __future__ import annotations

import errno
import socket
import sys

import pytest

from ivr.sip.udp_send import UdpSender, error_name, is_full

LOOPBACK = "127.0.0.1"


def pair(family: socket.AddressFamily, host: str) -> tuple[socket.socket, socket.socket]:
    """A non-blocking sender and a receiver bound on `host`."""
    receiver = socket.socket(family, socket.SOCK_DGRAM)
    receiver.bind((host, 0))
    receiver.settimeout(2.0)
    sender = socket.socket(family, socket.SOCK_DGRAM)
    sender.bind((host, 0))
    sender.setblocking(False)
    return sender, receiver


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libc path is Linux's")
def test_on_linux_the_clock_sends_through_libc_keeping_the_gil() -> None:
    assert UdpSender().keeps_gil
    assert not UdpSender(use_libc=False).keeps_gil


@pytest.mark.parametrize("use_libc", [True, False], ids=["libc", "python"])
def test_a_datagram_arrives_whole_from_the_senders_port(use_libc: bool) -> None:
    sender, receiver = pair(socket.AF_INET, LOOPBACK)
    with sender, receiver:
        udp = UdpSender(use_libc=use_libc)
        port = receiver.getsockname()[1]
        to = udp.address(LOOPBACK, port)
        assert (to.packed is not None) == udp.keeps_gil
        payload = bytes(range(256)) * 2
        assert udp.send(sender, payload, to) == 0
        data, source = receiver.recvfrom(4096)
        assert data == payload
        assert source == sender.getsockname()  # symmetric RTP: it leaves from the call's port


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        sender, receiver = pair(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with sender, receiver:
        udp = UdpSender()
        to = udp.address("::1", receiver.getsockname()[1])
        assert udp.send(sender, b"\x80\x00rtp", to) == 0
        assert receiver.recv(64) == b"\x80\x00rtp"


def test_a_host_name_goes_through_python() -> None:
    sender, receiver = pair(socket.AF_INET, LOOPBACK)
    with sender, receiver:
        udp = UdpSender()
        to = udp.address("localhost", receiver.getsockname()[1])
        assert to.packed is None  # not a numeric address: no sockaddr of our own
        assert udp.send(sender, b"x", to) == 0
        assert receiver.recv(8) == b"x"


@pytest.mark.parametrize("use_libc", [True, False], ids=["libc", "python"])
def test_a_closed_socket_is_an_error_number_not_an_exception(use_libc: bool) -> None:
    sender, receiver = pair(socket.AF_INET, LOOPBACK)
    with receiver:
        udp = UdpSender(use_libc=use_libc)
        to = udp.address(LOOPBACK, receiver.getsockname()[1])
        sender.close()
        error = udp.send(sender, b"late", to)
        assert error == errno.EBADF
        assert error_name(error) == "EBADF"
        assert not is_full(error)


def test_error_names_and_what_counts_as_a_full_buffer() -> None:
    assert error_name(errno.ECONNREFUSED) == "ECONNREFUSED"
    assert error_name(99999) == "99999"
    assert is_full(errno.EAGAIN)
    assert is_full(errno.ENOBUFS)
