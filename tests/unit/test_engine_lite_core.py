"""engine-lite's pure parts and its database: migrations, repository, state machine,
scheduler, certificate renewal decisions, CLI parsing. No daemons here."""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "contrib" / "engine-lite"))

from engine_lite import cli, db
from engine_lite.errors import AlreadyExists, InvalidInput, NoHostAvailable, NotFound
from engine_lite.models import Host, HostStatus, Vm
from engine_lite.pki import EngineCa, needs_renewal
from engine_lite.repo import SqliteRepository
from engine_lite.scheduler import Candidate, Limits, choose_host
from engine_lite.states import Trigger, next_status

S = HostStatus
SD1, SD2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"


def host(name: str, mem: int = 4096, status: S = S.UP, **kw: object) -> Host:
    return Host(name, name, "c", "127.0.0.1", 1000 + len(name), status=status, mem_mib=mem,
                **kw)  # type: ignore[arg-type]


# -- database ---------------------------------------------------------------------------


def test_migrations_apply_in_order_and_are_recorded(tmp_path: Path) -> None:
    conn = db.open_db(tmp_path / "e.db")
    assert db.schema_version(conn) == len(db.MIGRATIONS)
    columns = {r["name"] for r in conn.execute("PRAGMA table_info(hosts)")}
    assert {"prev_cert_serial", "networks"} <= columns
    conn.close()
    assert db.schema_version(db.open_db(tmp_path / "e.db")) == len(db.MIGRATIONS)


def test_database_from_a_newer_engine_is_refused(tmp_path: Path) -> None:
    conn = db.open_db(tmp_path / "e.db")
    conn.execute("INSERT INTO schema_version (version) VALUES (99)")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this engine-lite"):
        db.open_db(tmp_path / "e.db")


def test_failed_migration_leaves_the_previous_version(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "MIGRATIONS", (*db.MIGRATIONS, "CREATE TABLE x (a); BROKEN SQL"))
    with pytest.raises(sqlite3.OperationalError):
        db.open_db(tmp_path / "e.db")
    conn = sqlite3.connect(tmp_path / "e.db")
    assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == \
        len(db.MIGRATIONS) - 1
    assert not conn.execute("SELECT name FROM sqlite_master WHERE name = 'x'").fetchall()


def test_repository_round_trips_and_refuses_duplicates(tmp_path: Path) -> None:
    repo = SqliteRepository(tmp_path / "e.db")
    cluster = repo.default_cluster()
    assert repo.default_cluster() == cluster
    h = Host("id1", "h1", cluster.id, "127.0.0.1", 54321, networks=["ovirtmgmt"],
             stats={"memFree": 5})
    repo.add_host(h)
    with pytest.raises(AlreadyExists, match="host named 'h1'"):
        repo.add_host(Host("id2", "h1", cluster.id, "127.0.0.2", 1))
    with pytest.raises(AlreadyExists, match="127.0.0.1:54321 is already registered"):
        repo.add_host(Host("id3", "h3", cluster.id, "127.0.0.1", 54321))
    h.status, h.maintenance = S.NON_RESPONSIVE, True
    h.fence_agent = ["/usr/sbin/fence_x", "--ip", "10.0.0.9"]
    h.storage_domains = [SD1]
    repo.save_host(h)
    assert repo.find_host("h1") == h
    vm = Vm("v1", "vm1", cluster.id, 512, nics=[{"network": "n"}], host_id="id1",
            disks=[{"domainID": SD1, "imageID": SD2, "volumeID": SD2, "format": "cow"}])
    repo.add_vm(vm)
    assert repo.find_vm("v1") == vm
    with pytest.raises(AlreadyExists, match="VM named 'vm1'"):
        repo.add_vm(Vm("v2", "vm1", cluster.id, 1))
    repo.remove_host("id1")  # its VMs lose their host, they are not deleted
    assert repo.find_vm("vm1").host_id is None
    with pytest.raises(NotFound, match="no host named 'h1'"):
        repo.find_host("h1")
    for i in range(5):
        repo.add_event("info", "k", f"m{i}")
    assert [e.message for e in repo.list_events(limit=2)] == ["m3", "m4"]
    repo.close()


# -- host states ------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "trigger", "end"), [
    (S.INSTALLING, Trigger.CONNECTED, S.INITIALIZING),
    (S.INITIALIZING, Trigger.INITIALIZED, S.UP),
    (S.UP, Trigger.LOST, S.CONNECTING),
    (S.CONNECTING, Trigger.GRACE_EXPIRED, S.NON_RESPONSIVE),
    (S.NON_RESPONSIVE, Trigger.CONNECTED, S.INITIALIZING),
    (S.CONNECTING, Trigger.CONNECTED, S.INITIALIZING),
    (S.UP, Trigger.ENGINE_STARTED, S.CONNECTING),  # Up was the old session's
    (S.INITIALIZING, Trigger.ENGINE_STARTED, S.CONNECTING),
])
def test_host_state_transitions(start: S, trigger: Trigger, end: S) -> None:
    assert next_status(start, trigger) == end


