"""A python stage's key holds the code it runs, not the whole package:
code_closure follows our imports (top level and inside functions), skips
`if TYPE_CHECKING:` (types only) and names a missing module."""
from __future__ import annotations

import pytest

from onlydocker import stage
from onlydocker.errors import BuildError


def test_closure_follows_every_kind_of_import_and_skips_types_only(tmp_path, monkeypatch):
    pkg = tmp_path / "onlydocker"
    pkg.mkdir()
    (pkg / "a.py").write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "from . import f as g, __version__\n"
        "from onlydocker.e import thing\n"
        "import onlydocker.h\n"
        "if TYPE_CHECKING:\n"
        "    from .d import Ctx\n"
        "def later():\n"
        "    from .c import x\n")
    (pkg / "b.py").write_text("from .errors import E\n")
    for name in ("c", "d", "e", "f", "h", "errors", "unrelated"):
        (pkg / f"{name}.py").write_text("")
    monkeypatch.setattr(stage, "PACKAGE", pkg)
    assert stage.code_closure("onlydocker.a") == {"a", "b", "c", "e", "f", "h", "errors"}


def test_a_missing_stage_module_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(stage, "PACKAGE", tmp_path)
    with pytest.raises(BuildError, match="onlydocker.nothing"):
        stage.code_closure("onlydocker.nothing")


def test_the_real_python_stages_do_not_take_in_the_engine():
    artifacts = stage.code_closure("onlydocker.artifacts")
    assert {"artifacts", "cpio", "compress", "dockerimage", "box", "tarball"} <= artifacts
    rootfs = stage.code_closure("onlydocker.rootfs")
    assert {"rootfs", "elfdeps"} <= rootfs
    # Editing the fetcher, the engine or the task graph rebuilds no initrd.
    for closure in (artifacts, rootfs):
        assert not closure & {"stage", "engine", "fetch", "tasks", "commands"}
