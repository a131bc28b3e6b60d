"""Mutual TLS for every network connection of a cluster (drivers, nodes, the control plane).

Configured by three variables, which child processes inherit: ``RTML_TLS_CERT`` (this
process's certificate chain, PEM), ``RTML_TLS_KEY`` (its private key, PEM) and ``RTML_TLS_CA``
(the certificate authority that signed every member's certificate). All three or none.

With them, ``connect`` and the servers wrap each TCP connection in TLS before the token
handshake; both ends present a certificate and both require one signed by the CA
(``CERT_REQUIRED`` on both sides). Host names are not checked: members are addressed by IP and
a certificate proves membership, not a name. Connections between a node and its own workers
(socket pairs on one machine) stay plain; they never leave the machine.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import sys
import threading

CERT_ENV = "RTML_TLS_CERT"
KEY_ENV = "RTML_TLS_KEY"
CA_ENV = "RTML_TLS_CA"
_ENVS = (CERT_ENV, KEY_ENV, CA_ENV)

_lock = threading.Lock()
_cache: dict[tuple[bool, tuple[str, str, str]], ssl.SSLContext] = {}
_warned: set[str] = set()


class TLSConfigError(ValueError):
    """The TLS settings are incomplete or their files cannot be loaded."""


def settings() -> tuple[str, str, str] | None:
    """(cert, key, ca) from the environment, or None when TLS is off."""
    values = [os.environ.get(name) or "" for name in _ENVS]
    if not any(values):
        return None
    missing = [name for name, v in zip(_ENVS, values, strict=True) if not v]
    if missing:
        raise TLSConfigError(
            f"TLS needs a certificate, its key and the cluster's CA; {', '.join(missing)} "
            "missing (pass --tls-cert, --tls-key and --tls-ca together)"
        )
    return values[0], values[1], values[2]


def enabled() -> bool:
    return settings() is not None


def configure(cert: str | None, key: str | None, ca: str | None) -> None:
    """Turn TLS on for this process and the processes it starts (sets ``RTML_TLS_*``).

    Raises:
        TLSConfigError: only some of the three are given, or a file does not load.
    """
    given = [cert, key, ca]
    if not any(given):
        return
    if not all(given):
        raise TLSConfigError(
            "TLS needs all of --tls-cert, --tls-key and --tls-ca (or RTML_TLS_CERT, "
            "RTML_TLS_KEY and RTML_TLS_CA)"
        )
    for name, value in zip(_ENVS, given, strict=True):
        assert value is not None
        os.environ[name] = os.path.abspath(value)
    context(server=True)  # fail now, with the reason, rather than at the first connection


def context(server: bool) -> ssl.SSLContext | None:
    """The (cached) context for this side, or None without TLS."""
    conf = settings()
    if conf is None:
        return None
    with _lock:
        ctx = _cache.get((server, conf))
        if ctx is not None:
            return ctx
        cert, key, ca = conf
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_cert_chain(cert, key)
            ctx.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as e:
            raise TLSConfigError(
                f"cannot load the TLS files (cert {cert}, key {key}, CA {ca}): {e}"
            ) from None
        _cache[(server, conf)] = ctx
        return ctx


def wrap(sock: socket.socket, server: bool, timeout: float) -> socket.socket:
    """``sock`` after a TLS handshake that verified the peer's certificate (unchanged without
    TLS). Raises ``ssl.SSLError``/``OSError`` when the handshake fails or times out."""
    ctx = context(server)
    if ctx is None:
        return sock
    tls = ctx.wrap_socket(sock, server_side=server, do_handshake_on_connect=False)
    try:  # the TLS socket now owns the descriptor: close it, not ``sock``, on failure
        tls.settimeout(timeout)
        tls.do_handshake()
    except BaseException:
        tls.close()
        raise
    return tls


def is_tls(sock: socket.socket) -> bool:
    return isinstance(sock, ssl.SSLSocket)


def warn_if_plain(host: str, who: str) -> None:
    """Warn once per process when ``who`` listens on a non-loopback address without TLS."""
    if enabled() or who in _warned:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # "" (every interface) or a host name
        loopback = False
    if loopback:
        return
    _warned.add(who)
    print(  # noqa: T201
        f"rtml {who}: listening on {host or '0.0.0.0'} without TLS; cluster traffic (tasks, "
        "objects) crosses the network unencrypted. Pass --tls-cert/--tls-key/--tls-ca "
        f"(or set {CERT_ENV}/{KEY_ENV}/{CA_ENV}) to encrypt it.",
        file=sys.stderr,
    )


def add_arguments(parser: object) -> None:
    """``--tls-cert/--tls-key/--tls-ca`` on an argparse parser of a process entry point."""
    add = parser.add_argument  # type: ignore[attr-defined]
    add("--tls-cert", default=None, help=f"this member's certificate, PEM (or ${CERT_ENV})")
    add("--tls-key", default=None, help=f"its private key, PEM (or ${KEY_ENV})")
    add("--tls-ca", default=None, help=f"the cluster's CA certificate, PEM (or ${CA_ENV})")
