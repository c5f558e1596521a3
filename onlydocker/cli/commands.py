"""doit commands (plugins, registered in pyproject.toml): verify, lock,
keygen, repro, legal-info. They are commands, not tasks: they audit or orchestrate
builds rather than being steps of one."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from doit.cmd_base import Command, opt_cwd, opt_dodo

from .. import config, log
from ..errors import ConfigError, OnlyDockerError
from ..inputs import lock
from ..stage.paths import LanePaths
from .report import quiet_on_closed_pipe

OPT_LOCK = {
    "name": "lock",
    "long": "lock",
    "type": str,
    "default": "",
    "help": "the lane's lock (default: $ONLYDOCKER_LOCK or sources.lock)",
}

OPT_JUNIT = {
    "name": "junit",
    "long": "junit",
    "type": str,
    "default": "",
    "help": "also write a JUnit XML report to this path: one test case per check (for CI's test reporters)",
}


def _lane_args(params, args) -> tuple[str | None, list[str]]:
    """The lane as builds name it (`lock=PATH`, which users type: doit takes
    every NAME=VALUE word as a variable) or as `--lock PATH`; and the other
    arguments."""
    from doit import get_var
    lock_path = params.get("lock") or get_var("lock", None)
    rest = []
    for a in args:
        if a.startswith("lock="):
            lock_path = a.split("=", 1)[1]
        else:
            rest.append(a)
    return lock_path, rest


def _project_root(params) -> Path:
    """The project a command works on, found as doit finds dodo.py: `-f FILE`
    (its folder), `-d DIR`, else the current folder when it holds dodo.py,
    else this package's project."""
    if params.get("cwdPath"):
        base = Path(params["cwdPath"])
    else:
        base = Path.cwd()
    named = params.get("dodoFile")
    dodo = base / (named or "dodo.py")
    if dodo.exists():
        return dodo.resolve().parent
    if (named and named != "dodo.py") or params.get("cwdPath"):
        # A project the user named that is not there: say so, rather than
        # working on another one.
        raise ConfigError(f"no {dodo}: -f names the project's dodo.py, -d its folder")
    return config.PROJECT_ROOT


class LaneCommand(Command):
    """A command on one lane, named as builds name it (`lock=PATH`) or with
    `--lock PATH`; the project found with `-f`/`-d` like doit's own commands.
    Subclasses write `run`; a bad lock, setting or input is one line
    ("error: ...") and exit `error_exit`, never a traceback."""
    cmd_options: tuple[dict[str, object], ...] = (OPT_LOCK, opt_dodo, opt_cwd)
    error_exit = 1

    def execute(self, params, args):
        quiet_on_closed_pipe()
        try:
            lock_path, rest = _lane_args(params, args)
            settings = config.load(lock=lock_path, root=_project_root(params))
            return self.run(settings, lock.load(settings.lock_path), params, rest)
        except OnlyDockerError as e:
            log.error(str(e))
            return self.error_exit

    def run(self, settings: config.Settings, lk: lock.Lock, params, args: list[str]) -> int:
        raise NotImplementedError

    @staticmethod
    def stages(settings: config.Settings) -> dict:
        """The project's stage declarations (decl.py), checked as a build checks them."""
        from ..stage.decl import load_stages
        return load_stages(settings.root / "stages")


def verify_sources(lk: lock.Lock, settings: config.Settings) -> list:
    """Re-hash every cached source of the lock: one SourceStatus each
    (OK, MISSING, CORRUPT with both hashes, UNPINNED), in lock order."""
    from ..inputs.fetch import Fetcher
    fetcher = Fetcher(settings)
    return [fetcher.check(s) for s in lk.sources]


def verify_builder(lk: lock.Lock, settings: config.Settings) -> list:
    """Re-hash every cached .deb the builder is pinned to (OK, MISSING,
    CORRUPT); one UNPINNED line when [builder] pins nothing yet."""
    from ..inputs.fetch import Fetcher
    from ..publish.verify import Finding
    if not lk.builder.pinned:
        return [Finding("UNPINNED", f"builder ({lk.builder.suite})",
                        "[builder] debs = []: no package pinned yet; run `doit lock --builder`")]
    fetcher = Fetcher(settings)
    return [fetcher.check(d.source()) for d in lk.builder.debs]


