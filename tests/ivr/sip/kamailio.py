"""Run Debian's Kamailio 5.6 on loopback: the upstream registrar and proxy in front of the hotline.

The config is written to a temporary folder (with the ctl socket and the pid file), Kamailio
runs in the foreground (``-DD -E``) with its log in ``kamailio.log`` there, the helper waits
until it answers OPTIONS and always stops it. Registration can be digest-authenticated
without any database: the ``auth`` module's ``pv_www_authenticate`` checks a password held in
the config (one user), with ``qop=auth`` and nonce-count checking (``nonce_count``) on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

KAMAILIO = "/usr/sbin/kamailio"
MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")

CONFIG = """#!KAMAILIO
# Upstream registrar + proxy for the hotline tests (written by tests/ivr/sip/kamailio.py).
@DEFINES@
debug=@DEBUG@
log_stderror=yes
children=2
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:@PORT@
alias="127.0.0.1:@PORT@"
mpath="@MODULES@"

loadmodule "ctl.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "auth.so"

modparam("ctl", "binrpc", "unix:@CTL@")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", @MIN_EXPIRES@)
modparam("registrar", "max_expires", @MAX_EXPIRES@)
modparam("rr", "append_fromtag", 1)
# Digest: qop=auth and the nonce count tracked, so a replayed or non-increasing nc is refused.
modparam("auth", "secret", "@SECRET@")
modparam("auth", "qop", "auth")
modparam("auth", "nonce_count", 1)
modparam("auth", "nonce_expire", @NONCE_EXPIRE@)

request_route {
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    if (is_method("OPTIONS") && uri == myself && $rU == $null) {
        sl_send_reply("200", "OK");
        exit;
    }
    if (has_totag()) {
        # In-dialog (ACK, BYE, re-INVITE): follow the Route set we recorded.
        if (loose_route()) {
            xlog("L_INFO", "in-dialog $rm $ci from $si:$sp to $ru\\n");
            t_relay();
            exit;
        }
        if (is_method("ACK") && t_check_trans()) {
            t_relay();
        }
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) {
            t_relay();
        }
        exit;
    }
    t_check_trans();
    if (is_method("REGISTER")) {
        route(REGISTRAR);
        exit;
    }
    remove_hf("Route");
    if (is_method("INVITE")) {
        record_route();
    }
    if (!lookup("location")) {
        sl_send_reply("404", "Not Found");
        exit;
    }
    xlog("L_INFO", "relay $rm $ci to $ru\\n");
    t_relay();
}

route[REGISTRAR] {
    if (!t_newtran()) {
        sl_reply_error();
        exit;
    }
#!ifdef WITH_AUTH
    $var(password) = "@PASSWORD@";
    if (!pv_www_authenticate("@REALM@", "$var(password)", "0")) {
        $var(rc) = $rc;
        xlog("L_INFO", "register challenged $tU rc=$var(rc) cseq=$cs\\n");
        if ($var(rc) == -4) {
            # an expired nonce: RFC 2617 stale=true (Kamailio sets it only when told to)
            www_challenge("@REALM@", "17");
        } else {
            www_challenge("@REALM@", "1");
        }
        exit;
    }
    if ($au != "@USER@" || $tU != "@USER@") {
        t_reply("403", "Forbidden");
        exit;
    }
    consume_credentials();
#!endif
    if (!save("location")) {
        sl_reply_error();
        exit;
    }
    xlog("L_INFO", "registered $tU contact $ct cseq $cs auth [$hdr(Authorization)]\\n");
}
"""


def kamailio_available() -> bool:
    """Whether Debian's kamailio and the modules the config loads are installed."""
    return Path(KAMAILIO).exists() and (MODULES / "registrar.so").exists()


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class KamailioAuth:
    """The one user allowed to register, with its digest password."""

    user: str
    """The user (the To user and the digest username must both be this)."""
    password: str
    """Its password (plain; Kamailio computes HA1 itself)."""
    realm: str = "hotline.test"
    """The digest realm of the challenges."""


