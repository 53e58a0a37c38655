"""The peers' sides of ``benchmarks.peer``: each file runs as a plain script in its peer's own
environment (they import neither ``hflab`` nor each other) and speaks one protocol: read the
problem (``x``, the initial ``W0… b0…``) from an ``.npz``, update until at least ``min_updates``
are done and the training loss is at most ``target`` (or ``max_updates``), print one JSON line
with the per-update trace."""
