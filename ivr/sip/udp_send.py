"""UDP ``sendto`` for the send clock's thread, without letting go of the GIL.

The send clock runs in its own thread (:class:`ivr.sip.rtp_clock.ThreadSendClock`) so that a busy
event loop cannot make prompts late. Python's ``socket.sendto`` releases the GIL around the
system call; when the loop thread is busy it takes the GIL at once and the clock thread waits a
whole switch interval (5 ms by default) to get it back, for every packet: the "convoy effect"
(CPython bpo-7946). ``bench/send_clock.py`` measured it here: 400 sends a round from a thread
beside a busy thread took 64 ms a round at the median (529 ms at p99) with ``socket.sendto``,
3.6 ms (14.2 ms) with this module.

So on Linux the clock calls libc's ``sendto`` through :class:`ctypes.PyDLL`, which keeps the GIL
for the call: a 172-byte datagram on loopback is a few microseconds in the kernel, and a round
of hundreds of them runs as one piece. Elsewhere (or if libc cannot be loaded) it falls back to
``socket.sendto``: correct, only slower under load.

The address is packed once per destination (:meth:`UdpSender.address`), not per packet.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
import sys
from typing import NamedTuple

_EAGAIN = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ENOBUFS}
"""The kernel's send buffer is full (or a signal came): the frame is dropped, not an error."""


class Destination(NamedTuple):
    """Where a stream's packets go: the (host, port) pair and its packed ``sockaddr``."""

    pair: tuple[str, int]
    """The address as Python's socket functions take it."""
    packed: bytes | None
    """A ``struct sockaddr_in``/``sockaddr_in6`` for libc, None when only Python can send."""


def _libc_sendto() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None  # the sockaddr layout below is Linux's (no sin_len byte)
    try:
        libc = ctypes.PyDLL(None, use_errno=True)
        fn = libc.sendto
    except (OSError, AttributeError):
        return None
    fn.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint32,
    ]
    fn.restype = ctypes.c_ssize_t
    return fn


class UdpSender:
    """Sends datagrams keeping the GIL where it can (see the module doc)."""

    def __init__(self, *, use_libc: bool = True) -> None:
        self._sendto = _libc_sendto() if use_libc else None

    @property
    def keeps_gil(self) -> bool:
        """Whether sends go through libc with the GIL held (False: ``socket.sendto``)."""
        return self._sendto is not None

    def address(self, host: str, port: int) -> Destination:
        """Pack (host, port) once; a host that is not a numeric IP is sent to by Python."""
        packed: bytes | None = None
        if self._sendto is not None:
            try:
                if ":" in host:
                    raw = socket.inet_pton(socket.AF_INET6, host)
                    packed = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0)
                    packed += raw + struct.pack("=I", 0)
                else:
                    raw = socket.inet_pton(socket.AF_INET, host)
                    packed = struct.pack("=H", socket.AF_INET) + struct.pack("!H", port)
                    packed += raw + bytes(8)
            except (OSError, ValueError, struct.error):
                packed = None
        return Destination((host, port), packed)

    def send(self, sock: socket.socket, data: bytes, to: Destination) -> int:
        """Send `data` from `sock` to `to`: 0 when sent, else the error number.

        ``EAGAIN`` and friends (a full send buffer) come back as their number like any other:
        the caller decides that a full buffer drops the frame (:func:`is_full`).
        """
        fn = self._sendto
        if fn is None or to.packed is None:
            try:
                sock.sendto(data, to.pair)
            except OSError as exc:
                return exc.errno or errno.EIO
            return 0
        if fn(sock.fileno(), data, len(data), 0, to.packed, len(to.packed)) < 0:
            return ctypes.get_errno() or errno.EIO
        return 0


def is_full(error: int) -> bool:
    """Whether a send error only means "the kernel's buffer is full right now"."""
    return error in _EAGAIN


def error_name(error: int) -> str:
    """``ECONNREFUSED`` for 111, and so on (the number when it has no name)."""
    return errno.errorcode.get(error, str(error))
