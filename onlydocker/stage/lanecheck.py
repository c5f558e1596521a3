"""A lane's data, checked before anything builds (dodo.py, at every run).

A lane is data: a folder `stages/<stage>/lanes/<lane>/` for every stage that
has lane data, its `lane.toml` with the settings the stage's build reads,
and a Kconfig fragment (`config`) for a tool with Kconfig. A mistake in any
of them used to surface when the stage started, or a minute into the
kernel's build; here it is one line naming the stage, the file and the key
or option, before the first task runs:

- the lane's folder is missing for a stage that has lanes/;
- lane.toml lacks a setting the stage's `[lane_settings]` (stage.toml)
  requires, has one it does not declare (a typo), or one of the wrong type;
  a container stage's settings must also render as its lane.env
  (lanedata.py), and a Python stage's stage.py may check deeper with a
  `check_lane(conf_path, needs)` of its own;
- the fragment names an option no Kconfig file of the stage's sources
  defines. The symbols come from the fetch task's check of the archive
  (kconfig.py): when a source is not checked yet, its fetch task runs this
  check right after it (`check_fragments`), still before the stage.
"""
from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from .. import atomic
from ..errors import OnlyDockerError, StageError
from ..formats import kconfig
from . import lanedata
from .decl import KINDS
from .pystage import load_module

if TYPE_CHECKING:
    from ..config import Settings
    from .decl import StageDecl
    from .sources import LaneSources

FRAGMENT = "config"
CHECK_LANE = "def check_lane("
# A setting's type in [lane_settings], its test and the words for it.
_TYPES = {
    "string": (lambda v: isinstance(v, str), "a string"),
    "integer": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "boolean": (lambda v: isinstance(v, bool), "true or false"),
    "strings": (lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v), "a list of strings"),
    "table": (lambda v: isinstance(v, dict), "a table"),
    "tables": (lambda v: isinstance(v, list) and all(isinstance(i, dict) for i in v), "an array of tables"),
}


def _shown(decl: StageDecl, path: Path) -> str:
    """`path` as the user finds it: from the project's root (stages/...)."""
    try:
        return str(path.relative_to(decl.dir.parent.parent))
    except ValueError:
        return str(path)


def _fail(decl: StageDecl, path: Path, what: str) -> None:
    raise StageError(f"stage {decl.name}: {_shown(decl, path)}: {what}")


def check_folder(decl: StageDecl, lane: str) -> None:
    lanes_dir = decl.dir / "lanes"
    if lanes_dir.is_dir() and not decl.lane_dir(lane).is_dir():
        have = ", ".join(sorted(p.name for p in lanes_dir.iterdir() if p.is_dir())) or "none"
        _fail(decl, decl.lane_dir(lane), f"is missing: lane {lane!r} has no data for this stage (lanes there: {have})")


def check_settings(decl: StageDecl, lane: str) -> None:
    """lane.toml against the stage's [lane_settings]."""
    path = decl.lane_dir(lane) / lanedata.LANE_TOML
    declared = dict(decl.lane_settings)
    stage_toml = _shown(decl, decl.dir / "stage.toml")
    if not path.is_file():
        required = sorted(k for k, t in declared.items() if not t.endswith("?"))
        if required and decl.lane_dir(lane).is_dir():
            _fail(decl, path, f"is missing: {stage_toml}'s [lane_settings] requires {', '.join(required)}")
        return
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        _fail(decl, path, f"cannot read: {e.strerror}")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        _fail(decl, path, f"not valid TOML: {e}")
    for key in sorted(data):
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            _fail(decl, path, f"key {key!r} is no setting of this stage ({stage_toml}'s [lane_settings]: {known})")
    for key, kind in sorted(declared.items()):
        test, words = _TYPES[kind.removesuffix("?")]
        if key not in data:
            if not kind.endswith("?"):
                _fail(decl, path, f"missing key {key!r} ({words}; {stage_toml}'s [lane_settings] requires it)")
        elif not test(data[key]):
            _fail(decl, path, f"key {key!r}: expected {words}, got {data[key]!r}")
    try:
        if decl.kind == "container":
            lanedata.render(data, _shown(decl, path))       # the values, as lane.env holds them
        elif CHECK_LANE in (decl.dir / KINDS["python"]).read_text():
            # Loaded only when it has one: a stage.py's imports cost a no-op run tens of ms.
            check = getattr(load_module(decl.dir), "check_lane", None)
            if callable(check):
                check(path, set(decl.needs))
    except OnlyDockerError as e:
        raise StageError(f"stage {decl.name}: {e}") from None


