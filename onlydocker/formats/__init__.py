"""File formats, written so that the same input gives the same bytes, and
untrusted archives read safely: deterministic tar, the initramfs cpio,
fixed-setting compressors, container image archives, Vagrant boxes, the
shared-library closure of an ELF binary, a Kconfig source's options, and the
unpacker of source tarballs, .debs and cache entries.

Imports: the foundation modules (onlydocker.errors, canon, hashing, atomic, log,
progress, config, sign, secureboot) only. Nothing here knows about lanes,
stages, caches or the engine: a Python stage's key holds what it imports
from here, so a module here changes only when bytes may.
"""