def pin_sources(lk: lock.Lock, settings: config.Settings, out=None) -> tuple[list, list]:
    """`doit lock`: fetch every source that is not fully pinned, verify
    whatever hash it already has, and write its sha256 and size into the lock
    (one atomic rewrite per source). Returns ([(name, sha256, size)],
    [(name, error)]): a source that fails does not stop the others."""
    from ..inputs.fetch import Fetcher
    out = out or sys.stdout
    fetcher = Fetcher(settings)
    pinned, failed = [], []
    for s in lk.sources:
        if s.pinned:
            continue
        checked = ", ".join(sorted(s.hashes())) or "nothing (no hash in the lock: trusted on first use)"
        try:
            _, sha, size = fetcher.fetch_for_pinning(s)
            lock.pin(lk.path, s.name, sha, size)
        except OnlyDockerError as e:
            failed.append((s.name, e))
            continue
        print(f"pinned {s.name} ({s.file}): sha256 {sha}, size {size}; checked against {checked}", file=out)
        pinned.append((s.name, sha, size))
    return pinned, failed


class Verify(LaneCommand):
    name = "verify"
    doc_purpose = "re-hash every cached source and every artifact; check the signatures"
    doc_usage = ("[--lock PATH | lock=PATH] [--junit PATH] "
                 "[--rebuilders K --trusted-rebuilder-keys KEY.pub ... [--attestations DIR]]")
    cmd_options = LaneCommand.cmd_options + (OPT_JUNIT, {
        "name": "rebuilders", "long": "rebuilders", "type": int, "default": 0,
        "help": "accept the artifacts only when at least K trusted rebuilders attested these exact bytes",
    }, {
        "name": "trusted_rebuilder_keys", "long": "trusted-rebuilder-keys", "type": list, "default": [],
        "help": "a rebuilder's public key (minisign format); repeat it, or separate paths with commas",
    }, {
        "name": "attestations", "long": "attestations", "type": str, "default": "",
        "help": "the folder of rebuilders' attestations (*.rebuild.dsse.json; default: out/<lane>/attestations)",
    })
    error_exit = 2          # 1 is "verify found problems"

    def run(self, settings, lk, params, args):
        from ..publish.dist import public_key_path
        from ..publish.verify import verify_dist
        from .junit import Case, write
        cases = []

        def report(group: str, finding, name: str) -> None:
            print(f"  {finding}")
            cases.append(Case(group, name, None if finding.ok else str(finding).strip()))

        print(f"sources of {settings.lock_path} (cache {settings.cache_dir / 'sources'}):")
        for status in verify_sources(lk, settings):
            report("sources", status, status.name)
        print(f"builder packages ([builder] debs, {len(lk.builder.debs)}):")
        for status in verify_builder(lk, settings):
            report("builder", status, status.name)
        dist = LanePaths.of(settings.out_root, lk.lane.name).dist
        print(f"artifacts in {dist}:")
        pub = public_key_path(settings)
        for finding in verify_dist(dist, pub if pub.exists() else None):
            kind = ("sbom" if finding.state.startswith("SBOM") else
                    "signature" if finding.state in ("SIGNATURE-OK", "BAD-SIGNATURE", "UNSIGNED") else "sha256")
            report("artifacts", finding, f"{kind}: {finding.name}")
        if params.get("rebuilders") or params.get("trusted_rebuilder_keys"):
            from ..publish.attest import verify_release
            folder = Path(params["attestations"]) if params.get("attestations") else dist.parent / "attestations"
            keys = [k for v in params["trusted_rebuilder_keys"] for k in v.split(",") if k]
            print(f"rebuilders ({params['rebuilders']} required, attestations in {folder}):")
            for line in verify_release(dist, params["rebuilders"], keys, folder, pub):
                report("rebuilders", line, f"{line.state.lower()}: {line.name}")
        problems = sum(c.failure is not None for c in cases)
        print("verify: OK" if not problems else f"verify: {problems} problem(s)")
        if params.get("junit"):
            write(Path(params["junit"]), f"doit verify {lk.lane.name}", cases)
            print(f"verify: JUnit report {params['junit']}")
        return 0 if not problems else 1


