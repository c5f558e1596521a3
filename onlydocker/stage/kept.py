"""Kept build trees: what makes a container stage's next build fast.

A container stage that says `keep = true` in its stage.toml builds in
/build/src, and that folder is kept for its next build: a named Docker
volume, `onlydocker-keep-<lane>-<stage>`, on the engine that built it,
mounted at /build/src. Kbuild (the kernel, BusyBox) then rebuilds only what
a changed option touches: its `fixdep` records, for every object, the
CONFIG_ symbols and headers it read, and its .cmd files the command lines,
so a changed option recompiles the objects that read it and relinks.

Why a kept tree never changes the bytes (docs/design.md says it at length):

- It is built on only when its stamp equals this build's *identity*: the
  sha256 of every input of the stage key except the lane's Kconfig fragment
  (`lane/config`): the same sources, patches, scripts, lane data, builder,
  engine code and needed stages. The prelude writes the stamp after build.sh
  succeeded and removes it before build.sh starts, so a tree whose build
  failed, was killed or ran out of disk has none and is wiped: it costs
  only a clean build. A tree from another builder has another identity.
- What may differ, the fragment, is what Kbuild tracks by design (above).
  The same absolute path (/build/src/<name>) in both builds, the fixed
  KBUILD_BUILD_* and SOURCE_DATE_EPOCH, and outputs copied from /build/out
  alone (never from the tree by listing it) leave no trace of the tree's
  history in what comes out.
- It is never in the stage key, never in the cache's or the remote's
  entries, and never used by `doit repro`'s second build, a varied build,
  a forced rebuild or a build under ONLYDOCKER_CLEAN=1: the clean builds
  that check it. tests/test_kept.py and the modern lane's kernel test
  compare an incremental build with a clean one of the same key, byte for byte.
- One build at a time uses a volume: the prelude holds an flock inside it
  (on the engine, so two machines sharing an engine wait for each other too).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import docker.errors

from ..canon import compact_json
from ..engine import pool as engines
from ..errors import EngineError

LABEL = "org.onlydocker.keep"          # "<lane>/<stage>" on every kept volume
MOUNT = "/build/src"
# The one input that may differ between the build that left the tree and the
# build that uses it: the lane's Kconfig fragment (decl.py's files(): lane/config).
VARIES = ("lane/config",)


@dataclass(frozen=True)
class Keep:
    volume: str
    identity: str


def volume_name(lane: str, stage: str) -> str:
    return f"onlydocker-keep-{lane}-{stage}"


def identity(key_inputs: dict) -> str:
    """The stage key's inputs without the lane's Kconfig fragment, hashed."""
    rest = dict(key_inputs)
    rest["files"] = {rel: d for rel, d in key_inputs.get("files", {}).items() if rel not in VARIES}
    return hashlib.sha256(compact_json(rest)).hexdigest()


def prepare(client, keep: Keep, lane: str, stage: str) -> None:
    """The volume, labelled; made when missing (creating an existing volume
    of the same driver is a no-op in the engine)."""
    try:
        client.volumes.create(name=keep.volume, labels={LABEL: f"{lane}/{stage}"})
    except docker.errors.APIError as e:
        raise EngineError(f"the engine refused the kept tree's volume {keep.volume} of stage {stage}: "
                          f"{e.explanation or e}; ONLYDOCKER_CLEAN=1 builds without it") from None


@dataclass(frozen=True)
class KeptTree:
    stage: str
    volume: str
    size: int | None        # bytes, as the engine counts them (None: it did not say)


def listing(client, lane: str) -> list[KeptTree]:
    """The lane's kept trees on this engine, by stage, with their sizes
    (the engine's disk-usage call: it walks every volume, a few seconds)."""
    out = []
    for v in client.df().get("Volumes") or []:
        owner = (v.get("Labels") or {}).get(LABEL, "")
        v_lane, _, stage = owner.partition("/")
        if v_lane != lane or not stage:
            continue
        size = (v.get("UsageData") or {}).get("Size")
        out.append(KeptTree(stage, v["Name"], size if isinstance(size, int) and size >= 0 else None))
    return sorted(out, key=lambda t: t.stage)


def on_engines(settings, lane: str) -> list[tuple[engines.Member, list[KeptTree]]]:
    """(engine, its kept trees of the lane), for every engine that answers."""
    return [(m, listing(m.client, lane)) for m in engines.pool(settings).members()]


def remove(client, volume: str) -> None:
    try:
        client.volumes.get(volume).remove()
    except docker.errors.NotFound:
        pass                  # gone already: what was asked
    except docker.errors.APIError as e:
        raise EngineError(f"the engine did not remove the kept tree's volume {volume}: "
                          f"{e.explanation or e} (a build using it still runs?)") from None