def kamailio_config(
    port: int,
    ctl: Path,
    *,
    auth: KamailioAuth | None = None,
    min_expires: int = 1,
    max_expires: int = 3600,
    nonce_expire: int = 300,
    debug: int = 2,
) -> str:
    """The registrar + proxy config; ``auth`` None registers anyone without a challenge."""
    values = {
        "@PORT@": str(port),
        "@CTL@": str(ctl),
        "@MODULES@": f"{MODULES}/",
        "@DEBUG@": str(debug),
        "@MIN_EXPIRES@": str(min_expires),
        "@MAX_EXPIRES@": str(max_expires),
        "@NONCE_EXPIRE@": str(nonce_expire),
        "@SECRET@": uuid.uuid4().hex,
        "@DEFINES@": "#!define WITH_AUTH" if auth is not None else "",
        "@USER@": auth.user if auth else "",
        "@PASSWORD@": auth.password if auth else "",
        "@REALM@": auth.realm if auth else "none",
    }
    text = CONFIG
    for key, value in values.items():
        text = text.replace(key, value)
    return text


@dataclass
class Kamailio:
    """A running Kamailio."""

    address: tuple[str, int]
    """Its SIP address (UDP)."""
    folder: Path
    """Its config, pid file, ctl socket and log."""
    process: subprocess.Popen[bytes]
    """The foreground process (its own session, so its children go with it)."""

    @property
    def log_path(self) -> Path:
        return self.folder / "kamailio.log"

    def log(self) -> str:
        """What Kamailio wrote so far (stderr; xlog lines included)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def options_ok(self, timeout: float = 0.3) -> bool:
        """Whether it answers an OPTIONS with 200 right now."""
        return options_ping(self.address, timeout)


def options_ping(address: tuple[str, int], timeout: float = 0.3) -> bool:
    """Send one OPTIONS to ``address``; True on a 200."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        port = sock.getsockname()[1]
        branch = f"z9hG4bK{uuid.uuid4().hex[:16]}"
        request = (
            f"OPTIONS sip:{address[0]}:{address[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1:{port}>;tag={branch[-8:]}\r\n"
            f"To: <sip:{address[0]}:{address[1]}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        try:
            sock.sendto(request, address)
            data, _ = sock.recvfrom(65535)
        except OSError:  # timeout, or ICMP port unreachable
            return False
        return data.startswith(b"SIP/2.0 200")


@contextlib.contextmanager
def running_kamailio(
    folder: Path,
    *,
    port: int | None = None,
    auth: KamailioAuth | None = None,
    within: float = 10.0,
    **config: int,
) -> Iterator[Kamailio]:
    """Start Kamailio on 127.0.0.1 (a free port unless given), wait for OPTIONS 200, yield it,
    and always stop it (SIGTERM to its process group, SIGKILL if it lingers)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_udp_port()
    cfg = folder / "kamailio.cfg"
    pid = folder / "kamailio.pid"
    ctl = folder / "kamailio_ctl"
    cfg.write_text(kamailio_config(port, ctl, auth=auth, **config), encoding="ascii")
    check = subprocess.run(
        [KAMAILIO, "-c", "-f", str(cfg)], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        raise RuntimeError(f"kamailio refuses the config:\n{check.stderr[-3000:]}")
    with (folder / "kamailio.log").open("wb") as log:
        process = subprocess.Popen(
            [KAMAILIO, "-f", str(cfg), "-DD", "-E", "-P", str(pid), "-w", str(folder)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with all its children
        )
    kamailio = Kamailio(("127.0.0.1", port), folder, process)
    try:
        deadline = time.monotonic() + within
        while not kamailio.options_ok():
            if process.poll() is not None:
                raise RuntimeError(f"kamailio exited ({process.returncode}):\n{kamailio.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"kamailio did not answer OPTIONS:\n{kamailio.log()}")
            time.sleep(0.05)
        yield kamailio
    finally:
        stop_kamailio(process)


def stop_kamailio(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Stop the Kamailio we started: its process group (it forks workers), by its id."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(grace)
    # Workers may outlive the main process for a moment; the group id is still ours.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
