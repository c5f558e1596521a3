"""A python stage's key holds the code it runs, not the whole package:
code_closure follows the imports of its stage.py (loaded by path) into our
modules (top level and inside functions), skips `if TYPE_CHECKING:` (types
only) and names a missing stage.py; the key covers the stage.py itself."""
from __future__ import annotations

from pathlib import Path

import pytest

from onlydocker.errors import BuildError
from onlydocker.stage import key as stagekey
from onlydocker.stage.decl import load_stage

REPO = Path(__file__).resolve().parent.parent


def test_closure_follows_every_kind_of_import_and_skips_types_only(tmp_path, monkeypatch):
    pkg = tmp_path / "onlydocker"
    pkg.mkdir()
    (tmp_path / "stage.py").write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "from onlydocker import a\n"
        "if TYPE_CHECKING:\n"
        "    from onlydocker.stage.pystage import StageContext\n")
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
    for name in ("c", "d", "e", "f", "h", "errors", "unrelated", "pystage"):
        (pkg / f"{name}.py").write_text("")
    monkeypatch.setattr(stagekey, "PACKAGE", pkg)
    assert stagekey.code_closure(tmp_path / "stage.py") == {"a", "b", "c", "e", "f", "h", "errors"}


def test_a_missing_stage_py_is_named(tmp_path):
    with pytest.raises(BuildError, match=str(tmp_path / "stage.py")):
        stagekey.code_closure(tmp_path / "stage.py")


def test_a_stage_py_that_does_not_parse_is_one_line(tmp_path):
    (tmp_path / "stage.py").write_text("def build(ctx)\n")
    with pytest.raises(BuildError) as e:
        stagekey.code_closure(tmp_path / "stage.py")
    assert str(e.value).startswith(f"{tmp_path / 'stage.py'}: line 1: ") and "\n" not in str(e.value)


def test_the_real_python_stages_do_not_take_in_the_engine():
    closures = {n: stagekey.code_closure(REPO / "stages" / n / "stage.py")
                for n in ("box", "images", "initrd", "rootfs", "rootfs-docker")}
    assert {"formats.cpio", "formats.compress"} <= closures["initrd"]
    assert {"formats.dockerimage", "formats.tarball", "stage.layout"} <= closures["images"]
    assert {"formats.box", "hashing"} <= closures["box"]
    assert {"stage.layout", "formats.elfdeps"} <= closures["rootfs"]
    assert {"stage.layout", "formats.cpio", "formats.compress"} <= closures["rootfs-docker"]
    # Editing the fetcher, the engine or the task graph rebuilds no initrd.
    for closure in closures.values():
        assert not closure & {"stage.build", "stage.key", "stage.container", "engine", "engine.run", "engine.pool",
                              "engine.client", "inputs.fetch", "cli", "cli.tasks", "cli.commands", "builder"}


def test_a_python_stage_key_covers_its_stage_py_and_the_modules_it_imports(tmp_path, monkeypatch):
    import types
    pkg = tmp_path / "onlydocker"
    pkg.mkdir()
    (pkg / "writer.py").write_text("X = 1\n")
    (pkg / "formats").mkdir(exist_ok=True)
    (pkg / "formats" / "tarball.py").write_text("")
    monkeypatch.setattr(stagekey, "PACKAGE", pkg)
    d = tmp_path / "stages" / "p"
    d.mkdir(parents=True)
    (d / "stage.toml").write_text('description = "p"\nkind = "python"\noutputs = ["x"]\n')
    (d / "stage.py").write_text("from onlydocker import writer\ndef build(ctx):\n    pass\n")
    decl = load_stage(d)
    lane = types.SimpleNamespace(name="l", source_date_epoch=1)

    def key() -> str:
        return stagekey.key(stagekey.key_inputs(decl, lane, [], [], {}, None, tmp_path / "memo.json"))

    first = key()
    assert "stage.py" in dict(decl.files("l"))
    (d / "stage.py").write_text("from onlydocker import writer\ndef build(ctx):\n    pass  # changed\n")
    second = key()
    (pkg / "writer.py").write_text("X = 2\n")
    third = key()
    assert len({first, second, third}) == 3


