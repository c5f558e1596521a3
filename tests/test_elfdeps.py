"""The library closure read from ELF headers, on real binaries: the host's
own dynamic ones, a static BusyBox, a missing library, RUNPATH/$ORIGIN and
symlinked loader paths inside a sysroot (built here with the host's cc)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from onlydocker.errors import BuildError
from onlydocker.formats import elfdeps
from tests.conftest import require_tool

LS = Path("/usr/bin/ls")


def _static_busybox() -> Path:
    for p in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if p.is_file() and elfdeps.is_static(p):
            return p
    pytest.skip("no static busybox on the host (apt-get install busybox-static)")


def test_host_ls_needs_libc_and_its_interpreter():
    libs = elfdeps.closure(LS, Path("/"))
    names = {p.name for p in libs}
    assert "libc.so.6" in names
    assert any(n.startswith("ld-linux-x86-64.so") for n in names)
    assert all(not p.is_absolute() for p in libs), libs
    assert libs == sorted(libs)
    # Every listed path exists as the loader would open it.
    for p in libs:
        assert (Path("/") / p).exists(), p
    assert not elfdeps.is_static(LS)


def test_closure_is_recursive():
    # libselinux (ls) needs libpcre2: a library of a library.
    libs = {p.name for p in elfdeps.closure(LS, Path("/"))}
    if "libselinux.so.1" not in libs:
        pytest.skip("this host's ls is not linked with libselinux")
    assert any(n.startswith("libpcre2-8.so") for n in libs)


def test_static_binary_needs_nothing():
    bb = _static_busybox()
    assert elfdeps.is_static(bb)
    assert elfdeps.closure(bb, Path("/")) == []


def _copy_closure(binary: Path, sysroot: Path, *, skip: str | None = None) -> None:
    """The binary's libraries from the host into a sysroot, links kept."""
    from onlydocker.stage.layout import copy_chain
    for lib in elfdeps.closure(binary, Path("/")):
        if skip and lib.name.startswith(skip):
            continue
        copy_chain(Path("/"), str(lib), sysroot)


def test_missing_interpreter_names_binary_and_interpreter(tmp_path):
    (tmp_path / "usr/bin").mkdir(parents=True)
    shutil.copy(LS, tmp_path / "usr/bin/ls")
    with pytest.raises(BuildError) as e:
        elfdeps.closure(tmp_path / "usr/bin/ls", tmp_path)
    assert "usr/bin/ls" in str(e.value) and "ld-linux-x86-64.so.2" in str(e.value)


def test_missing_library_names_binary_and_library(tmp_path):
    (tmp_path / "usr/bin").mkdir(parents=True)
    shutil.copy(LS, tmp_path / "usr/bin/ls")
    _copy_closure(LS, tmp_path, skip="libc.so")
    with pytest.raises(BuildError) as e:
        elfdeps.closure(tmp_path / "usr/bin/ls", tmp_path)
    msg = str(e.value)
    assert "usr/bin/ls" in msg and "libc.so.6" in msg and str(tmp_path) in msg


def test_copied_closure_is_complete_in_the_sysroot(tmp_path):
    (tmp_path / "usr/bin").mkdir(parents=True)
    shutil.copy(LS, tmp_path / "usr/bin/ls")
    _copy_closure(LS, tmp_path)
    inside = elfdeps.closure(tmp_path / "usr/bin/ls", tmp_path)
    assert inside == elfdeps.closure(LS, Path("/"))
    # The sysroot's copy really runs with only those files.
    chroot = shutil.which("chroot")
    if chroot and os.geteuid() == 0:
        r = subprocess.run([chroot, str(tmp_path), "/usr/bin/ls", "/"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_absolute_links_resolve_inside_the_sysroot(tmp_path):
    # lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/... as Debian ships it:
    # it must mean the sysroot's file even when the host has one at that path.
    (tmp_path / "lib64").mkdir()
    (tmp_path / "lib64/ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    assert elfdeps.resolve_in(tmp_path, "/lib64/ld-linux-x86-64.so.2") == \
        tmp_path / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    (tmp_path / "up").symlink_to("../../../../etc")
    assert elfdeps.resolve_in(tmp_path, "up/passwd") == tmp_path / "etc/passwd"


def test_symlink_loop_is_an_error(tmp_path):
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(BuildError, match="symlinks"):
        elfdeps.resolve_in(tmp_path, "a")


def test_not_an_elf_file(tmp_path):
    f = tmp_path / "script"
    f.write_text("#!/bin/sh\n")
    with pytest.raises(BuildError, match="not a readable ELF"):
        elfdeps.is_static(f)


@pytest.fixture
def cc():
    return require_tool("cc")


def _build(cc: str, tmp: Path, *, rpath_flag: str) -> Path:
    """A program that needs libhello.so found through $ORIGIN/../lib."""
    (tmp / "hello.c").write_text("int hello(void) { return 42; }\n")
    (tmp / "main.c").write_text("int hello(void);\nint main(void) { return hello() == 42 ? 0 : 1; }\n")
    root = tmp / "root"
    (root / "opt/app/bin").mkdir(parents=True)
    (root / "opt/app/lib").mkdir(parents=True)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(root / "opt/app/lib/libhello.so"), str(tmp / "hello.c")],
                   check=True)
    subprocess.run([cc, "-o", str(root / "opt/app/bin/main"), str(tmp / "main.c"),
                    "-L", str(root / "opt/app/lib"), "-lhello",
                    f"-Wl,-rpath,$ORIGIN/../lib,{rpath_flag}"], check=True)
    return root


@pytest.mark.parametrize("flag", ["--enable-new-dtags", "--disable-new-dtags"])   # RUNPATH, RPATH
def test_origin_runpath_and_rpath(cc, tmp_path, flag):
    root = _build(cc, tmp_path, rpath_flag=flag)
    info = elfdeps.read(root / "opt/app/bin/main")
    assert (info.runpath if flag == "--enable-new-dtags" else info.rpath) == ("$ORIGIN/../lib",)
    main = root / "opt/app/bin/main"
    # libhello is found in the sysroot through $ORIGIN; libc from the host's
    # libraries copied into the sysroot.
    _copy_closure(Path("/usr/bin/true"), root)
    libs = [str(p) for p in elfdeps.closure(main, root)]
    assert "opt/app/lib/libhello.so" in libs
    assert any(p.endswith("libc.so.6") for p in libs)
    # Without the library the error names it and where it looked.
    (root / "opt/app/lib/libhello.so").unlink()
    with pytest.raises(BuildError) as e:
        elfdeps.closure(main, root)
    assert "libhello.so" in str(e.value) and "opt/app/lib" in str(e.value)
