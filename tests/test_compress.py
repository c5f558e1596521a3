"""compress.py: fixed settings, checked with the host's own decompressors."""
from __future__ import annotations

import io
import os
import random
import subprocess
import threading
import time

import pytest
import zstandard

from onlydocker.formats import compress
from tests.conftest import require_tool

TOOLS = {"zstd": ["zstd", "-dc"], "xz": ["xz", "-dc"], "lzma": ["xz", "--format=lzma", "-dc"],
         "gzip": ["gzip", "-dc"]}


@pytest.fixture(scope="module")
def data() -> bytes:
    # Compressible but not trivial, like an initrd: the same every run.
    rng = random.Random(4)
    words = [bytes(rng.randrange(97, 123) for _ in range(rng.randrange(2, 12))) for _ in range(500)]
    return b" ".join(rng.choice(words) for _ in range(60_000)) + bytes(rng.randrange(256) for _ in range(20_000))


def packed(src, fmt: str) -> bytes:
    out = io.BytesIO()
    compress.compress(src, fmt, out)
    return out.getvalue()


@pytest.mark.parametrize("fmt", compress.FORMATS)
def test_round_trips_through_the_standard_tool_and_is_stable(fmt, data):
    require_tool(TOOLS[fmt][0])
    a, b = packed(io.BytesIO(data), fmt), packed(io.BytesIO(data), fmt)
    assert a == b
    r = subprocess.run(TOOLS[fmt], input=a, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data


@pytest.mark.parametrize("fmt", compress.FORMATS)
def test_bytes_and_a_file_give_the_same_output(fmt, data, tmp_path):
    (tmp_path / "in").write_bytes(data)
    with open(tmp_path / "in", "rb") as f:
        assert packed(f, fmt) == packed(data, fmt)


def test_zstd_frame_has_the_content_size(data):
    frame = packed(data, "zstd")
    params = zstandard.get_frame_parameters(frame)
    assert params.content_size == len(data)
    assert zstandard.ZstdDecompressor().decompress(frame) == data


class _Unseekable(io.RawIOBase):
    """A pipe-like stream: its size is unknown, the case where zstd would
    start its workers (it compresses a small input of known size alone)."""
    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, b):
        return self._data.readinto(b)


def _threads_started_during(work) -> set[str]:
    """The threads of this process (/proc/self/task) that a watcher saw
    during `work` and not before it: the ones that started meanwhile."""
    seen, done = set(), threading.Event()

    def watch():
        while not done.is_set():
            seen.update(os.listdir("/proc/self/task"))
    before = set(os.listdir("/proc/self/task"))
    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.05)
    before |= seen      # the watcher itself
    try:
        work()
    finally:
        done.set()
        watcher.join()
    return seen - before


def test_zstd_runs_no_worker_threads(data):
    # The bytes of zstd's multi-threaded mode depend on its settings, so ours
    # is single-threaded: seen for real, while it compresses.
    started = _threads_started_during(lambda: compress.compress(_Unseekable(data), "zstd", io.BytesIO()))
    assert not started, f"{len(started)} thread(s) started while compress() worked"
    # The watcher does see zstd's workers when there are some.
    cctx = zstandard.ZstdCompressor(level=compress.ZSTD_LEVEL, threads=2, write_content_size=True)
    assert len(_threads_started_during(lambda: cctx.copy_stream(_Unseekable(data), io.BytesIO()))) >= 2


def test_xz_uses_crc32_as_the_kernel_needs(data, tmp_path):
    require_tool("xz")
    (tmp_path / "x.xz").write_bytes(packed(data, "xz"))
    r = subprocess.run(["xz", "--robot", "--list", str(tmp_path / "x.xz")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "CRC32" in r.stdout and "CRC64" not in r.stdout


def test_lzma_is_the_legacy_alone_format(data):
    head = packed(data, "lzma")[:13]
    # LZMA_Alone: properties byte 0x5D (lc=3 lp=0 pb=2), 64 MiB dictionary
    # (preset 9), then the uncompressed size (unknown when streamed).
    assert head[0] == 0x5D and int.from_bytes(head[1:5], "little") == 64 << 20


def test_gzip_has_no_name_and_no_date(data):
    head = packed(data, "gzip")[:10]
    assert head[:3] == b"\x1f\x8b\x08"
    assert head[3] == 0               # flags: no FNAME, no FCOMMENT
    assert head[4:8] == b"\0\0\0\0"   # mtime 0


def test_format_version_names_the_library_and_settings():
    v = compress.format_version("zstd")
    assert v == f"zstd-{zstandard.__version__}-l19-t0-cs"
    assert "crc32" in compress.format_version("xz")
    assert all(compress.format_version(f) in compress.FORMAT_VERSION for f in compress.FORMATS)
    with pytest.raises(ValueError, match="unknown compression"):
        compress.format_version("bzip3")


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown compression 'lz4'"):
        packed(b"x", "lz4")