def pin_builder(lk: lock.Lock, settings: config.Settings, log_path: Path, out=None) -> list[str]:
    """`doit lock --builder`: resolve the [builder] package list against the
    configured mirror, print what changed against the current pin
    (package: old -> new) and rewrite [builder] debs (atomic; the rest of the
    lock as it was). Returns the changes."""
    import tempfile

    from ..builder import image as builder
    out = out or sys.stdout
    cache = settings.cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".resolve-", dir=cache) as tmp:
        debs = builder.resolve(lk.builder, settings, log_path, Path(tmp))
    changes = builder.changed_debs(lk.builder.debs, debs)
    total = sum(d.size for d in debs)
    if not lk.builder.pinned:
        print(f"builder ({lk.builder.suite}): pinned {len(debs)} packages ({total / 1e6:.1f} MB), "
              f"none pinned before", file=out)
    elif not changes:
        print(f"builder ({lk.builder.suite}): {len(debs)} packages, unchanged", file=out)
        return []
    else:
        print(f"builder ({lk.builder.suite}): {len(changes)} change(s) against the lock:", file=out)
        for c in changes:
            print(f"  {c}", file=out)
    lock.pin_builder(lk.path, debs)
    print(f"{lk.path}: [builder] debs rewritten ({len(debs)} packages)", file=out)
    return changes


class Lock(LaneCommand):
    name = "lock"
    doc_purpose = ("pin the sha256 and size of unpinned sources after a verified fetch; "
                   "--builder: pin every package of the builder image; "
                   "--update: move the Debian pins to the archive's current signed indexes")
    doc_usage = "[--lock PATH | lock=PATH] [--builder | --update]"
    cmd_options = (*LaneCommand.cmd_options, {
        "name": "builder",
        "long": "builder",
        "type": bool,
        "default": False,
        "help": "resolve [builder]'s packages against the configured Debian mirror and pin every .deb "
                "the bootstrap installs (shows what changed)",
    }, {
        "name": "update",
        "long": "update",
        "type": bool,
        "default": False,
        "help": "re-resolve every debian:/debian-security: source and the builder's .debs against the "
                "archive's current signed indexes (InRelease checked against $ONLYDOCKER_DEBIAN_KEYRING, "
                "default Debian's); print `name: old -> new` for each change and rewrite those pins",
    })

    def run(self, settings, lk, params, args):
        if params.get("update"):
            from ..builder import lockupdate
            if params.get("builder"):
                raise ConfigError("--update re-resolves the builder too: give one of --update, --builder")
            if settings.offline:
                raise ConfigError("`doit lock --update` reads the Debian archive: not with ONLYDOCKER_OFFLINE set")
            lockupdate.update(lk, settings, LanePaths.of(settings.out_root, lk.lane.name).log_path("builder-resolve"))
            return 0
        if params.get("builder"):
            if settings.offline:
                log.error("`doit lock --builder` resolves against the Debian mirror: "
                          "not with ONLYDOCKER_OFFLINE set")
                return 1
            pin_builder(lk, settings, LanePaths.of(settings.out_root, lk.lane.name).log_path("builder-resolve"))
            return 0
        if not lk.builder.pinned:
            log.say(f"{settings.lock_path}: [builder] pins no packages yet: `doit lock --builder` pins them")
        if all(s.pinned for s in lk.sources):
            print(f"{settings.lock_path}: every source is pinned")
            return 0
        pinned, failed = pin_sources(lk, settings)
        for name, e in failed:
            log.error(f"not pinned: {name}: {e}")
        print(f"{settings.lock_path}: pinned {len(pinned)} source(s)"
              + (f", {len(failed)} failed" if failed else ""))
        return 1 if failed else 0


