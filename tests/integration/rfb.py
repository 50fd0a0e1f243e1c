"""A VNC (RFB 3.8) client that only authenticates: proves what a console ticket really does.

``vnc_login(host, port, password)`` speaks to QEMU's VNC server and returns whether the
server demanded a password and whether it accepted ours. VNC authentication encrypts the
server's 16-byte challenge with DES, keyed by the password's first 8 bytes with each byte's
bits reversed (RFC 6143, 7.2.2).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

SECURITY_NONE = 1
SECURITY_VNC_AUTH = 2


@dataclass(frozen=True)
class VncLogin:
    security_types: tuple[int, ...]  # what the server offered
    accepted: bool  # the server let us in
    reason: str = ""  # the server's reason when it refused


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"VNC server closed the connection ({len(data)}/{size} bytes)")
        data += chunk
    return data


def _read_reason(sock: socket.socket) -> str:
    (length,) = struct.unpack(">I", _recv_exact(sock, 4))
    return _recv_exact(sock, length).decode(errors="replace")


def des_response(password: str, challenge: bytes) -> bytes:
    """The VNC authentication response to ``challenge`` for ``password``."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    key = password.encode()[:8].ljust(8, b"\0")
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in key)
    # Three equal keys make triple DES plain DES.
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return encryptor.update(challenge) + encryptor.finalize()


def vnc_login(host: str, port: int, password: str | None, timeout: float = 10.0) -> VncLogin:
    """Connect, pick VNC auth when offered (else None), and report the outcome."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        version = _recv_exact(sock, 12)
        if not version.startswith(b"RFB "):
            raise ConnectionError(f"not a VNC server: {version!r}")
        sock.sendall(b"RFB 003.008\n")
        (count,) = struct.unpack("B", _recv_exact(sock, 1))
        if count == 0:
            return VncLogin((), False, _read_reason(sock))
        types = tuple(_recv_exact(sock, count))
        if SECURITY_VNC_AUTH in types and password is not None:
            sock.sendall(bytes([SECURITY_VNC_AUTH]))
            challenge = _recv_exact(sock, 16)
            sock.sendall(des_response(password, challenge))
        elif SECURITY_NONE in types:
            sock.sendall(bytes([SECURITY_NONE]))
        else:
            return VncLogin(types, False, "no security type we can use")
        (result,) = struct.unpack(">I", _recv_exact(sock, 4))
        if result != 0:
            return VncLogin(types, False, _read_reason(sock))
        return VncLogin(types, True)
