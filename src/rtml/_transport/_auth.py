"""Cluster tokens and the handshake every network connection makes before anything is unpickled.

::

    server                                   client
    ── b"RTML1" + nonce_s (32 B) ───────────▶
    ◀─ HMAC(token, b"c" + nonce_s) + nonce_c ──   (the client proves it holds the token)
    ── HMAC(token, b"s" + nonce_c) ──────────▶    (the server proves it too)

With ``RTML_TLS_CERT/KEY/CA`` set (``_tls``), a mutual TLS handshake comes first and the
exchange above runs inside it; the peer must then hold both a certificate of the cluster's CA
and the token.

Only raw bytes of fixed sizes cross the socket until both proofs check out, so a peer without
the token never reaches ``pickle.loads``. A handshake that fails or stalls closes that one
connection (``AuthError``); servers log it and go on serving.

Tokens live in a per-user directory with owner-only permissions (``/tmp/rtml-<uid>`` or
``$RTML_STATE_DIR``): a driver or node of the same user on the same machine finds the token of a
cluster from its address; others pass it with ``--token`` or ``RTML_TOKEN``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket
import ssl
import time

from rtml._transport import _tls

MAGIC = b"RTML1"
_NONCE = 32
_MAC = 32
TOKEN_ENV = "RTML_TOKEN"
_SLOW = (
    "the peer was too slow to authenticate (if one end uses TLS, both must: RTML_TLS_CERT, "
    "RTML_TLS_KEY, RTML_TLS_CA)"
)


class AuthError(ConnectionError):
    """The peer did not prove it holds the cluster token (or spoke something else entirely)."""


# ---------------------------------------------------------------------------- token files
def state_dir() -> str:
    """This user's directory for cluster tokens and addresses (created 0700)."""
    path = os.environ.get("RTML_STATE_DIR") or os.path.join("/tmp", f"rtml-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(
            f"{path} must belong to you and be private (chmod 700); it holds cluster tokens"
        )
    return path


def token_file(address: str) -> str:
    host, _, port = address.rpartition(":")
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in host)
    return os.path.join(state_dir(), f"token-{safe}-{port}")


def write_token(address: str, token: bytes) -> str:
    """Store ``token`` for ``address`` readable by this user only; returns the file's path."""
    path = token_file(address)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, token.hex().encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def remove_token(address: str) -> None:
    try:
        os.unlink(token_file(address))
    except FileNotFoundError:
        pass


def new_token() -> bytes:
    return secrets.token_bytes(32)


def parse_token(text: str) -> bytes:
    text = text.strip()
    try:
        token = bytes.fromhex(text)
    except ValueError:
        raise ValueError("a cluster token is 64 hex digits (as `rtml start --head` prints)")
    if len(token) < 16:
        raise ValueError("a cluster token must be at least 16 bytes (32 hex digits)")
    return token


def find_token(address: str, given: str | bytes | None = None) -> bytes:
    """The token for ``address``: ``given``, else ``$RTML_TOKEN``, else this user's token file.

    Raises:
        AuthError: none of them is there; the message says how to pass it.
    """
    if isinstance(given, bytes):
        return given
    if given:
        return parse_token(given)
    env = os.environ.get(TOKEN_ENV)
    if env:
        return parse_token(env)
    try:
        with open(token_file(address)) as f:
            return parse_token(f.read())
    except FileNotFoundError:
        raise AuthError(
            f"no token for the cluster at {address}: pass token=... (or --token), or set "
            f"{TOKEN_ENV}; `rtml start --head` printed it on the head machine"
        ) from None


# ---------------------------------------------------------------------------- handshake
def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AuthError(_SLOW)
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(n - len(buf))
        except TimeoutError:
            raise AuthError(_SLOW) from None
        except OSError as e:
            raise AuthError(f"connection failed during authentication: {e}") from None
        if not chunk:
            raise AuthError("the peer closed the connection during authentication")
        buf += chunk
    return bytes(buf)


def _send(sock: socket.socket, data: bytes, deadline: float) -> None:
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    try:
        sock.sendall(data)
    except OSError as e:
        raise AuthError(f"connection failed during authentication: {e}") from None


def _mac(token: bytes, role: bytes, nonce: bytes) -> bytes:
    return hmac.new(token, role + nonce, hashlib.sha256).digest()


def serve_handshake(sock: socket.socket, token: bytes, timeout: float = 5.0) -> socket.socket:
    """Server side; returns the connection (wrapped in TLS when ``RTML_TLS_*`` are set) once
    the client proved its certificate and the token (socket left blocking)."""
    deadline = time.monotonic() + timeout
    sock = _tls_wrap(sock, True, timeout)
    try:
        _serve_token(sock, token, deadline)
    except BaseException:
        sock.close()  # a TLS socket owns the descriptor now: the caller's close would miss it
        raise
    return sock


def _serve_token(sock: socket.socket, token: bytes, deadline: float) -> None:
    nonce = secrets.token_bytes(_NONCE)
    _send(sock, MAGIC + nonce, deadline)
    answer = _recv_exact(sock, _MAC + _NONCE, deadline)
    if not hmac.compare_digest(answer[:_MAC], _mac(token, b"c", nonce)):
        raise AuthError("the peer does not hold the cluster token")
    _send(sock, _mac(token, b"s", answer[_MAC:]), deadline)
    sock.settimeout(None)


def _tls_wrap(sock: socket.socket, server: bool, timeout: float) -> socket.socket:
    try:
        return _tls.wrap(sock, server, timeout)
    except (ssl.SSLError, OSError) as e:
        raise AuthError(f"TLS handshake failed: {e}") from None


def client_handshake(sock: socket.socket, token: bytes, timeout: float = 5.0) -> socket.socket:
    """Client side; returns the connection (in TLS when configured) once the server proved
    its certificate and the token too."""
    deadline = time.monotonic() + timeout
    sock = _tls_wrap(sock, False, timeout)
    try:
        _client_token(sock, token, deadline)
    except BaseException:
        sock.close()
        raise
    return sock


def _client_token(sock: socket.socket, token: bytes, deadline: float) -> None:
    hello = _recv_exact(sock, len(MAGIC) + _NONCE, deadline)
    if hello[: len(MAGIC)] != MAGIC:
        raise AuthError("the server is not an rtml cluster (bad greeting)")
    nonce = secrets.token_bytes(_NONCE)
    _send(sock, _mac(token, b"c", hello[len(MAGIC) :]) + nonce, deadline)
    proof = _recv_exact(sock, _MAC, deadline)
    if not hmac.compare_digest(proof, _mac(token, b"s", nonce)):
        raise AuthError("the server does not hold the cluster token")
    sock.settimeout(None)


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"an address is HOST:PORT, got {address!r}")
    return host, int(port)


def connect(address: str, token: bytes, timeout: float = 10.0) -> socket.socket:
    """Open a TCP connection to ``address`` and authenticate both ends.

    Raises:
        ConnectionError: nothing listens there, or the handshake failed (``AuthError``).
    """
    host, port = split_address(address)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise ConnectionError(f"cannot connect to {address}: {e}") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = client_handshake(sock, token, timeout)
    except BaseException:
        sock.close()
        raise
    return sock
