"""A throw-away project tree to run the real `doit` in: the repository's own
dodo.py and pyproject.toml, with either the real stages and locks (the
end-to-end lane test) or a few tiny stages of a test's own."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from onlydocker.cli.report import RUN_RECORD, read_run_record

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Workspace:
    root: Path
    env: dict = field(default_factory=dict)
    log: Path | None = None

    def doit(self, *args: str, check: bool = True, timeout: float = 3600) -> subprocess.CompletedProcess:
        """Run doit; the result's `record` is the run record it wrote
        (out/<lane>/last-run.json, report.py), or None when it wrote none."""
        cmd = [sys.executable, "-m", "doit", *args]
        before = self._records()
        r = subprocess.run(cmd, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)
        written = [p for p, ident in self._records().items() if before.get(p) != ident]
        assert len(written) <= 1, f"one doit run wrote several run records: {written}"
        r.record = read_run_record(written[0]) if written else None
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"$ doit {' '.join(args)}\n{r.stdout}\n{r.stderr}\nexit {r.returncode}\n")
        if check and r.returncode != 0:
            raise AssertionError(f"doit {' '.join(args)} failed ({r.returncode}):\n"
                                 f"{r.stdout[-6000:]}\n{r.stderr[-6000:]}")
        return r

    def out(self, lane: str) -> Path:
        return self.root / "out" / lane

    def _records(self) -> dict[Path, tuple[int, int]]:
        """Each lane's run record, by identity (a new record is a new file,
        renamed into place), where this workspace's doit writes them (its
        ONLYDOCKER_OUT, else out/)."""
        found = {}
        out = Path(self.env["ONLYDOCKER_OUT"]) if self.env.get("ONLYDOCKER_OUT") else self.root / "out"
        for p in out.glob(f"*/{RUN_RECORD}"):
            st = p.stat()
            found[p] = (st.st_ino, st.st_mtime_ns)
        return found


def make(root: Path, *, copy_project: bool = False, cache: Path | None = None) -> Workspace:
    """A workspace at `root`. With copy_project, every tracked file of the
    repository; otherwise only dodo.py and pyproject.toml (add stages/ and a lock)."""
    root.mkdir(parents=True, exist_ok=True)
    if copy_project:
        files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], check=True,
                               capture_output=True).stdout.decode().split("\0")
        for f in filter(None, files):
            src = REPO / f
            if src.exists():
                (root / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, root / f, follow_symlinks=False)
    else:
        for f in ("dodo.py", "pyproject.toml"):
            shutil.copy2(REPO / f, root / f)
        (root / "stages").mkdir(exist_ok=True)
    env = dict(os.environ)
    # The repository's package, whatever the workspace holds (a copy's own
    # onlydocker/ comes first when there is one).
    env["PYTHONPATH"] = os.pathsep.join([str(root) if copy_project else str(REPO), env.get("PYTHONPATH", "")])
    env["ONLYDOCKER_OUT"] = str(root / "out")
    env["ONLYDOCKER_SIGNING_KEY"] = str(root.parent / f"{root.name}-keys" / "signing.key")
    if cache is not None:
        env["ONLYDOCKER_CACHE"] = str(cache)
    return Workspace(root=root, env=env, log=root.parent / f"{root.name}.log")


def events(result) -> dict[str, str]:
    """stage -> "built" | "restored": the stages a doit run built or
    restored, from its run record (report.py)."""
    assert result.record is not None, f"doit wrote no run record:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return {t["name"].rpartition(":")[2]: t["result"] for t in result.record["tasks"]
            if "key" in t and t["result"] in ("built", "restored")}


def add_stage(root: Path, name: str, toml: str, script: str) -> Path:
    """stages/<name>/ in the tree at `root`, with its stage.toml and build.sh (replaced if there)."""
    d = root / "stages" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "stage.toml").write_text(toml)
    (d / "build.sh").write_text(script)
    return d


def source_tarball(path: Path, members) -> bytes:
    """A .tar.gz of `members` ((name, bytes), a name ending in / with None
    for a folder), fixed mtime and modes, written to `path`; its bytes."""
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mtime = 1600000000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def source_entry(name: str, file: str, url: str, body: bytes | None = None, *, version: str = "1",
                 license: str = "MIT", group: str | None = None) -> str:
    """A lock's [[source]] table; pinned to `body`'s sha256 and size when
    `body` is given, else unpinned (with a comment saying so)."""
    pin = (f'sha256 = "{hashlib.sha256(body).hexdigest()}"\nsize = {len(body)}\n' if body is not None
           else "# no hash known yet: `doit lock` pins it\n")
    return (f'\n[[source]]\nname = "{name}"\n' + (f'group = "{group}"\n' if group else "")
            + f'version = "{version}"\nfile = "{file}"\nurls = ["{url}"]\n{pin}license = "{license}"\n')


def builder_tables() -> str:
    """The modern lane's [lane] and [builder] tables, so tiny test lanes share
    its builder image (made once, then taken from the cache)."""
    text = (REPO / "locks" / "bookworm.lock").read_text()
    return text.split("[[source]]", 1)[0]


def lane_name() -> str:
    return tomllib.loads(builder_tables())["lane"]["name"]