class Keygen(Command):
    name = "keygen"
    doc_purpose = ("make the Ed25519 signing key and the Secure Boot key and certificate (outside the "
                   "repository and out/); a key that exists is kept")
    doc_usage = ""
    cmd_options = ()

    def execute(self, params, args):
        from .. import secureboot, sign
        settings = config.load()
        forbidden = [config.PROJECT_ROOT, Path.cwd()]
        try:
            if os.path.lexists(settings.signing_key):
                print(f"signing key: {settings.signing_key} (there already: kept)")
            else:
                sign.generate_key(settings.signing_key, forbidden=forbidden)
                print(f"signing key: {settings.signing_key} (readable by its owner only)")
                print(f"public key:  {settings.signing_key}.pub")
            if os.path.lexists(settings.secureboot_key):
                print(f"Secure Boot key: {settings.secureboot_key} (there already: kept)")
            else:
                secureboot.generate(settings.secureboot_key, settings.secureboot_cert, forbidden=forbidden)
                print(f"Secure Boot key: {settings.secureboot_key} (RSA {secureboot.RSA_BITS}, "
                      f"readable by its owner only)")
                print(f"its certificate: {settings.secureboot_cert} (enroll it in a machine's db; published "
                      f"beside the artifacts as onlydocker-secureboot.crt)")
        except OnlyDockerError as e:
            log.error(str(e))
            return 1
        return 0


class Repro(LaneCommand):
    name = "repro"
    doc_purpose = "build twice under varied conditions and compare every byte (diffoscope on a difference)"
    doc_usage = "[--lock PATH | lock=PATH] [-n N] [--junit PATH] [STAGE ...]"
    cmd_options = LaneCommand.cmd_options + (OPT_JUNIT, {
        "name": "process",
        "short": "n",
        "long": "process",
        "type": int,
        "default": 1,
        "help": "stages built at once in each of the two builds, as `doit -n N` (default 1)",
    },)

    def run(self, settings, lk, params, args):
        from . import repro
        if params["process"] < 1:
            log.error(f"-n {params['process']}: the number of stages at once is 1 or more")
            return 2
        stages = self.stages(settings)
        unknown = [a for a in args if a not in stages]
        if unknown:
            log.error(f"unknown stage(s) {', '.join(unknown)}; stages are {', '.join(stages)}")
            return 2
        return repro.run(settings.root, settings.lock_path, settings.out_root, lk.lane.name,
                         list(args), list(stages), processes=params["process"],
                         junit=Path(params["junit"]) if params.get("junit") else None)


class LegalInfo(LaneCommand):
    name = "legal-info"
    doc_purpose = "write out/<lane>/legal-info/: sources, patches, license texts and a manifest"
    doc_usage = "[--lock PATH | lock=PATH]"

    def run(self, settings, lk, params, args):
        import json

        from ..inputs.fetch import Fetcher
        from ..publish import legal
        stages = self.stages(settings)
        shipped = legal.shipped_sources(stages)
        paths = LanePaths.of(settings.out_root, lk.lane.name)
        try:
            builder = json.loads(paths.builder_record.read_text())
        except (OSError, ValueError):
            builder = None
        dest = paths.legal_info
        rows = legal.write(lk, Fetcher(settings), settings.root, dest,
                           in_image={s.name for s in lk.sources if s.group in shipped}, builder=builder)
        size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
        licenses = dest / "licenses"
        n_licenses = sum(1 for f in licenses.rglob("*") if f.is_file()) if licenses.exists() else 0
        print(f"legal-info of lane {lk.lane.name} in {dest}: {len(rows)} source(s), {n_licenses} "
              f"license file(s), {sum(len(r['patches'].split()) for r in rows)} patch(es), {size / 1e6:.1f} MB"
              + ("" if builder else "; no builder record, so no host-manifest.csv (run `doit` once)"))
        return 0


