"""The gateway's side of the notebook sandboxes: grants (who may work on which views,
until when), the sessions the hub starts for them, and the record of executed code.

- :mod:`gateway.sandboxes.service`: :class:`SandboxService`, the domain logic;
- :mod:`gateway.sandboxes.secrets`: the secrets the gateway shares with the hub;
- :mod:`gateway.sandboxes.hub`: the client of JupyterHub's REST API (stopping servers);
- :mod:`gateway.sandboxes.receipts`: the audit sink that tells a job the ledger position
  of an entry it recorded.
"""
