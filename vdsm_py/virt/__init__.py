"""VMs on libvirt: specs, domain XML, lifecycle, events, statistics, recovery.

Public surface: :class:`~vdsm_py.virt.manager.VmManager` (built by the daemon, called by
the VM verbs in ``vdsm_py/api/vm.py`` and ``vdsm_py/api/host_vms.py``). Domain package:
must not import the transport or rpc layers.
"""

from vdsm_py.virt.manager import VmManager

__all__ = ["VmManager"]
