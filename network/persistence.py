"""The agent's network configuration on disk: the running one and the persisted (safe) one.

Owns two JSON files under ``<state_dir>/network/``: ``running.json``, what the agent has
set up (written after every successful change, "unsaved"), and ``safe.json``, what
``Host.setSafeNetworkConfig`` persisted and what is restored at start-up. Every write is
atomic (temporary file, fsync, rename, fsync of the directory), so a crash leaves the old
file or the new one, never a torn one. Must not touch the kernel.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from network.model import NetConfig

log = logging.getLogger("vdsm_py.network")


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class ConfigStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "network"
        self.running_path = self.dir / "running.json"
        self.safe_path = self.dir / "safe.json"

    def _read(self, path: Path) -> NetConfig:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return NetConfig()
        return NetConfig.from_wire(data)

    def _write(self, path: Path, config: NetConfig) -> None:
        body = json.dumps(config.to_wire(), indent=2, sort_keys=True) + "\n"
        atomic_write(path, body.encode())

    def running(self) -> NetConfig:
        return self._read(self.running_path)

    def safe(self) -> NetConfig:
        return self._read(self.safe_path)

    def has_safe(self) -> bool:
        return self.safe_path.exists()

    def save_running(self, config: NetConfig) -> None:
        self._write(self.running_path, config)

    def persist(self, config: NetConfig) -> None:
        """Make ``config`` the safe configuration restored at start-up."""
        self._write(self.safe_path, config)
        log.info("network configuration persisted: networks %s, bonds %s",
                 sorted(config.networks), sorted(config.bondings))