def check_fragments(decl: StageDecl, lane: str, sources: LaneSources) -> None:
    """The Kconfig fragment's options against the symbols of the stage's
    sources, when this tree has checked them (else nothing is known yet)."""
    fragment = decl.lane_dir(lane) / FRAGMENT
    if not decl.kconfig or not fragment.is_file():
        return
    known: set[str] = set()
    files = []
    for s in sources.of(decl):
        symbols = sources.kconfig_symbols(s)
        if symbols:
            known |= symbols
            files.append(s.file)
    if not known:
        return
    unknown = kconfig.unknown_options(fragment, known)
    if unknown:
        n, sym = unknown[0]
        more = f" (and {len(unknown) - 1} more: {', '.join(s for _, s in unknown[1:])})" if len(unknown) > 1 else ""
        _fail(decl, fragment, f"line {n}: CONFIG_{sym} is no option of {' '.join(files)}: "
                              f"no Kconfig file there defines {sym}{more}")


def check_lane(stages: dict[str, StageDecl], lane: str, sources: LaneSources | None = None) -> None:
    """Every stage's lane data for `lane`; the fragments too when `sources`
    is given. Raises StageError, one line, at the first problem."""
    for decl in stages.values():
        check_folder(decl, lane)
        check_settings(decl, lane)
        if sources is not None:
            check_fragments(decl, lane, sources)


def signs(decl: StageDecl, lane: str) -> bool:
    """The stage signs for Secure Boot in this lane (its `secureboot`
    setting names a lane setting, and that is true here)."""
    conf = decl.lane_dir(lane) / "lane.toml"
    if decl.secureboot is None or not conf.is_file():
        return False
    return bool(tomllib.loads(conf.read_text()).get(decl.secureboot))


def check_secureboot(stages: dict[str, StageDecl], lane: str, settings: Settings, epoch: int,
                     memo_dir: Path) -> None:
    """A configured Secure Boot key and certificate pass secureboot.check
    before any task, when a stage of the lane signs with them. The verdict
    is remembered by the files' stat and the epoch: loading cryptography's
    X.509 costs about 90 ms, which a no-op run does not pay again."""
    key, cert = settings.secureboot_key, settings.secureboot_cert
    have_key = os.path.lexists(key)
    if not (have_key or os.path.lexists(cert)) or not any(signs(d, lane) for d in stages.values()):
        return
    try:
        seen = [[str(p), st.st_mtime_ns, st.st_size, st.st_ino]
                for p in (key, cert) if os.path.lexists(p) for st in [p.stat()]]
    except OSError:
        seen = None       # secureboot.check names what is missing
    memo = memo_dir / "secureboot.json"
    verdict = json.dumps({"files": seen, "epoch": epoch, "key": have_key}, sort_keys=True)
    if seen is not None and memo.is_file() and memo.read_text() == verdict:
        return
    from .. import secureboot
    sb = secureboot.SecureBootKey(key, cert)
    # Without the key, the certificate alone (outputs signed for it come from a cache).
    if have_key:
        secureboot.check(sb, epoch)
    else:
        secureboot.check_certificate(sb, epoch)
    if seen is not None:
        memo_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(memo, verdict)