class Clean(LaneCommand):
    name = "clean"
    doc_purpose = "remove the lane's outputs in out/<lane>/ (never a cache); say each path first"
    doc_usage = "[--lock PATH | lock=PATH] [-n] [--state] [--cache]"
    doc_description = ("Without an option: stages/, dist/ and its records, legal-info/, logs/, last-run.json "
                       "and tmp/ of out/<lane>/. The options add to that; builder images, other keys' entries "
                       "and the remote cache are never touched. See onlydocker/cli/clean.py.")
    cmd_options = (*LaneCommand.cmd_options,
                   {"name": "dryrun", "short": "n", "long": "dry-run", "type": bool, "default": False,
                    "help": "say what would be removed, remove nothing"},
                   {"name": "state", "long": "state", "type": bool, "default": False,
                    "help": "also the lane's kept incremental state: doit's database, the sources' checked "
                            "verdicts, the imports memo, the builder's record"},
                   {"name": "cache", "long": "cache", "type": bool, "default": False,
                    "help": "also the stage cache entries of the keys the lane's stages in out/ were made from"},
                   {"name": "kept", "long": "kept", "type": bool, "default": False,
                    "help": "also the lane's kept build trees (Docker volumes, `doit kept` lists them) on "
                            "every engine: the next build of those stages starts from a fresh extraction"})

    def run(self, settings, lk, params, args):
        from . import clean
        from .tasks import RunLock
        if args:
            raise ConfigError(f"doit clean takes no arguments (got {' '.join(args)}); "
                              f"--state, --cache and --kept say what else to remove")
        out = settings.out_root / lk.lane.name
        if not params["dryrun"] and out.is_dir():
            RunLock(out / ".run.lock").acquire()      # not while a build writes there (or uses a kept tree)
        kept_n, kept_bytes = self._clean_kept(settings, lk, params["dryrun"]) if params["kept"] else (0, 0)
        if not out.is_dir() and not kept_n:
            print(f"lane {lk.lane.name}: nothing to remove ({out} does not exist)")
            return 0
        items = clean.plan(out, settings.stage_cache, state=params["state"], cache=params["cache"]) \
            if out.is_dir() else []
        if not items and not kept_n:
            print(f"lane {lk.lane.name}: nothing to remove in {out}")
            return 0
        verb = "would remove" if params["dryrun"] else "removing"
        for r in items:
            print(f"{verb} {r.what:<11} {clean.human(r.size):>9}  {r.path}")
        if not params["dryrun"]:
            clean.remove(items)
        total = clean.human(sum(r.size for r in items) + kept_bytes)
        trees = f" and {kept_n} kept tree(s)" if kept_n else ""
        print(f"lane {lk.lane.name}: {'would remove' if params['dryrun'] else 'removed'} {len(items)} path(s)"
              f"{trees}, {total}" + ("" if params["cache"] else "; every cache kept"))
        return 0

    @staticmethod
    def _clean_kept(settings, lk, dryrun: bool) -> tuple[int, int]:
        """Remove (or say) the lane's kept trees; how many, and their bytes."""
        from ..stage import kept
        from . import clean
        verb = "would remove" if dryrun else "removing"
        n = size = 0
        for member, trees in kept.on_engines(settings, lk.lane.name):
            for t in trees:
                print(f"{verb} {'kept tree':<11} {clean.human(t.size or 0):>9}  volume {t.volume} "
                      f"(stage {t.stage}, engine {member.name})")
                if not dryrun:
                    kept.remove(member.client, t.volume)
                n, size = n + 1, size + (t.size or 0)
        return n, size


