"""The numerical core: models, matching losses, the curvature operator, CG, Hessian-free and the
baseline optimisers, the optax transformation, the hand derivations, spectra and data parallelism.

It stands alone: nothing here imports from the rest of :mod:`hflab` (a test checks), so it can be
used, tested and mutated without the app, the store or the configuration.
"""
