"""The builder image, made from the packages the lock pins: resolving and
pinning them (`doit lock --builder`, `doit lock --update`), bootstrapping
the image in a network namespace, keeping it in the cache and importing it
into an engine.

Imports: the foundation, onlydocker.formats, onlydocker.cache,
onlydocker.inputs and onlydocker.engine.
"""
