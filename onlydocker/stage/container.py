"""The container runner: a container stage's build.sh run in the builder
image, its inputs copied in and its outputs copied out through the engine
API (engine/run.py), with the environment the design fixes."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..canon import rfc2822
from ..config import Variation
from ..errors import BuildError
from ..progress import for_stage
from . import kept
from .paths import LanePaths
from .sources import LaneSources

if TYPE_CHECKING:
    from ..inputs.lock import Lane
    from .decl import StageDecl
    from .kept import Keep

PRELUDE = Path(__file__).with_name("prelude.sh")
# Shell helpers shipped to /build/engine/ in every container stage.
HELPERS = {"kconfig-fragment": Path(__file__).with_name("kconfig-fragment.sh")}
# Where a signing stage (stage.toml: secureboot = true) finds the Secure Boot
# key and certificate, when one is configured (secureboot.py).
SECUREBOOT_KEY = "/build/secureboot/db.key"
SECUREBOOT_CERT = "/build/secureboot/db.crt"
# The prelude's line when a build goes on from its kept tree (prelude.sh).
KEPT_REUSED = "prelude: kept tree: reused"


def container_env(decl: StageDecl, lane: Lane, v: Variation) -> dict[str, str]:
    epoch = lane.source_date_epoch
    env = {
        "SOURCE_DATE_EPOCH": str(epoch),
        "KBUILD_BUILD_TIMESTAMP": rfc2822(epoch),
        "KBUILD_BUILD_USER": "onlydocker",
        "KBUILD_BUILD_HOST": "onlydocker",
        "KBUILD_BUILD_VERSION": "1",
        "TZ": v.tz,
        "LC_ALL": v.locale,
        "HOME": "/build/home",
        "XZ_OPT": "-T1",
        "JOBS": str(v.jobs or os.cpu_count() or 1),
        "LANE": lane.name,
        "STAGE": decl.name,
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ONLYDOCKER_UMASK": v.umask,
    }
    if v.faketime:
        env["FAKETIME"] = v.faketime
        env["ONLYDOCKER_FAKETIME"] = "1"
    return env


@dataclass(frozen=True)
class ContainerRunner:
    lane: Lane
    paths: LanePaths
    sources: LaneSources
    variation: Variation

    def _secureboot_inputs(self, decl: StageDecl) -> list[tuple[Path, str]]:
        """A signing stage's key and certificate where its lane setting asks
        for signing and a key is configured, checked first (one line each,
        before anything is signed). They enter its container only (owned by
        its user, the key's mode 0600 kept), never its outputs: build.sh
        publishes the certificate itself."""
        from .. import secureboot
        from .lanecheck import signs
        if not signs(decl, self.lane.name):
            return []
        settings = self.sources.fetcher.settings
        sb = secureboot.configured(settings.secureboot_key, settings.secureboot_cert)
        if sb is None:
            return []
        secureboot.check(sb, self.lane.source_date_epoch)
        return [(sb.key, SECUREBOOT_KEY), (sb.cert, SECUREBOOT_CERT)]

    def build(self, decl: StageDecl, raw_tar: Path, keep: Keep | None = None) -> bool:
        """Run the stage's build.sh; its /build/out as a tar at `raw_tar`.
        With `keep`, /build/src is the stage's kept tree (kept.py); True when
        the build went on from it (the prelude says which)."""
        from ..builder import image as builder_image
        from ..engine import pool as engines
        from ..engine import run as engine
        from ..formats.unpack import kind_of
        from . import lanedata
        v = self.variation
        sources = self.sources.verified(decl)
        inputs: list[tuple[Path, str]] = [(PRELUDE, "/build/engine/prelude.sh")]
        inputs += [(path, f"/build/engine/{name}") for name, path in HELPERS.items()]
        # The prelude unpacks what the host checked as a tar: one decision.
        listing = "".join(f"{s.name} {s.file} {s.version} {kind_of(s.file)}\n" for s, _ in sources)
        with tempfile.TemporaryDirectory(prefix="inputs-", dir=self.paths.tmp()) as tmp:
            (Path(tmp) / "sources.txt").write_text(listing)
            inputs.append((Path(tmp) / "sources.txt", "/build/engine/sources.txt"))
            for rel, path in decl.files(self.lane.name):
                inputs.append((path, f"/build/stage/{rel}"))
            inputs += lanedata.container_inputs(decl.lane_dir(self.lane.name), Path(tmp))   # lane.toml -> lane.env
            for s, path in sources:
                inputs.append((path, f"/build/sources/{s.file}"))
                for rel, p in self.sources.patches(s):
                    inputs.append((p, f"/build/patches/{rel}"))
            for need in decl.needs:
                inputs.append((self.paths.stage_dir(need), f"/build/deps/{need}"))
            if decl.secureboot is not None:
                inputs += self._secureboot_inputs(decl)
            env = container_env(decl, self.lane, v)
            volumes = {}
            if keep is not None:
                # Not in the key's environment (stage/key.py): how far the
                # build starts from changes how long it takes, not its bytes.
                env["ONLYDOCKER_KEEP"] = keep.identity
                volumes = {keep.volume: kept.MOUNT}
            builder = self.paths.builder()
            spec = engine.RunSpec(image=builder["tag"], command=["sh", "/build/engine/prelude.sh"],
                                  env=env, workdir="/build", hostname=v.hostname, inputs=inputs,
                                  user=v.user, root=decl.root, memory=engine.memory_for(int(env["JOBS"])),
                                  volumes=volumes)
            log_path = self.paths.log_path(decl.name)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            # The engine with the fewest stages running (engine/pool.py); the
            # same container on any of them, so the same bytes come out.
            pool = engines.pool(self.sources.fetcher.settings)
            reused = []

            def note(line: str) -> None:
                if line.startswith(KEPT_REUSED):
                    reused.append(line)
                beat.note(line)

            with pool.lease(decl.name) as on:
                pool.provide_builder(on, builder, builder_image.import_cached)
                where = f" on engine {on.name}" if pool.several else ""
                if where:
                    print(f"{decl.name}: building{where}", flush=True)
                try:
                    if keep is not None:
                        kept.prepare(on.client, keep, self.lane.name, decl.name)
                    with for_stage(decl.name) as beat:
                        engine.run(on.client, spec, output_tar=raw_tar, log_path=log_path,
                                   name_prefix=f"onlydocker-{self.lane.name}-{decl.name}", on_line=note)
                except BuildError as e:
                    raise BuildError(f"stage {decl.name} failed{where}: {e}") from None
            return bool(reused)
