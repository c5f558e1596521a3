"""doit commands (plugins, registered in pyproject.toml): verify, lock,
keygen, repro. They are commands, not tasks: they audit or orchestrate
builds rather than being steps of one."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from doit.cmd_base import Command

from . import config, lock
from .errors import OnlyDockerError

OPT_LOCK = {
    "name": "lock",
    "long": "lock",
    "type": str,
    "default": "",
    "help": "the lane's lock (default: $ONLYDOCKER_LOCK or sources.lock)",
}


def _settings(params) -> config.Settings:
    return config.load(lock=params.get("lock") or None, root=Path.cwd() if (Path.cwd() / "dodo.py").exists()
                       else config.PROJECT_ROOT)


def _out_root(settings) -> Path:
    return Path(os.environ.get("ONLYDOCKER_OUT") or settings.root / "out")


class Verify(Command):
    name = "verify"
    doc_purpose = "re-hash every cached source and every artifact; check the signatures"
    doc_usage = "[--lock PATH]"
    cmd_options = (OPT_LOCK,)

    def execute(self, params, args):
        from .dist import public_key_path
        from .fetch import Fetcher
        from .verify import verify_dist
        try:
            settings = _settings(params)
            lk = lock.load(settings.lock_path)
        except OnlyDockerError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        fetcher = Fetcher(settings)
        problems = 0
        print(f"sources of {settings.lock_path} (cache {settings.cache_dir / 'sources'}):")
        for s in lk.sources:
            status = fetcher.check(s)
            print(f"  {status}")
            problems += not status.ok
        dist = _out_root(settings) / lk.lane.name / "dist"
        print(f"artifacts in {dist}:")
        pub = public_key_path(settings)
        for finding in verify_dist(dist, pub if pub.exists() else None):
            print(f"  {finding}")
            problems += not finding.ok
        print("verify: OK" if not problems else f"verify: {problems} problem(s)")
        return 0 if not problems else 1


class Lock(Command):
    name = "lock"
    doc_purpose = "pin the sha256 and size of unpinned sources after a verified fetch"
    doc_usage = "[--lock PATH]"
    cmd_options = (OPT_LOCK,)

    def execute(self, params, args):
        from .fetch import Fetcher
        try:
            settings = _settings(params)
            lk = lock.load(settings.lock_path)
            fetcher = Fetcher(settings)
            todo = [s for s in lk.sources if s.sha256 is None or s.size is None]
            if not todo:
                print(f"{settings.lock_path}: every source is pinned")
                return 0
            for s in todo:
                if s.sha256 is not None:
                    path = fetcher.fetch(s)
                    sha, size = s.sha256, path.stat().st_size
                else:
                    _, sha, size = fetcher.fetch_for_pinning(s)
                lock.pin(settings.lock_path, s.name, sha, size)
                print(f"pinned {s.name}: sha256 {sha}, size {size}")
            return 0
        except OnlyDockerError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1


class Keygen(Command):
    name = "keygen"
    doc_purpose = "make the Ed25519 signing key (outside the repository and out/)"
    doc_usage = ""
    cmd_options = ()

    def execute(self, params, args):
        from . import sign
        settings = config.load()
        try:
            sign.generate_key(settings.signing_key, forbidden=[config.PROJECT_ROOT, Path.cwd()])
        except OnlyDockerError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"signing key: {settings.signing_key} (readable by its owner only)")
        print(f"public key:  {settings.signing_key}.pub")
        return 0


class Repro(Command):
    name = "repro"
    doc_purpose = "build twice under varied conditions and compare every byte (diffoscope on a difference)"
    doc_usage = "[--lock PATH] [STAGE ...]"
    cmd_options = (OPT_LOCK,)

    def execute(self, params, args):
        from . import repro
        from .stage import load_stages
        try:
            settings = _settings(params)
            lk = lock.load(settings.lock_path)
            stages = load_stages(settings.root / "stages")
            unknown = [a for a in args if a not in stages]
            if unknown:
                print(f"error: unknown stage(s) {', '.join(unknown)}; stages are {', '.join(stages)}",
                      file=sys.stderr)
                return 2
            return repro.run(settings.root, settings.lock_path, _out_root(settings), lk.lane.name,
                             list(args), list(stages))
        except OnlyDockerError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
