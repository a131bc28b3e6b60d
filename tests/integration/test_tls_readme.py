"""The README's security example runs as written (a cluster over mutual TLS)."""

from __future__ import annotations

import pytest

pytest.importorskip("cryptography", reason="the example needs the tls extra (cryptography)")

from rtml._transport import _tls


def test_readme_security_example(capfd, monkeypatch):
    from conftest import readme_block

    for name in (_tls.CERT_ENV, _tls.KEY_ENV, _tls.CA_ENV):
        monkeypatch.delenv(name, raising=False)
    exec(compile(readme_block("## Security"), "README-security", "exec"), {})
    assert "[0, 1, 4, 9]" in capfd.readouterr().out
