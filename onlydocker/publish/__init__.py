"""What leaves the build: out/<lane>/dist/ with its SHA256SUMS, signatures,
SLSA provenance and SPDX SBOMs (2.3 and 3.0.1), the legal information a
distributor hands on, rebuilder attestations, and the audit that checks all
of it (`doit verify`).

Imports: every layer below (the foundation, formats, cache, inputs, engine,
builder, stage); never onlydocker.cli.
"""
