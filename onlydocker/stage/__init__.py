"""Stages: their declarations (`stages/<name>/stage.toml`), their keys, the
lane's data they read, their sources, where a lane's build lives in
out/<lane>/ (paths), and the two runners, a container stage's build.sh in
the builder image and a Python stage's stage.py; build.py builds or restores
one stage, the small entry the task graph calls.

Imports: the foundation, onlydocker.formats, onlydocker.cache,
onlydocker.inputs, onlydocker.engine and onlydocker.builder.
"""
