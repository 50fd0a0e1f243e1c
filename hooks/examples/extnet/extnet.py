#!/usr/bin/python3
"""extnet: attach a VM's network interface to a libvirt network managed outside the engine.

Custom property ``extnet=<libvirt network name>``. The interface becomes
``<interface type='network'><source network='<name>'/>``: its old source (bridge, direct
device...) and any ``<virtualport>`` of the old connection are dropped; MAC, model, PCI
address, boot order and filters are kept.

Install it (a copy, executable) as
- ``<hooks root>/before_vm_start/50_extnet``: with a domain XML it moves the VM's first
  NIC, or the NICs chosen by the optional custom property ``extnet_nics``: ``all``, or MAC
  addresses separated by commas or spaces;
- ``<hooks root>/before_device_create/50_extnet`` and ``before_nic_hotplug/50_extnet``:
  with a single ``<interface>`` (the NIC's own custom properties) it moves that NIC.

Without ``extnet`` it changes nothing. A bad value or a missing NIC fails the hook with
exit code 2 and a message saying why.
"""

import os
import sys
import traceback

import hooking


def _elements(parent, tag):
    return [n for n in parent.childNodes if n.nodeType == n.ELEMENT_NODE and n.tagName == tag]


def _mac(interface):
    for mac in _elements(interface, "mac"):
        return mac.getAttribute("address").lower()
    return ""


def _remove(parent, node):
    """Remove ``node`` and the indentation before it."""
    before = node.previousSibling
    if before is not None and before.nodeType == before.TEXT_NODE and not before.data.strip():
        parent.removeChild(before)
    parent.removeChild(node)
    node.unlink()


def move_to_network(doc, interface, network):
    """Make ``interface`` an interface of the libvirt network ``network``."""
    source = doc.createElement("source")
    source.setAttribute("network", network)
    old_sources = _elements(interface, "source")
    if old_sources:
        interface.replaceChild(source, old_sources[0])
        old_sources[0].unlink()
    else:
        macs = _elements(interface, "mac")
        interface.insertBefore(source, macs[0].nextSibling if macs else interface.firstChild)
    for stale in old_sources[1:] + _elements(interface, "virtualport"):
        _remove(interface, stale)
    interface.setAttribute("type", "network")


def chosen_nics(interfaces, selection):
    """The interfaces named by ``extnet_nics`` (default: the first one)."""
    selection = (selection or "").strip()
    if not selection or selection.lower() == "first":
        return interfaces[:1]
    if selection.lower() == "all":
        return list(interfaces)
    wanted = {m.lower() for m in selection.replace(",", " ").split()}
    chosen = [i for i in interfaces if _mac(i) in wanted]
    missing = wanted - {_mac(i) for i in chosen}
    if missing:
        hooking.exit_hook(f"extnet: no NIC with MAC {', '.join(sorted(missing))} in the VM")
    return chosen


def main():
    network = os.environ.get("extnet")
    if network is None:
        return
    network = network.strip()
    if not network or "/" in network:
        hooking.exit_hook(f"extnet: {network!r} is not a libvirt network name")
    doc = hooking.read_domxml()
    root = doc.documentElement
    if root.tagName == "interface":
        nics = [root]
    elif root.tagName == "domain":
        devices = _elements(root, "devices")
        interfaces = _elements(devices[0], "interface") if devices else []
        if not interfaces:
            hooking.exit_hook("extnet: the VM has no network interface to move")
        nics = chosen_nics(interfaces, os.environ.get("extnet_nics"))
    else:
        hooking.exit_hook(f"extnet: cannot handle a <{root.tagName}> document")
    for nic in nics:
        move_to_network(doc, nic, network)
        hooking.log(f"extnet: NIC {_mac(nic) or '?'} now on libvirt network {network}")
    hooking.write_domxml(doc)


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception:  # noqa: BLE001 - any crash becomes exit 2 with its traceback
        hooking.exit_hook(f"extnet: unexpected error: {traceback.format_exc()}")
    sys.exit(0)
