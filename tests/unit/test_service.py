import os
import socket
import subprocess
import sys

import pytest

from vdsm_py.service import sdnotify
from vdsm_py.service.instance_lock import AlreadyRunning, InstanceLock


def test_second_instance_is_refused_and_names_the_holder(tmp_path):
    first = InstanceLock(tmp_path / "run" / "vdsmd.lock")
    first.acquire()
    try:
        with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
            InstanceLock(tmp_path / "run" / "vdsmd.lock").acquire()
    finally:
        first.release()
    again = InstanceLock(tmp_path / "run" / "vdsmd.lock")
    again.acquire()
    again.release()


def test_lock_of_a_killed_process_is_free(tmp_path):
    path = tmp_path / "vdsmd.lock"
    code = (
        "import sys, time; from pathlib import Path;"
        "from vdsm_py.service.instance_lock import InstanceLock;"
        f"InstanceLock(Path({str(path)!r})).acquire(); print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"locked"
        with pytest.raises(AlreadyRunning):
            InstanceLock(path).acquire()
        proc.kill()
        proc.wait()
        lock = InstanceLock(path)
        lock.acquire()
        lock.release()
    finally:
        proc.kill()
        proc.wait()


def test_notifications_reach_the_notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        sdnotify.ready("Serving")
        msg = sock.recv(4096).decode()
        assert "READY=1" in msg and "STATUS=Serving" in msg
        sdnotify.stopping()
        assert "STOPPING=1" in sock.recv(4096).decode()
    finally:
        sock.close()


def test_watchdog_interval_is_half_of_what_systemd_asks(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert sdnotify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert sdnotify.watchdog_interval() is None
