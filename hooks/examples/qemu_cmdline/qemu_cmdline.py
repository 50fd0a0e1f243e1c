#!/usr/bin/python3
"""qemu_cmdline: append raw QEMU command-line arguments to a VM.

Custom property ``qemu_cmdline``: a JSON list of strings, each one QEMU argument, in order,
e.g. ``["-device", "pvpanic"]``. They are passed through libvirt's QEMU namespace::

    <domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
      ...
      <qemu:commandline>
        <qemu:arg value='-device'/>
        <qemu:arg value='pvpanic'/>
      </qemu:commandline>

Arguments are not checked: QEMU gets them as they are, after libvirt's own. Install (a
copy, executable) as ``<hooks root>/before_vm_start/50_qemu_cmdline``. Without the property
it changes nothing; a value that is not a JSON list of strings fails with exit code 2.
"""

import json
import os
import sys
import traceback

import hooking

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


def parse_arguments(text):
    try:
        args = json.loads(text)
    except ValueError as exc:
        hooking.exit_hook(f"qemu_cmdline: not JSON: {exc}")
    if not isinstance(args, list):
        hooking.exit_hook(
            f"qemu_cmdline: expected a JSON list of strings, got {type(args).__name__}"
        )
    for arg in args:
        if isinstance(arg, bool) or not isinstance(arg, (str, int, float)):
            hooking.exit_hook(f"qemu_cmdline: {arg!r} is not a string")
    return [str(arg) for arg in args]


def qemu_prefix(domain):
    """The prefix bound to libvirt's QEMU namespace on <domain>, binding 'qemu' if none."""
    for i in range(domain.attributes.length):
        attr = domain.attributes.item(i)
        if attr.name.startswith("xmlns:") and attr.value == QEMU_NS:
            return attr.name[len("xmlns:") :]
    if domain.hasAttribute("xmlns:qemu"):
        hooking.exit_hook("qemu_cmdline: prefix 'qemu' is bound to another namespace")
    domain.setAttribute("xmlns:qemu", QEMU_NS)
    return "qemu"


def append_arguments(doc, args):
    domain = doc.documentElement
    if domain.tagName != "domain":
        hooking.exit_hook(f"qemu_cmdline: expected a <domain>, got <{domain.tagName}>")
    prefix = qemu_prefix(domain)
    tag = prefix + ":commandline"
    existing = [n for n in domain.childNodes if n.nodeType == n.ELEMENT_NODE and n.tagName == tag]
    if existing:
        commandline = existing[0]
    else:
        commandline = doc.createElementNS(QEMU_NS, tag)
        domain.appendChild(commandline)
    # libvirt wants every <qemu:arg> before any <qemu:env>.
    envs = [
        n
        for n in commandline.childNodes
        if n.nodeType == n.ELEMENT_NODE and n.tagName == prefix + ":env"
    ]
    anchor = envs[0] if envs else None
    for value in args:
        arg = doc.createElementNS(QEMU_NS, prefix + ":arg")
        arg.setAttribute("value", value)
        commandline.insertBefore(arg, anchor)


def main():
    text = os.environ.get("qemu_cmdline")
    if text is None:
        return
    args = parse_arguments(text)
    if not args:
        return
    doc = hooking.read_domxml()
    append_arguments(doc, args)
    hooking.write_domxml(doc)
    hooking.log(f"qemu_cmdline: appended {len(args)} QEMU argument(s)")


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception:  # noqa: BLE001 - any crash becomes exit 2 with its traceback
        hooking.exit_hook(f"qemu_cmdline: unexpected error: {traceback.format_exc()}")
    sys.exit(0)
