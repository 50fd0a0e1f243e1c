from pathlib import Path

import pytest

from vdsm_py import config

REPO = Path(__file__).resolve().parents[2]


def test_defaults_without_a_file():
    cfg = config.load(None)
    assert cfg.addresses.port == 54321
    assert cfg.pki.dir == Path("/etc/pki/vdsm")
    assert cfg.pki.insecure is False


def test_values_are_typed(tmp_path):
    path = tmp_path / "c.conf"
    path.write_text("[addresses]\nport = 4444\n[pki]\ninsecure = yes\ndir = /x\n[rpc]\ncall_timeout = 1.5\n")
    cfg = config.load(path)
    assert cfg.addresses.port == 4444
    assert cfg.pki.insecure is True
    assert cfg.pki.dir == Path("/x")
    assert cfg.rpc.call_timeout == 1.5


@pytest.mark.parametrize(
    "text, message",
    [
        ("[nosuch]\na = 1\n", "unknown section [nosuch]"),
        ("[addresses]\nprot = 1\n", "unknown key 'prot'"),
        ("[addresses]\nport = many\n", "[addresses] port: invalid value 'many'"),
        ("[pki]\ninsecure = perhaps\n", "expected true or false"),
        ("not ini at all", "c.conf"),
    ],
)
def test_mistakes_are_refused_with_their_place(tmp_path, text, message):
    path = tmp_path / "c.conf"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert message in str(err.value)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read configuration"):
        config.load(tmp_path / "absent.conf")


def test_committed_example_matches_the_declared_settings():
    committed = (REPO / "etc" / "vdsm_py.conf").read_text()
    assert committed == config.render_example(), (
        "etc/vdsm_py.conf is stale: run 'vdsm-tool config-example -o etc/vdsm_py.conf'"
    )


def test_example_parses_back_to_the_defaults(tmp_path):
    # Uncommenting every setting of the example must give the defaults again.
    lines = []
    for line in config.render_example().splitlines():
        if line.startswith("# ") and " = " in line:
            lines.append(line[2:])
        elif line.startswith("["):
            lines.append(line)
    path = tmp_path / "all.conf"
    path.write_text("\n".join(lines) + "\n")
    assert config.load(path) == config.load(None)
