"""Compression with fixed settings, so the bytes depend only on the input
(and the pinned library version, which is part of every stage key)."""
from __future__ import annotations

import gzip
import lzma
from typing import BinaryIO

import zstandard

ZSTD_LEVEL = 19
FORMAT_VERSION = f"zstd-{zstandard.__version__}-l{ZSTD_LEVEL}-t0;lzma-alone-9;xz-crc32-9"
CHUNK = 1 << 20


def compress(src: BinaryIO, fmt: str, out: BinaryIO) -> None:
    if fmt == "zstd":
        # Single-threaded: zstd's multi-threaded output differs from its own.
        zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=0, write_content_size=True).copy_stream(src, out)
        return
    if fmt == "lzma":
        # Legacy .lzma ("lzma -c"), what Linux 3.18 unpacks as RD_LZMA.
        comp = lzma.LZMACompressor(format=lzma.FORMAT_ALONE, preset=9)
    elif fmt == "xz":
        # The kernel's xz decoder knows CRC32 only.
        comp = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=9)
    elif fmt == "gzip":
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as g:
            while chunk := src.read(CHUNK):
                g.write(chunk)
        return
    else:
        raise ValueError(f"unknown compression {fmt!r}")
    while chunk := src.read(CHUNK):
        out.write(comp.compress(chunk))
    out.write(comp.flush())