@pytest.mark.parametrize("spelling", ["from .formats import writer", "from .formats.writer import X",
                                      "from onlydocker.formats import writer", "import onlydocker.formats.writer",
                                      "from . import formats"])
def test_a_module_moved_into_a_subpackage_stays_in_the_key(tmp_path, monkeypatch, spelling):
    """The writer the stage uses moves to formats/writer.py: editing it (or
    the subpackage's __init__.py, which Python runs first) still changes the
    key; editing a module no stage imports does not."""
    import types
    pkg = tmp_path / "onlydocker"
    (pkg / "formats").mkdir(parents=True)
    (pkg / "formats" / "__init__.py").write_text("from . import writer\n" if spelling.endswith("formats") else "")
    (pkg / "formats" / "writer.py").write_text("from ..errors import E\nX = 1\n")
    (pkg / "errors.py").write_text("E = 1\n")
    (pkg / "helper.py").write_text(f"{spelling}\n")
    (pkg / "unrelated.py").write_text("")
    (pkg / "formats").mkdir(exist_ok=True)
    (pkg / "formats" / "tarball.py").write_text("")
    monkeypatch.setattr(stagekey, "PACKAGE", pkg)
    d = tmp_path / "stages" / "p"
    d.mkdir(parents=True)
    (d / "stage.toml").write_text('description = "p"\nkind = "python"\noutputs = ["x"]\n')
    (d / "stage.py").write_text("from onlydocker import helper\ndef build(ctx):\n    pass\n")
    decl = load_stage(d)
    lane = types.SimpleNamespace(name="l", source_date_epoch=1)

    def key() -> str:
        return stagekey.key(stagekey.key_inputs(decl, lane, [], [], {}, None, tmp_path / "memo.json"))

    assert stagekey.code_closure(d / "stage.py") == {"helper", "formats", "formats.writer", "errors"}
    first = key()
    (pkg / "unrelated.py").write_text("Y = 1\n")
    assert key() == first
    (pkg / "formats" / "writer.py").write_text("from ..errors import E\nX = 2\n")
    second = key()
    assert second != first
    (pkg / "errors.py").write_text("E = 2\n")       # reached by a relative import from the subpackage
    assert key() != second


def test_a_memo_of_another_shape_is_ignored_not_trusted(tmp_path):
    """The imports memo is a cache: entries of another shape (an older
    parser's, a damaged file) are parsed again, never used."""
    import hashlib
    import json
    stage = tmp_path / "stage.py"
    stage.write_text("from onlydocker.formats import cpio\n")
    digest = hashlib.sha256(stage.read_bytes()).hexdigest()
    memo = tmp_path / "memo.json"
    parser = stagekey.sha256_file(Path(stagekey.__file__))
    memo.write_text(json.dumps({"parser": parser, "modules": {digest: ["cpio", "compress"]}}))
    stagekey._parsed.pop(digest, None)
    with stagekey.remembered_imports(memo):
        assert "formats.cpio" in stagekey.code_closure(stage)


def test_a_container_stage_key_covers_the_container_code_and_not_the_engine_client(tmp_path):
    """engine/run.py (the container: its spec, the input tar, the output),
    formats/tarball.py and stage/lanedata.py decide a container stage's
    bytes; finding and connecting to the engine (engine/client.py) and
    sharing engines (engine/pool.py) do not, and are in no key: editing
    their messages rebuilds no kernel."""
    from onlydocker.inputs import lock
    lk = lock.load(REPO / "locks" / "trixie.lock")
    decl = load_stage(REPO / "stages" / "iptables")
    inputs = stagekey.key_inputs(decl, lk.lane, [], [], {}, "b" * 64, tmp_path / "memo")
    code = inputs["container"]["code"]
    assert set(code) == {"engine/run.py", "formats/tarball.py", "stage/lanedata.py"}
    assert code["engine/run.py"] == stagekey.sha256_file(REPO / "onlydocker" / "engine" / "run.py")
    assert "client.py" not in str(inputs) and "pool.py" not in str(inputs)
    # The client moved out whole: the container code holds none of it.
    engine_text = (REPO / "onlydocker" / "engine" / "run.py").read_text()
    for name in ("def endpoint(", "def connect(", "def import_image(", "ContextAPI", "HOW_TO_START"):
        assert name not in engine_text
