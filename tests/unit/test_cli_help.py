"""vdsm-client's help, written from the schema, and its command-line errors (nothing sent)."""

from __future__ import annotations

import io

import pytest

from vdsm_py.cli import client, client_help
from vdsm_py.rpc.schema import Schema

DOCS = [
    {
        "namespace": "Host",
        "description": "The host as a whole. More words that are not in the summary.",
        "types": {
            "HostStats": {
                "type": "object",
                "properties": {
                    "cpuIdle": {"type": "float", "description": "Idle CPU, percent."},
                    "memFree": {"type": "int", "description": "Free memory, MiB."},
                },
            },
        },
        "verbs": {
            "getStats": {
                "description": "Host statistics over the last interval. Rates are per second.",
                "added": "4.2",
                "params": [
                    {
                        "name": "interval",
                        "type": "int",
                        "min": 1,
                        "default": 15,
                        "description": "Seconds to average over.",
                    },
                    {"name": "full", "type": "boolean", "default": False},
                ],
                "return": {"type": "HostStats", "description": "The figures."},
            },
            "ping2": {
                "description": "Liveness check.",
                "params": [],
                "return": {"type": "boolean"},
            },
        },
    },
    {
        "namespace": "VM",
        "description": "One virtual machine.",
        "verbs": {
            "create": {
                "description": "Make a VM.",
                "params": [
                    {
                        "name": "vmParams",
                        "type": "object",
                        "description": "The VM.",
                        "properties": {
                            "memSize": {"type": "int", "required": True, "description": "MiB."},
                            "smp": {"type": "int", "default": 1},
                        },
                    }
                ],
            },
            "destroy": {
                "description": "Power a VM off.",
                "params": [
                    {"name": "vmId", "type": "string", "format": "uuid", "description": "Which VM."}
                ],
            },
        },
    },
]


@pytest.fixture(scope="module")
def schema():
    return Schema.from_documents(DOCS)


def run(schema, *argv, stdin=""):
    out, err = io.StringIO(), io.StringIO()
    code = client.run(list(argv), schema, out, err, io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


def test_top_help_lists_options_and_namespaces_with_summaries(schema):
    code, out, _ = run(schema, "--help")
    assert code == 0
    assert "usage: vdsm-client [options] NAMESPACE VERB" in out
    assert "--watch-events" in out and "--pki-dir" in out and "exit codes:" in out
    namespaces = out.split("Namespaces:", 1)[1]
    assert "  Host  The host as a whole.\n" in namespaces
    assert "  VM    One virtual machine.\n" in namespaces
    assert "More words" not in namespaces


def test_namespace_help_lists_verbs_with_one_line_each(schema):
    code, out, _ = run(schema, "Host", "--help")
    assert code == 0
    assert (
        "Verbs:\n  getStats  Host statistics over the last interval.\n"
        "  ping2     Liveness check.\n" in out
    )
    assert "Rates are per second" not in out


def test_verb_help_shows_params_types_defaults_and_return(schema):
    code, out, _ = run(schema, "Host", "getStats", "--help")
    assert code == 0
    assert out.startswith(
        "usage: vdsm-client [options] Host getStats [interval=...] [full=...] [-f FILE]\n"
    )
    assert "Host statistics over the last interval. Rates are per second." in out
    assert "Added in 4.2." in out
    assert "  interval: int (min 1); default 15\n      Seconds to average over.\n" in out
    assert "  full: true or false; default false\n" in out
    assert "Returns: HostStats — The figures.\n" in out
    assert "    cpuIdle  float: Idle CPU, percent." in out
    assert "    memFree  int: Free memory, MiB." in out


def test_verb_help_marks_required_params(schema):
    code, out, _ = run(schema, "-h", "VM.destroy")
    assert code == 0
    assert "usage: vdsm-client [options] VM destroy vmId=... [-f FILE]" in out
    assert "  vmId: string (uuid); required\n      Which VM.\n" in out
    assert "Returns: nothing" in out


def test_verb_help_lists_the_fields_of_object_params(schema):
    out = run(schema, "VM", "create", "--help")[1]
    assert "  vmParams: a JSON object; required\n      The VM.\n" in out
    assert "      memSize  int, required: MiB.\n      smp      int, default 1\n" in out


def test_help_may_come_after_other_options(schema):
    assert (
        run(schema, "Host", "ping2", "-o", "table", "--help")[1]
        == client_help.verb_help(schema, schema.verb("Host.ping2")) + "\n"
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["Hots", "--help"], "unknown namespace 'Hots' (did you mean Host?)"),
        (["host", "ping2"], "unknown namespace 'host' (did you mean Host?)"),
        (["Host", "getstats"], "Host has no verb 'getstats' (did you mean getStats?)"),
        (["Host"], "no verb given for Host; 'vdsm-client Host --help' lists its verbs"),
        ([], "no verb given; 'vdsm-client --help' lists the namespaces"),
        (
            ["Host", "getStats", "interval=soon"],
            "Host.getStats: parameter interval: expected int (min 1), got 'soon'",
        ),
        (["Host", "getStats", "bogus=1"], "Host.getStats has no parameter 'bogus'"),
        (["VM", "destroy"], "VM.destroy: Missing required parameter: vmId"),
        (["--watch-events", "Host", "ping2"], "--watch-events takes no namespace"),
        (["--watch-events", "--count", "0"], "--count must be at least 1"),
        (["--count", "2", "Host", "ping2"], "--count goes with --watch-events"),
        (["--timeout", "0", "Host", "ping2"], "--timeout must be more than 0 seconds"),
        (["--insecure", "--pki-dir", "/x", "Host", "ping2"], "--insecure uses no certificates"),
        (["--cert", "c.pem", "Host", "ping2"], "--cert, --key and --cacert go together"),
    ],
)
def test_bad_command_lines_exit_2_with_a_clear_message(schema, argv, message):
    # -p 9 (discard): were anything sent by mistake, it could not reach a daemon.
    code, out, err = run(schema, "-a", "127.0.0.1", "-p", "9", *argv)
    assert code == client.EXIT_USAGE
    assert out == ""
    assert message in err


def test_bad_option_exits_2(schema, capsys):
    assert run(schema, "-o", "xml", "Host", "ping2")[0] == client.EXIT_USAGE
    assert "invalid choice: 'xml'" in capsys.readouterr().err


def test_missing_dev_dir_is_a_usage_error(schema, tmp_path):
    code, _, err = run(schema, "--dev", str(tmp_path / "nope"), "Host", "ping2")
    assert code == client.EXIT_USAGE
    assert "no such directory" in err


def test_summary_takes_the_first_sentence():
    assert client_help.summary("Does a thing.  Then more.\nAnd more.") == "Does a thing."
    assert client_help.summary("Version 4.2 only") == "Version 4.2 only"
