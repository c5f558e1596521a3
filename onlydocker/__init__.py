"""Only Docker: a reproducible build of a kernel, BusyBox and Docker as PID 1.

The package is layered; a module imports only from its own layer and the
layers before it (tests/test_house.py checks it; docs/design.md draws it):

1. the foundation, here at the top: errors (one type per failure), config
   (settings), log (what the user reads), canon, hashing, atomic (files
   shared between processes), progress, sign and secureboot (the keys);
2. formats: bytes in and out (tar, cpio, compression, images, boxes, unpacking);
3. cache: the stage store and the remote cache;
4. inputs: the lock, fetching, the builder's packages, the source's state;
5. engine: the Docker engine (client, one container's run, the pool);
6. builder: the builder image;
7. stage: declarations, keys, runners, out/<lane>/ paths;
8. publish: dist/, SBOMs, provenance, signatures, verify;
9. cli: the task graph and the doit commands.
"""

__version__ = "0.1.0"
