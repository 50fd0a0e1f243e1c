"""``vdsmd --dev DIR``: a self-contained development host rooted at one directory.

Everything lives under DIR: ``pki/`` (a CA and a host certificate, made if missing),
``state/``, ``run/``, ``hooks/`` and ``vdsm_py.conf``, which this module writes once and
then respects (an admin may edit it); ``--port`` updates the port recorded there, so that
``vdsm-client --dev DIR`` always finds the daemon. The host listens on loopback only and
uses libvirt's embedded test driver, so it needs no root, no libvirtd and no network.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

from vdsm_py.config import Config, load

CONF_NAME = "vdsm_py.conf"


def dev_settings(root: Path) -> dict[str, dict[str, str]]:
    """The settings a development host starts with (as INI strings)."""
    return {
        "daemon": {
            "state_dir": str(root / "state"),
            "run_dir": str(root / "run"),
        },
        "addresses": {"host": "127.0.0.1", "port": "54321"},
        "pki": {"dir": str(root / "pki")},
        "hooks": {"dir": str(root / "hooks")},
        "host": {"stats_interval": "5"},
        "storage": {"data_center": str(root / "data-center")},
        # libvirt's embedded test driver: no libvirtd, no root, deterministic.
        # Test-driver guests run no agent: call them Up after 2 s, not VDSM's 60.
        "virt": {"libvirt_uri": "test:///default", "powering_up_timeout": "2"},
    }


def prepare(root: Path, port: int | None = None) -> Config:
    """Create DIR's layout, PKI and config file as needed; return the loaded config."""
    from vdsm_py.pki.issue import ensure_dev_pki

    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    conf_path = root / CONF_NAME
    parser = configparser.ConfigParser(interpolation=None)
    if conf_path.exists():
        parser.read(conf_path)
    else:
        parser.read_dict(dev_settings(root))
    if port is not None:
        if not parser.has_section("addresses"):
            parser.add_section("addresses")
        parser.set("addresses", "port", str(port))
    if port is not None or not conf_path.exists():
        tmp = conf_path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            parser.write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, conf_path)
    (root / "hooks").mkdir(exist_ok=True)
    ensure_dev_pki(root / "pki", hostnames=["localhost"], ips=["127.0.0.1", "::1"])
    return load(conf_path)


def read_port(root: Path) -> int | None:
    """The port a development host at ``root`` listens on (for the CLI)."""
    parser = configparser.ConfigParser(interpolation=None)
    if not parser.read(root / CONF_NAME):
        return None
    return parser.getint("addresses", "port", fallback=None)
