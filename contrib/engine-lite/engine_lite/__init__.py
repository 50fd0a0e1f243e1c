"""engine-lite: the minimal engine of a vdsm_py cluster.

Owns what no single host can decide: the engine CA and host enrollment, one monitored mTLS
connection per host, VM definitions with their desired state, scheduling and the VM verbs
sent to hosts, and the event log. It talks to hosts only through their public JSON-RPC API
(:mod:`vdsm_py.client`) and keeps its state in a database (:mod:`engine_lite.db`).

Public surface: :class:`engine_lite.engine.Engine`, :class:`engine_lite.config.EngineConfig`,
the errors in :mod:`engine_lite.errors`, and the ``engine-lite`` CLI.
"""

__version__ = "0.1.0"
