"""A cluster over mutual TLS: a driver, two nodes and the control plane; peers without a
certificate of the cluster's CA are refused while the cluster keeps serving."""

from __future__ import annotations

import socket
import ssl

import numpy as np
import pytest

pytest.importorskip("cryptography", reason="TLS tests need the tls extra (cryptography)")

import rtml
from rtml._transport import _auth, _tls
from rtml.testing import Cluster
from tls_certs import make_ca, make_member, make_self_signed


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    ca_pem, ca = make_ca(d)
    member = make_member(d, "member", ca)
    other_ca_pem, other_ca = make_ca(d, "other-ca")
    return {
        "dir": d,
        "ca": ca_pem,
        "member": member,
        "other_ca": other_ca_pem,
        "wrong_ca": make_member(d, "stranger", other_ca),
        "self_signed": make_self_signed(d, "self"),
    }


@pytest.fixture(scope="module")
def tls_cluster(pki):
    mp = pytest.MonkeyPatch()
    cert, key = pki["member"]
    mp.setenv(_tls.CERT_ENV, cert)
    mp.setenv(_tls.KEY_ENV, key)
    mp.setenv(_tls.CA_ENV, pki["ca"])
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"a": 1}})
    try:
        c.add_node(num_cpus=1, resources={"b": 1})
        c.connect()
        yield c
    finally:
        c.shutdown()
        mp.undo()


@rtml.remote
def node_of(x=None):
    return rtml.get_runtime_context().get_node_id()


@rtml.remote
def ones(n):
    return np.ones(n, dtype=np.float64)


@rtml.remote
def total(a):
    return float(a.sum()), rtml.get_runtime_context().get_node_id()


def _serves(c: Cluster) -> None:
    a = node_of.options(resources={"a": 1}).remote()
    b = node_of.options(resources={"b": 1}).remote()
    assert rtml.get([a, b], timeout=60) == [c.head_node.node_id, c.worker_nodes[0].node_id]


def test_cluster_runs_over_tls(tls_cluster):
    _serves(tls_cluster)
    # An object made on one node and used on the other crosses a TLS link between nodes.
    big = ones.options(resources={"a": 1}).remote(1 << 20)  # 8 MiB
    s, where = rtml.get(total.options(resources={"b": 1}).remote(big), timeout=60)
    assert s == float(1 << 20)
    assert where == tls_cluster.worker_nodes[0].node_id
    assert float(rtml.get(big, timeout=60).sum()) == float(1 << 20)  # and on to the driver


def _connections_are_tls(c: Cluster) -> bool:
    sock = _auth.connect(c.head_node.address, c.token)
    try:
        return isinstance(sock, ssl.SSLSocket) and sock.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        sock.close()


def test_connections_use_tls(tls_cluster):
    assert _connections_are_tls(tls_cluster)


def _greeted(address: str, ctx: ssl.SSLContext | None) -> bool:
    """Whether a peer presenting ``ctx``'s certificate (plain TCP when None) gets as far as the
    token greeting; a refused peer sees a TLS alert or a closed connection instead."""
    host, port = _auth.split_address(address)
    raw = socket.create_connection((host, port), timeout=10)
    sock: socket.socket = raw
    try:
        if ctx is not None:
            sock = ctx.wrap_socket(raw)
        else:
            raw.sendall(b"\0" * 64)  # a plain peer answering the greeting it will never get
        sock.settimeout(10)
        data = b""
        while len(data) < len(_auth.MAGIC):
            chunk = sock.recv(64)
            if not chunk:
                break
            data += chunk
        return data.startswith(_auth.MAGIC)
    except (ssl.SSLError, ConnectionError, TimeoutError):
        return False
    finally:
        sock.close()


def _client_ctx(ca: str, cert: tuple[str, str] | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(ca)
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


@pytest.mark.parametrize("peer", ["none", "self_signed", "wrong_ca", "plain"])
def test_peers_without_a_valid_certificate_are_refused(tls_cluster, pki, peer):
    c = tls_cluster
    ctx = {
        "none": lambda: _client_ctx(pki["ca"], None),
        "self_signed": lambda: _client_ctx(pki["ca"], pki["self_signed"]),
        "wrong_ca": lambda: _client_ctx(pki["ca"], pki["wrong_ca"]),
        "plain": lambda: None,
    }[peer]()
    for address in (c.head_node.address, c.worker_nodes[0].address, c.address):
        assert not _greeted(address, ctx), f"{address} greeted a peer with {peer}"
    # A member's certificate does get the greeting: the refusals above are the certificate's.
    assert _greeted(c.address, _client_ctx(pki["ca"], pki["member"]))
    _serves(c)


def test_client_refuses_a_server_of_another_ca(tls_cluster, pki, monkeypatch):
    """The check is mutual: a driver whose CA did not sign the node's certificate refuses it."""
    monkeypatch.setenv(_tls.CA_ENV, pki["other_ca"])
    with pytest.raises(_auth.AuthError, match="TLS handshake failed"):
        _auth.connect(tls_cluster.head_node.address, tls_cluster.token)


def test_partial_tls_settings_are_an_error(monkeypatch, pki):
    monkeypatch.setenv(_tls.CERT_ENV, pki["member"][0])
    monkeypatch.delenv(_tls.KEY_ENV, raising=False)
    monkeypatch.delenv(_tls.CA_ENV, raising=False)
    with pytest.raises(_tls.TLSConfigError, match="RTML_TLS_KEY, RTML_TLS_CA missing"):
        _tls.settings()
    with pytest.raises(_tls.TLSConfigError, match="all of --tls-cert"):
        _tls.configure(pki["member"][0], None, None)