class Kept(LaneCommand):
    name = "kept"
    doc_purpose = "list the lane's kept build trees (what makes a stage's next build incremental), size per stage"
    doc_usage = "[--lock PATH | lock=PATH]"
    doc_description = ("A stage with `keep = true` (the kernel, BusyBox) keeps its build tree in a Docker volume "
                       "on the engine that built it, for its next build: never in its key, never cached or "
                       "uploaded, never used by `doit repro`'s clean build or under ONLYDOCKER_CLEAN=1. "
                       "`doit clean --kept` removes them. See onlydocker/stage/kept.py.")

    def run(self, settings, lk, params, args):
        from ..stage import kept
        from . import clean
        if args:
            raise ConfigError(f"doit kept takes no arguments (got {' '.join(args)})")
        total = n = 0
        for member, trees in kept.on_engines(settings, lk.lane.name):
            for t in trees:
                size = clean.human(t.size) if t.size is not None else "?"
                print(f"{t.stage:<12} {size:>9}  volume {t.volume} on engine {member.name}")
                total += t.size or 0
                n += 1
        print(f"lane {lk.lane.name}: {n} kept tree(s), {clean.human(total)}"
              + ("; `doit clean --kept` removes them" if n else ""))
        return 0


class Explain(LaneCommand):
    name = "explain"
    doc_purpose = "say, one line a stage, why it would not be up to date: which key input changed, or its outputs"
    doc_usage = "[--lock PATH | lock=PATH] [STAGE ...]"
    doc_description = ("The inputs behind each stage's key are recorded when it is made (out/<lane>/stages/"
                       "<stage>.inputs.json); explain diffs them against what a build would use now, and says "
                       "whether the new key would be restored from the local or remote cache, or built. "
                       "Nothing is built or changed. Named stages are said even when up to date.")

    def run(self, settings, lk, params, args):
        from . import explain
        from .tasks import workspace_from_env
        stages = self.stages(settings)
        unknown = [a for a in args if a not in stages]
        if unknown:
            raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; stages are {', '.join(stages)}")
        _, ws = workspace_from_env(str(settings.lock_path), root=settings.root)
        return explain.run(ws, stages, settings, list(args), sys.stdout)


class Cache(LaneCommand):
    name = "cache"
    doc_purpose = "cache push: upload, signed, every local stage and builder entry of the lane the remote cache lacks"
    doc_usage = "push [--lock PATH | lock=PATH]"
    doc_description = ("Entries are the keys the lane's stages in out/ were made from, and its builder image; "
                       "each goes up as a build uploads it: the blob first, the signed entry last. Needs a "
                       "writable remote cache (ONLYDOCKER_REMOTE_CACHE) and a signing key (`doit keygen`).")

    def run(self, settings, lk, params, args):
        from . import push
        if args != ["push"]:
            raise ConfigError(f"doit cache: unknown action {' '.join(args) or '(none)'}; the action is `push`")
        return push.push(settings, lk, settings.out_root / lk.lane.name)


class Diff(Command):
    name = "diff"
    doc_purpose = "compare two builds from their SBOMs and SHA256SUMS: packages, artifact sizes, image files"
    doc_usage = "[--json] DIST-OR-SHA256SUMS-A DIST-OR-SHA256SUMS-B"
    doc_description = ("Packages added, removed or changed (name, old and new version), each artifact's size, and "
                       "which files of the image differ. Relative paths are taken from -d's folder when given.")
    cmd_options = ({"name": "json", "long": "json", "type": bool, "default": False,
                    "help": "the differences as JSON"}, opt_dodo, opt_cwd)

    def execute(self, params, args):
        import json

        from . import diff
        quiet_on_closed_pipe()
        try:
            if len(args) != 2:
                raise ConfigError(f"doit diff takes two builds (dist folders or SHA256SUMS files), got {len(args)}")
            base = Path(params["cwdPath"]) if params.get("cwdPath") else Path.cwd()
            a, b = (diff.load(str(base / p)) for p in args)
        except OnlyDockerError as e:
            log.error(str(e))
            return 2
        d = diff.compare(a, b)
        print(json.dumps(d, indent=2) if params["json"] else diff.render(d))
        return 0


