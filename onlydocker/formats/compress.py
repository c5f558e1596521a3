"""Compression with fixed settings, so the bytes depend only on the input
and on the compressor's version, which `FORMAT_VERSION` names: a python
stage that compresses (the initrd and its layers) has it in its key, so a
host with another liblzma or zstandard never takes its bytes for ours.

- zstd: zstandard, level 19, single-threaded (zstd's multi-threaded output
  differs from its single-threaded one), content size in the frame header.
- lzma: legacy .lzma (`lzma -c`, LZMA_Alone), preset 9: what Linux 3.18
  unpacks as RD_LZMA.
- xz: preset 9, CRC32 check (the kernel's xz decoder knows no CRC64/SHA256).
- gzip: level 9, mtime 0, no file name (`gzip -n -9`).
"""
from __future__ import annotations

import ctypes
import gzip
import io
import lzma
import os
import zlib
from typing import BinaryIO

import zstandard

ZSTD_LEVEL = 19
LZMA_PRESET = 9
GZIP_LEVEL = 9
CHUNK = 1 << 20
FORMATS = ("zstd", "lzma", "xz", "gzip")


def _liblzma_version() -> str:
    # Python's lzma module does not say which liblzma it links; ask the
    # library itself (the same soname the module loads).
    try:
        lib = ctypes.CDLL("liblzma.so.5")
        lib.lzma_version_string.restype = ctypes.c_char_p
        return lib.lzma_version_string().decode()
    except (OSError, AttributeError):
        return "unknown"


def format_version(fmt: str) -> str:
    """Everything that decides the compressed bytes of `fmt`, for cache keys."""
    if fmt == "zstd":
        return f"zstd-{zstandard.__version__}-l{ZSTD_LEVEL}-t0-cs"
    if fmt == "lzma":
        return f"lzma-alone-liblzma{_liblzma_version()}-p{LZMA_PRESET}"
    if fmt == "xz":
        return f"xz-liblzma{_liblzma_version()}-p{LZMA_PRESET}-crc32"
    if fmt == "gzip":
        return f"gzip-zlib{zlib.ZLIB_RUNTIME_VERSION}-l{GZIP_LEVEL}-n"
    raise ValueError(f"unknown compression {fmt!r} (known: {', '.join(FORMATS)})")


FORMAT_VERSION = ";".join(format_version(f) for f in FORMATS)


def _size_of(src: BinaryIO) -> int:
    """Bytes left in a seekable stream, or -1."""
    try:
        here = src.tell()
        end = src.seek(0, os.SEEK_END)
        src.seek(here)
        return end - here
    except (OSError, AttributeError, io.UnsupportedOperation):
        return -1


def compress(src: bytes | bytearray | BinaryIO, fmt: str, out: BinaryIO) -> None:
    """Compress `src` (bytes or a binary stream, read to its end) into `out`."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        src = io.BytesIO(bytes(src))
    if fmt == "zstd":
        # One code path for bytes and streams (one-shot and streaming
        # compression need not give the same frame); the size, when the
        # stream can tell it, goes into the frame header.
        cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=0, write_content_size=True,
                                        write_checksum=False)
        cctx.copy_stream(src, out, size=_size_of(src), read_size=CHUNK, write_size=CHUNK)
        return
    if fmt == "gzip":
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=GZIP_LEVEL) as g:
            while chunk := src.read(CHUNK):
                g.write(chunk)
        return
    if fmt == "lzma":
        comp = lzma.LZMACompressor(format=lzma.FORMAT_ALONE, preset=LZMA_PRESET)
    elif fmt == "xz":
        comp = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=LZMA_PRESET)
    else:
        raise ValueError(f"unknown compression {fmt!r} (known: {', '.join(FORMATS)})")
    while chunk := src.read(CHUNK):
        out.write(comp.compress(chunk))
    out.write(comp.flush())