@pytest.mark.parametrize(("start", "trigger"), [
    (S.INSTALLING, Trigger.LOST),  # not joined yet: stays Installing
    (S.UP, Trigger.GRACE_EXPIRED),
    (S.NON_RESPONSIVE, Trigger.LOST),
    (S.CONNECTING, Trigger.LOST),
    (S.NON_RESPONSIVE, Trigger.ENGINE_STARTED),  # stays so until a session proves otherwise
    (S.INSTALLING, Trigger.ENGINE_STARTED),
])
def test_host_state_ignores_triggers_that_change_nothing(start: S, trigger: Trigger) -> None:
    assert next_status(start, trigger) is None


def test_maintenance_shows_only_while_connected() -> None:
    h = host("h", maintenance=True)
    assert h.effective_status == S.MAINTENANCE
    h.status = S.CONNECTING
    assert h.effective_status == S.CONNECTING


# -- scheduling -------------------------------------------------------------------------


def test_even_distribution_prefers_fewest_vms_and_power_saving_packs() -> None:
    vm = Vm("v", "v", "c", 512)
    busy, idle = Candidate(host("busy"), 2048, 2), Candidate(host("idle"), 0, 0)
    limits = Limits(100, 256)
    assert choose_host(vm, [busy, idle], "even_distribution", limits).name == "idle"
    assert choose_host(vm, [busy, idle], "power_saving", limits).name == "busy"


def test_scheduler_names_why_each_host_was_refused() -> None:
    vm = Vm("v", "big", "c", 2000, nics=[{"network": "storage"}],
            disks=[{"domainID": SD1}, {"domainID": SD2}])
    candidates = [
        Candidate(host("down", status=S.NON_RESPONSIVE), 0, 0),
        Candidate(host("maint", maintenance=True), 0, 0),
        Candidate(host("nonet", networks=[]), 0, 0),
        Candidate(host("nosd", networks=["storage"], storage_domains=[SD1]), 0, 0),
        Candidate(host("full", networks=["storage"], storage_domains=[SD2, SD1]), 3000, 3),
    ]
    with pytest.raises(NoHostAvailable) as err:
        choose_host(vm, candidates, "even_distribution", Limits(100, 256))
    assert err.value.details["filtered"] == {
        "down": "status is NonResponsive",
        "maint": "in maintenance",
        "nonet": "lacks network(s) storage",
        "nosd": f"does not see storage domain(s) {SD2}",
        "full": "not enough memory: VM needs 2000 MiB, 840 MiB schedulable (4096 MiB x 100% "
                "- 256 reserved - 3000 committed)",
    }
    assert "full: not enough memory" in str(err.value)


def test_overcommit_makes_room_and_unknown_policy_is_refused() -> None:
    vm = Vm("v", "v", "c", 5000)
    c = Candidate(host("h"), 0, 0)
    assert choose_host(vm, [c], "even_distribution", Limits(200, 0)).name == "h"
    with pytest.raises(InvalidInput, match="unknown scheduling policy"):
        choose_host(vm, [c], "random", Limits())


# -- PKI --------------------------------------------------------------------------------


def test_engine_ca_is_created_once_and_signs_host_requests(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from vdsm_py.pki.issue import make_csr, new_key

    ca = EngineCa(tmp_path / "ca", tmp_path / "pki")
    ca.ensure()
    first = ca.cacert_pem
    again = EngineCa(tmp_path / "ca", tmp_path / "pki")
    again.ensure()
    assert again.cacert_pem == first
    csr = make_csr(new_key(), ["h1.example"], ["192.0.2.1"])
    signed = again.sign_host(csr.public_bytes(serialization.Encoding.PEM), 30)
    assert signed.cacert_pem == first and signed.serial
    assert needs_renewal(signed.not_after, 31) and not needs_renewal(signed.not_after, 29)


def test_renewal_threshold() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    soon = (now + dt.timedelta(days=10)).isoformat()
    assert needs_renewal(soon, 30, now)
    assert not needs_renewal(soon, 5, now)
    assert not needs_renewal("", 30, now)


# -- CLI --------------------------------------------------------------------------------


def test_cli_builds_requests() -> None:
    args = cli.build_parser().parse_args(
        ["vm", "create", "web", "--memory", "512", "--nic", "ovirtmgmt,mac=52:54:00:00:00:01",
         "--custom", "k=v", "--ha"])
    assert cli.request_of(args) == ("vm.create", {
        "name": "web", "memory": 512, "vcpus": 1,
        "nics": [{"network": "ovirtmgmt", "mac": "52:54:00:00:00:01"}], "disks": [],
        "custom": {"k": "v"}, "ha": True})
    args = cli.build_parser().parse_args(["host", "maintenance", "h1"])
    assert cli.request_of(args) == ("host.maintenance", {"ref": "h1"})
    # The fence agent is an argv list, passed through as words, never joined into a shell line.
    args = cli.build_parser().parse_args(
        ["host", "fence-agent", "h1", "--", "/usr/sbin/fence_x", "--ip", "a b; reboot"])
    assert cli.request_of(args) == ("host.fence_agent", {
        "ref": "h1", "argv": ["/usr/sbin/fence_x", "--ip", "a b; reboot"]})
    args = cli.build_parser().parse_args(["host", "fence-agent", "h1"])
    assert cli.request_of(args) == ("host.fence_agent", {"ref": "h1", "argv": []})


def test_cli_without_a_running_engine_says_so(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--state", str(tmp_path), "host", "list"]) == cli.EXIT_NO_ENGINE
    assert "no engine running" in capsys.readouterr().err
