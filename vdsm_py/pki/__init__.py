"""PKI for the daemon and its clients: VDSM's file layout, issuing and checking certificates.

- :mod:`vdsm_py.pki.layout` — where the files live (``PkiPaths``, ``CaPaths``).
- :mod:`vdsm_py.pki.store` — reading and writing PEM files atomically with safe modes.
- :mod:`vdsm_py.pki.issue` — CAs, host/client certificates, CSRs, ``ensure_dev_pki``.
- :mod:`vdsm_py.pki.check` — ``check_identity``: is the daemon's identity usable?
- :mod:`vdsm_py.pki.info` — readable facts about a certificate (for ``vdsm-tool pki show``).

Nothing here opens sockets; TLS contexts are built in :mod:`vdsm_py.transport.tls`.
"""
