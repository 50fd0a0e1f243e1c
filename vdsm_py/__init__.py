"""vdsm_py: a host agent for virtualization hosts, wire-compatible with oVirt VDSM.

The package is importable straight from a clone; nothing here is generated.
"""

__version__ = "0.1.0"
