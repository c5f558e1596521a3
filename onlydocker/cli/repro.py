"""`doit repro`: build a lane twice under different conditions and compare
every byte; explain any difference with diffoscope.

The first build is the ordinary one (the stage cache may serve it). The second
runs in another workspace path, with the chosen stages rebuilt from scratch
(their cache entries ignored, their outputs never stored), and with every
condition we claim not to depend on changed: umask, time zone, locale,
hostname and user inside the container, job count, and the clock seen
inside the container (libfaketime) as well as the host's.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import Variation
from ..hashing import sha256_file
from ..stage.paths import ENVELOPE, SUMS_SIG, LanePaths

# What changes in the second build. TZ is a POSIX rule so it needs no tzdata.
SECOND = Variation(hostname="repro-other-host", user="2000:2000", tz="EST+5",
                   locale="C.UTF-8", umask="002", jobs=3, faketime="+397d")
HOST_ENV_SECOND = {"TZ": "JST-9", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


@dataclass
class Row:
    artifact: str
    first: str | None
    second: str | None

    @property
    def same(self) -> bool:
        return self.first is not None and self.first == self.second


def _copy_tree(src: Path, dst: Path) -> None:
    """The project as the first build saw it. A git work tree becomes a clone
    at the same commit with the same uncommitted changes, so that the second
    provenance names the same source as the first (source_state.py); any
    other folder, its files but outputs and caches."""
    from ..inputs.source_state import describe
    state = describe(src)
    if "git_commit" in state:
        dst.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", str(src), str(dst)], check=True)
        subprocess.run(["git", "-C", str(dst), "checkout", "-q", "--detach", state["git_commit"]], check=True)
        for f in state.get("changed", []):
            s, d = src / f, dst / f
            if s.exists() or s.is_symlink():
                d.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(s, d, follow_symlinks=False)
            else:
                d.unlink(missing_ok=True)     # deleted in the work tree
        return
    try:
        files = subprocess.run(["git", "-C", str(src), "ls-files", "-z"], check=True,
                               capture_output=True).stdout.decode().split("\0")
        files = [f for f in files if f]
    except (OSError, subprocess.CalledProcessError):
        skip = {"out", ".venv", ".git", "downloads", ".ci-cache"}
        files = [str(p.relative_to(src)) for p in src.rglob("*")
                 if p.is_file() and not (set(p.relative_to(src).parts) & skip)]
    for f in files:
        s, d = src / f, dst / f
        if not s.exists() and not s.is_symlink():
            continue    # deleted in the work tree
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(s, d, follow_symlinks=False)


def _doit(root: Path, lock: Path, tasks: list[str], env: dict, log, umask: int | None = None,
          processes: int = 1) -> int:
    cmd = [sys.executable, "-m", "doit", "-f", str(root / "dodo.py"), "-d", str(root),
           *(["-n", str(processes)] if processes > 1 else []), f"lock={lock}", *tasks]
    log("$ " + " ".join(cmd))

    def pre():
        if umask is not None:
            os.umask(umask)
    return subprocess.run(cmd, env=env, cwd=root, preexec_fn=pre).returncode


def _how(returncode: int) -> str:
    """A build's end as a person reads it: a signal by name (a crash says
    SIGSEGV, and its Python stacks are above: dodo.py enables faulthandler)."""
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit {returncode}"


def _file_hashes(tree: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not tree.is_dir():
        return out
    for p in sorted(tree.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[p.relative_to(tree).as_posix()] = sha256_file(p)
        elif p.is_symlink():
            out[p.relative_to(tree).as_posix()] = "symlink:" + os.readlink(p)
    return out


def compare(first_out: Path, second_out: Path, stages: list[str]) -> tuple[list[Row], list[tuple[str, Path, Path]]]:
    """Rows for every stage output and dist artifact; and the differing file pairs."""
    rows: list[Row] = []
    pairs: list[tuple[str, Path, Path]] = []
    trees = [(f"stages/{s}", first_out / "stages" / s, second_out / "stages" / s) for s in stages]
    trees.append(("dist", LanePaths(first_out).dist, LanePaths(second_out).dist))
    for label, a, b in trees:
        ha, hb = _file_hashes(a), _file_hashes(b)
        if label == "dist":
            # Signatures are made with a key the second build does not have.
            for m in (SUMS_SIG, ENVELOPE):
                ha.pop(m, None)
                hb.pop(m, None)
            if not hb:
                continue        # a partial run publishes nothing
        for name in sorted(set(ha) | set(hb)):
            row = Row(f"{label}/{name}", ha.get(name), hb.get(name))
            rows.append(row)
            if not row.same and row.first and row.second and not row.first.startswith("symlink:"):
                pairs.append((row.artifact, a / name, b / name))
    return rows, pairs


def diffoscope(pairs, report_dir: Path, log) -> list[dict]:
    tool = shutil.which("diffoscope")
    explained = []
    for name, a, b in pairs:
        slug = name.replace("/", "__")
        txt, html = report_dir / f"{slug}.diffoscope.txt", report_dir / f"{slug}.diffoscope.html"
        if tool is None:
            explained.append({"artifact": name, "error": "diffoscope is not installed (apt-get install diffoscope-minimal)"})
            continue
        log(f"diffoscope {name} ...")
        r = subprocess.run([tool, "--text", str(txt), "--html", str(html), "--max-report-size", "20000000",
                            str(a), str(b)], capture_output=True, text=True, timeout=1800)
        explained.append({"artifact": name, "text": str(txt), "html": str(html), "exit": r.returncode})
    return explained


def print_table(rows: list[Row], out=sys.stdout) -> None:
    width = max([len(r.artifact) for r in rows] + [8])
    print(f"{'artifact':<{width}}  {'first':<16}  {'second':<16}  same?", file=out)
    for r in rows:
        print(f"{r.artifact:<{width}}  {(r.first or 'missing')[:16]:<16}  "
              f"{(r.second or 'missing')[:16]:<16}  {'yes' if r.same else 'NO'}", file=out)


def run(root: Path, lock: Path, out_root: Path, lane: str, stages: list[str], all_stages: list[str],
        log=print, processes: int = 1, junit: Path | None = None) -> int:
    """Both builds, the comparison, the reports. Returns the exit code.
    `processes` stages run at once in each build (doit's -n): the order of
    the stages is not among what the bytes may depend on, so the second build
    need not copy the first's."""
    chosen = stages or all_stages
    tasks = [f"build:{s}" for s in chosen] if stages else ["build"]
    first_out = out_root / lane
    report_dir = first_out / "repro"
    if report_dir.exists():
        shutil.rmtree(report_dir)
    report_dir.mkdir(parents=True)

    log(f"repro: first build ({', '.join(chosen)})")
    env1 = dict(os.environ)
    env1.pop("ONLYDOCKER_VARIATION_FILE", None)
    env1.pop("ONLYDOCKER_REBUILD", None)
    rc1 = _doit(root, lock, tasks, env1, log, processes=processes)
    if rc1 != 0:
        log(f"repro: the first build failed ({_how(rc1)})")
        return rc1

    work = Path(tempfile.mkdtemp(prefix="onlydocker-repro-"))
    try:
        other = work / "a" / "different" / "workspace"
        _copy_tree(root, other)
        second_root = work / "out"
        env2 = dict(os.environ)
        env2.update(HOST_ENV_SECOND)
        env2["ONLYDOCKER_OUT"] = str(second_root)
        (work / "variation.toml").write_text(SECOND.to_toml())
        env2["ONLYDOCKER_VARIATION_FILE"] = str(work / "variation.toml")
        env2["ONLYDOCKER_REBUILD"] = ",".join(chosen)
        # The copy's own code, not the first workspace's (an editable install
        # would otherwise point back at it).
        env2["PYTHONPATH"] = str(other) + os.pathsep + env2.get("PYTHONPATH", "")
        lock2 = other / lock.relative_to(root) if lock.is_relative_to(root) else lock
        log(f"repro: second build in {other}, from scratch, varied: {asdict(SECOND)}")
        rc2 = _doit(other, lock2, tasks, env2, log, umask=0o002, processes=processes)
        if rc2 != 0:
            log(f"repro: the second build failed ({_how(rc2)})")
            return rc2
        rows, pairs = compare(first_out, second_root / lane, chosen)
        explained = diffoscope(pairs, report_dir, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print_table(rows)
    report = {
        "lane": lane,
        "stages": chosen,
        "variation": asdict(SECOND),
        "host_environment": HOST_ENV_SECOND,
        "identical": all(r.same for r in rows),
        "rows": [{"artifact": r.artifact, "first": r.first, "second": r.second, "same": r.same} for r in rows],
        "diffoscope": explained,
    }
    (report_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    if junit is not None:
        _write_junit(junit, lane, rows, explained)
        log(f"repro: JUnit report {junit}")
    different = [r.artifact for r in rows if not r.same]
    if different:
        log(f"repro: NOT reproducible: {len(different)} of {len(rows)} differ; "
            f"reports in {report_dir}")
        return 1
    log(f"repro: reproducible: all {len(rows)} outputs identical; report {report_dir / 'report.json'}")
    return 0


def _write_junit(path: Path, lane: str, rows: list[Row], explained: list[dict]) -> None:
    """One test case per artifact; a difference names both hashes and the
    diffoscope report that explains it."""
    from .junit import Case, write
    reports = {e["artifact"]: e for e in explained}
    cases = []
    for r in rows:
        group, _, name = r.artifact.rpartition("/")
        if r.same:
            cases.append(Case(group, name))
            continue
        e = reports.get(r.artifact, {})
        where = e.get("html") or e.get("error") or "no diffoscope report (a file missing on one side)"
        cases.append(Case(group, name, f"{r.artifact}: first {r.first or 'missing'}, second {r.second or 'missing'}",
                          f"first build:  {r.first or 'missing'}\nsecond build: {r.second or 'missing'}\n"
                          f"diffoscope: {where}"))
    write(path, f"doit repro {lane}", cases)
