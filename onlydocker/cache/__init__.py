"""The stage store: a stage's outputs kept by its key (tar.zst, a record, a
lock per entry), the remote cache that shares them (Bazel's HTTP protocol,
signed records), a stage's outputs as a manifest, and stat snapshots that
decide "unchanged" safely.

Imports: the foundation and onlydocker.formats.
"""
