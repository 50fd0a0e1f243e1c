"""The network domain: logical networks, bonds and VLANs on the host, changed through netlink.

Public surface (the daemon needs nothing else):

- :class:`network.service.NetworkService` — ``build(config, executor, events)``,
  ``start()`` (restores the persisted configuration), ``stop()``, ``on_activity(ctx)``
  (give it to the dispatcher), ``api()`` (the ``Host`` verbs object), ``capabilities()``
  (network keys of getCapabilities; blocking).
- :func:`network.model.parse_request` and the frozen request model
  (:class:`~network.model.NetworkAttrs`, :class:`~network.model.BondingAttrs`).

Layout: ``model`` (canonical request), ``validate`` (whole-request checks),
``netlink`` (the pyroute2 adapter), ``transaction`` (undo log), ``configurator`` (steps and
their undos), ``setup`` (blocking core, restore), ``persistence`` (running/safe files),
``connectivity`` (post-change reachability), ``caps`` (reporting), ``service`` (asyncio
side). Nothing here imports the transport or the RPC layer.
"""
