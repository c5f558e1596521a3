"""The Docker engine, and only it: finding and connecting to an engine
(client), running one build's container on it (run: its spec, its input
tar, its output), and sharing several engines between doit's threads (pool).
engine/run.py decides a container's bytes and is in every container stage's
key; client and pool are in none.

Imports: the foundation and onlydocker.formats. Not the builder: the pool is
told how to import the builder image into an engine that lacks it.
"""
