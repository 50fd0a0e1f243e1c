"""Where PKI files live: VDSM's host layout and the layout of a CA directory.

Only paths; nothing here reads or writes files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PkiPaths:
    """A host (or client) identity in VDSM's layout, as found under ``/etc/pki/vdsm``.

    The same certificate and key serve as the server identity and as the client identity
    towards other hosts; ``cacert`` decides which peers are trusted.
    """

    root: Path

    @property
    def certs_dir(self) -> Path:
        return self.root / "certs"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def cacert(self) -> Path:
        return self.certs_dir / "cacert.pem"

    @property
    def cert(self) -> Path:
        return self.certs_dir / "vdsmcert.pem"

    @property
    def key(self) -> Path:
        return self.keys_dir / "vdsmkey.pem"


@dataclass(frozen=True)
class CaPaths:
    """A certificate authority kept in one directory: ``cacert.pem`` and ``private/cakey.pem``.

    VDSM hosts never hold the CA key (the engine does); ``vdsm-tool pki create-ca`` and the
    development host (``DIR/pki/ca``) keep one here.
    """

    root: Path

    @property
    def cert(self) -> Path:
        return self.root / "cacert.pem"

    @property
    def private_dir(self) -> Path:
        return self.root / "private"

    @property
    def key(self) -> Path:
        return self.private_dir / "cakey.pem"