class Rebuild(Command):
    name = "rebuild"
    doc_purpose = ("rebuild a published release from its provenance, from scratch, compare every artifact, "
                   "and attest a match with this rebuilder's key")
    doc_usage = "--release-key KEY.pub [--key KEY] [--legal-info DIR] [--attestation PATH] [--junit PATH] RELEASE"
    cmd_options = (opt_dodo, opt_cwd, OPT_JUNIT, {
        "name": "release_key", "long": "release-key", "type": str, "default": "",
        "help": "the release's public key (minisign format) that must have signed SHA256SUMS and the provenance",
    }, {
        "name": "key", "long": "key", "type": str, "default": "",
        "help": "this rebuilder's own Ed25519 key, which signs the attestation "
                "(default: $ONLYDOCKER_SIGNING_KEY or ~/.config/onlydocker/signing.key)",
    }, {
        "name": "legal_info", "long": "legal-info", "type": str, "default": "",
        "help": "a `doit legal-info` folder: its sources/ are looked in for materials (by sha256)",
    }, {
        "name": "attestation", "long": "attestation", "type": str, "default": "",
        "help": "where to write the attestation (default: out/<lane>/rebuild/<lane>.<KEYID>.rebuild.dsse.json)",
    })

    def execute(self, params, args):
        from . import rebuild
        quiet_on_closed_pipe()
        if len(args) != 1 or not params.get("release_key"):
            log.error(f"usage: doit rebuild {self.doc_usage}")
            return 2
        try:
            settings = config.load(root=_project_root(params))
            return rebuild.run(
                args[0], settings, Path(params["release_key"]),
                Path(params["key"]) if params.get("key") else settings.signing_key,
                Path(params["legal_info"]) if params.get("legal_info") else None,
                Path(params["attestation"]) if params.get("attestation") else None,
                Path(params["junit"]) if params.get("junit") else None)
        except OnlyDockerError as e:
            log.error(str(e))
            return 2


class Boot(LaneCommand):
    name = "boot"
    doc_purpose = "boot the lane's artifacts in qemu here: the serial console on this terminal, Docker over SSH"
    doc_usage = "[--lock PATH | lock=PATH] [--iso] [--disk FILE] [--firmware bios|uefi] [--ssh-port N]"
    doc_description = ("kernel + initrd (or the ISO with --iso) under qemu (TCG), a scratch 4 GB data disk made "
                       "anew unless --disk names one, SSH forwarded from 127.0.0.1 only; when Docker is up it "
                       "prints how to reach it (ssh -F …, DOCKER_HOST=ssh://onlydocker). Ctrl-C ends it.")
    cmd_options = LaneCommand.cmd_options + (
        {"name": "iso", "long": "iso", "type": bool, "default": False, "help": "boot the ISO (ISOLINUX) as a CD-ROM"},
        {"name": "disk", "long": "disk", "type": str, "default": "",
         "help": "a raw disk image to attach as the data disk (kept); default: a scratch one in out/<lane>/boot/"},
        {"name": "firmware", "long": "firmware", "type": str, "default": "bios",
         "help": "bios (SeaBIOS), or uefi (OVMF: the ISO's unified kernel image)"},
        {"name": "ssh_port", "long": "ssh-port", "type": int, "default": 0,
         "help": "the port on 127.0.0.1 forwarded to the guest's SSH (default: a free one)"},
        {"name": "memory", "long": "memory", "type": int, "default": 2048, "help": "the guest's memory in MB"},
        {"name": "insecure_key", "long": "insecure-key", "type": str, "default": "",
         "help": "Vagrant's insecure private key, for the first login (default: vagrant's own copy)"},
    )

    def run(self, settings, lk, params, args):
        from . import vm
        if args:
            raise ConfigError(f"doit boot: unexpected argument(s) {' '.join(args)}")
        paths = LanePaths.of(settings.out_root, lk.lane.name)
        return vm.run(paths.dist, paths.boot, iso=params["iso"], disk=params["disk"] or None,
                      ssh_port=params["ssh_port"] or None, memory_mb=params["memory"],
                      insecure=params["insecure_key"] or None, firmware=params["firmware"])
