"""`doit rebuild RELEASE`: rebuild a published release from its own
provenance, on this machine, and compare every artifact's bytes.

In order, and nothing fetched or built before the first three pass:
  1. the release (a folder, or an http(s) URL of one) has SHA256SUMS signed
     by the trusted release key (minisign) and a provenance whose DSSE
     envelope that key signed, the envelope's payload being
     provenance.intoto.json byte for byte;
  2. the provenance is well formed and names exactly SHA256SUMS's artifacts;
  3. this checkout is the pipeline's commit it names (clean), and the lock it
     names has the digest it names; otherwise it says which commit to check
     out and how, or that this repository does not have that commit.
     A release built outside a git work tree names no commit: refused. One
     built from uncommitted changes is rebuilt only from a checkout of that
     commit with changes of the same digest (source_state.py), else refused;
  4. every source material is found by sha256: the cache, a `doit legal-info`
     folder (--legal-info), the lock's URLs, the mirrors, the remote cache's
     CAS; one nobody has is named with every place it was looked for;
  5. the lane is built from scratch (ONLYDOCKER_REBUILD=all: no stage taken
     from or put in the stage cache) in a clone of the checkout at that commit,
     with outputs of its own, unsigned;
  6. every artifact of SHA256SUMS, the provenance statement itself (which
     names every material, stage key and the builder image) and anything the
     rebuild published that the release has not: one line each, identical or
     different with diffoscope's summary and its report's path.
On a match, an attestation (attest.py) signed with the rebuilder's own key.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .. import log, sign
from ..errors import OnlyDockerError, SigningError
from ..hashing import sha256_file
from ..inputs import source_state
from ..publish import attest, provenance
from ..publish.verify import parse_sums
from ..stage.paths import ENVELOPE, STATEMENT, SUMS, SUMS_SIG, LanePaths

METADATA = (SUMS, SUMS_SIG, STATEMENT, ENVELOPE)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX40 = re.compile(r"[0-9a-f]{40}")
BUILDER_IMAGE = "builder-image"
BUILDER_DEB = "builder-deb:"


def _err(text: str) -> None:
    log.say(text)


class Refused(OnlyDockerError):
    """A release not rebuilt, in one line."""


# --- the release -----------------------------------------------------------------

@dataclass
class Release:
    where: str
    files: dict[str, bytes]            # the metadata files, as read
    sums: dict[str, str] = field(default_factory=dict)

    @property
    def is_url(self) -> bool:
        return urlsplit(self.where).scheme in ("http", "https")

    def local(self, name: str, into: Path) -> Path:
        """An artifact of the release as a local file (downloaded into
        `into` from a URL), checked against SHA256SUMS."""
        if not self.is_url:
            path = Path(self.where) / name
        else:
            import requests
            path = into / name
            path.parent.mkdir(parents=True, exist_ok=True)
            with requests.get(f"{self.where.rstrip('/')}/{name}", stream=True, timeout=(15, 60)) as r:
                r.raise_for_status()
                with open(path, "wb") as f:
                    for chunk in r.iter_content(1 << 20):
                        f.write(chunk)
        return path


def _read(where: str, name: str) -> bytes:
    if urlsplit(where).scheme in ("http", "https"):
        import requests
        url = f"{where.rstrip('/')}/{name}"
        try:
            r = requests.get(url, timeout=(15, 60))
        except requests.RequestException as e:
            raise Refused(f"release {where}: {name}: {type(e).__name__}") from None
        if r.status_code != 200:
            raise Refused(f"release {where}: no {name} (HTTP {r.status_code} for {url})")
        return r.content
    try:
        return (Path(where) / name).read_bytes()
    except OSError as e:
        raise Refused(f"release {where}: no {name} ({e.strerror or e})") from None


def load_release(where: str) -> Release:
    rel = Release(where, {n: _read(where, n) for n in METADATA})
    rel.sums = parse_sums(rel.files[SUMS].decode("utf-8", "replace"))
    return rel


def check_signatures(rel: Release, release_pub: str) -> str:
    """The release key's id, once SHA256SUMS's signature and the provenance's
    envelope verify with it (and the envelope carries provenance.intoto.json)."""
    try:
        sign.minisign_verify(release_pub, rel.files[SUMS], rel.files[SUMS_SIG].decode("utf-8", "replace"))
    except SigningError as e:
        raise Refused(f"release {rel.where}: {SUMS_SIG} does not verify with the release key: {e}") from None
    try:
        envelope = json.loads(rel.files[ENVELOPE])
        payload = sign.dsse_verify(release_pub, envelope)
    except (ValueError, SigningError) as e:
        raise Refused(f"release {rel.where}: {ENVELOPE} does not verify with the release key: {e}") from None
    if payload != rel.files[STATEMENT]:
        raise Refused(f"release {rel.where}: the signed envelope's payload is not {STATEMENT}")
    if envelope.get("payloadType") != provenance.PAYLOAD_TYPE:
        raise Refused(f"release {rel.where}: {ENVELOPE}: payloadType {envelope.get('payloadType')!r}")
    keynum, _ = sign.parse_public_key(release_pub)
    return keynum[::-1].hex().upper()


# --- the provenance ----------------------------------------------------------------

@dataclass(frozen=True)
class Provenance:
    lane: str
    lock: dict          # {"path", "digest": {"sha256"}}
    source: dict
    materials: list[dict]
    subjects: dict[str, str]
    box_base_url: str | None = None     # externalParameters.settings: the catalog's base URL
    supplier: str | None = None         # and the SBOMs' supplier (ONLYDOCKER_SUPPLIER)


def parse_provenance(data: bytes, sums: dict[str, str]) -> Provenance:
    """The parts of the provenance a rebuild needs, each checked; anything
    else is a Refused naming the first thing wrong."""
    def bad(what: str):
        return Refused(f"malformed provenance: {what}")
    try:
        st = json.loads(data)
    except ValueError as e:
        raise bad(f"not JSON ({e})") from None
    if not isinstance(st, dict) or st.get("_type") != provenance.STATEMENT_TYPE:
        raise bad(f"_type is not {provenance.STATEMENT_TYPE}")
    if st.get("predicateType") != provenance.PREDICATE_TYPE:
        raise bad(f"predicateType {st.get('predicateType')!r}, not {provenance.PREDICATE_TYPE}")
    try:
        subjects = {s["name"]: s["digest"]["sha256"] for s in st["subject"]}
        bd = st["predicate"]["buildDefinition"]
        if bd["buildType"] != provenance.BUILD_TYPE:
            raise bad(f"buildType {bd['buildType']!r}, not {provenance.BUILD_TYPE}")
        ext = bd["externalParameters"]
        lane, lock, source = ext["lane"], ext["lock"], ext["source"]
        materials = bd["resolvedDependencies"]
    except (KeyError, TypeError, AttributeError) as e:
        raise bad(f"no {e} where a statement of this pipeline has one") from None
    if not all(isinstance(d, str) and _HEX64.fullmatch(d) for d in subjects.values()):
        raise bad("a subject's sha256 is not 64 hex digits")
    if subjects != sums:
        raise bad(f"its subjects are not the artifacts of {SUMS}")
    if not isinstance(lane, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", lane):
        raise bad(f"lane {lane!r}")
    lock_path = lock.get("path") if isinstance(lock, dict) else None
    lock_sha = (lock.get("digest") or {}).get("sha256") if isinstance(lock, dict) else None
    if (not isinstance(lock_path, str) or not lock_path or Path(lock_path).is_absolute()
            or ".." in Path(lock_path).parts or not isinstance(lock_sha, str) or not _HEX64.fullmatch(lock_sha)):
        raise bad(f"externalParameters.lock {lock!r} is not {{path (in the project), digest: {{sha256}}}}")
    if not isinstance(source, dict) or not (source.get("git", 0) is None or (
            isinstance(source.get("git_commit"), str) and _HEX40.fullmatch(source["git_commit"])
            and isinstance(source.get("dirty"), bool))):
        raise bad(f"externalParameters.source {source!r} names no commit (git_commit, dirty) nor says git: null")
    if not isinstance(materials, list):
        raise bad("resolvedDependencies is not a list")
    for m in materials:
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not _HEX64.fullmatch(
                str((m.get("digest") or {}).get("sha256"))):
            raise bad(f"material {m!r} has no name and sha256")
    box_base_url = (ext.get("settings") or {}).get("box_base_url") if isinstance(ext.get("settings"), dict) else None
    if box_base_url is not None and not (isinstance(box_base_url, str)
                                         and re.fullmatch(r"(https?|file)://\S+", box_base_url)):
        raise bad(f"externalParameters.settings.box_base_url {box_base_url!r} is not an http(s) or file URL")
    supplier = (ext.get("settings") or {}).get("supplier") if isinstance(ext.get("settings"), dict) else None
    if supplier is not None and not (isinstance(supplier, str) and supplier.startswith(("Organization: ", "Person: "))):
        raise bad(f"externalParameters.settings.supplier {supplier!r} is not an SPDX supplier")
    return Provenance(lane, lock, source, materials, subjects, box_base_url, supplier)


# --- the checkout ------------------------------------------------------------------

def _has_commit(root: Path, commit: str) -> bool:
    return subprocess.run(["git", "-C", str(root), "cat-file", "-e", f"{commit}^{{commit}}"],
                          capture_output=True).returncode == 0


def check_checkout(root: Path, prov: Provenance) -> dict:
    """This checkout's state, once it is the source the provenance names."""
    src = prov.source
    if "git_commit" not in src:
        raise Refused("the release was built outside a git work tree: its provenance names no commit "
                      "of the pipeline, so nothing says which source to rebuild it from")
    commit = src["git_commit"]
    here = source_state.describe(root)
    if "git_commit" not in here:
        raise Refused(f"{root} is not a git work tree: clone the pipeline's repository and check out {commit}")
    if not _has_commit(root, commit):
        raise Refused(f"the release names commit {commit}, which this repository does not have "
                      f"(`git fetch` the repository that built it, or clone it)")
    if here["git_commit"] != commit:
        raise Refused(f"the release was built from commit {commit}; this checkout is at {here['git_commit']}: "
                      f"check it out (`git switch --detach {commit}`, or a work tree of its own: "
                      f"`git worktree add ../rebuild-{commit[:12]} {commit}`) and run doit rebuild there")
    if src.get("git_tree") and here["git_tree"] != src["git_tree"]:
        raise Refused(f"commit {commit} has tree {here['git_tree']} here, {src['git_tree']} in the provenance")
    if src["dirty"]:
        if here["dirty"] and here.get("changes_sha256") == src.get("changes_sha256"):
            return here
        raise Refused(f"the release was built from commit {commit} with uncommitted changes (digest "
                      f"{src.get('changes_sha256')}, in {', '.join(src.get('changed', [])[:5]) or '?'}): those "
                      f"changes are in no repository; this checkout "
                      + ("has other changes" if here["dirty"] else "has none") + ", so it cannot be rebuilt here")
    if here["dirty"]:
        raise Refused(f"this checkout of {commit} has uncommitted changes ({', '.join(here['changed'][:5])}): "
                      f"the release was built clean; commit or stash them (`git stash -u`)")
    lock = root / prov.lock["path"]
    try:
        got = sha256_file(lock)
    except OSError:
        raise Refused(f"commit {commit} has no lock {prov.lock['path']}, which the provenance names") from None
    if got != prov.lock["digest"]["sha256"]:
        raise Refused(f"{prov.lock['path']} has sha256 {got}, the provenance says "
                      f"{prov.lock['digest']['sha256']}")
    return here


# --- the materials -----------------------------------------------------------------

def _admit_copy(fetcher, src: Path, sha: str) -> Path:
    """A verified copy of `src` in the source cache (the user's file stays)."""
    fetcher._mkdirs()
    final = fetcher.root / "sha256" / sha
    tmp = fetcher.root / "partial" / f"{sha}.legal-info"
    shutil.copyfile(src, tmp)
    if sha256_file(tmp) != sha:
        tmp.unlink()
        raise OSError("changed while copied")
    os.replace(tmp, final)
    return final


def fetch_materials(prov: Provenance, lk, settings, legal_info: Path | None, log) -> list[str]:
    """Every source material into the cache, by sha256; returns the lines
    naming the ones nobody had (empty: all there). The builder image and its
    .debs are not fetched here: the build takes the image from the cache or
    the remote cache by its input key (or bootstraps it from those .debs),
    and the comparison of the provenance checks its sha256."""
    from ..errors import FetchError
    from ..inputs.fetch import Fetcher
    remote = None
    if settings.remote is not None:
        from ..cache import remote as remote_mod
        remote = remote_mod.from_settings(settings)
    fetcher = Fetcher(settings, remote=remote)
    by_name = {s.name: s for s in lk.sources}
    missing = []
    for m in prov.materials:
        name, sha = m["name"], m["digest"]["sha256"]
        if name == BUILDER_IMAGE or name.startswith(BUILDER_DEB):
            continue
        s = by_name.get(name)
        if s is None or s.sha256 != sha:
            raise Refused(f"the provenance names material {name} (sha256 {sha}), which the lock "
                          f"{prov.lock['path']} at that commit does not pin")
        if fetcher.check(s).ok:
            log(f"material {name} ({s.file}): in the cache")
            continue
        looked = []
        if legal_info is not None:
            cand = legal_info / "sources" / s.file
            if cand.is_file() and sha256_file(cand) == sha:
                _admit_copy(fetcher, cand, sha)
                log(f"material {name} ({s.file}): from {cand}")
                continue
            looked.append(f"{cand}: " + ("other bytes" if cand.is_file() else "absent"))
        try:
            fetcher.fetch(s, progress=False)
            log(f"material {name} ({s.file}): fetched and verified (sha256 {sha[:16]})")
        except (FetchError, OnlyDockerError) as e:
            looked.append(str(e).replace(":\n  ", ": ").replace("\n  ", "; "))
            missing.append(f"material {name} ({s.file}, sha256 {sha}): nobody has it; looked in "
                           f"the cache ({fetcher.cache_path(s)}); " + "; ".join(looked))
    return missing


# --- the comparison ----------------------------------------------------------------

@dataclass
class Row:
    name: str
    release: str | None
    rebuilt: str | None
    summary: str = ""
    report: str = ""

    @property
    def same(self) -> bool:
        return self.release is not None and self.release == self.rebuilt

    def __str__(self) -> str:
        if self.same:
            return f"identical  {self.name}  sha256 {self.release}"
        text = (f"DIFFERENT  {self.name}  release {self.release or 'missing'}, "
                f"rebuilt {self.rebuilt or 'missing'}")
        if self.summary:
            text += f"; diffoscope: {self.summary}"
        if self.report:
            text += f"; report {self.report}"
        return text


def _summary(text_report: Path) -> str:
    """diffoscope's gist: how many lines differ and the first of them."""
    try:
        lines = text_report.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    changed = [l.lstrip("│ ").rstrip() for l in lines]
    changed = [l for l in changed if l[:1] in "+-" and not l.startswith(("---", "+++"))]
    if not changed:
        return f"{len(lines)} line(s) of report"
    first = " / ".join(changed[:2])
    return f"{len(changed)} changed line(s), first: {first[:160]}"


def compare(rel: Release, rebuilt: Path, report_dir: Path, log) -> list[Row]:
    from .repro import diffoscope
    report_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    have = {p.name: sha256_file(p) for p in sorted(rebuilt.iterdir()) if p.is_file()} if rebuilt.is_dir() else {}
    expected = dict(rel.sums)
    expected[STATEMENT] = hashlib.sha256(rel.files[STATEMENT]).hexdigest()
    for name in sorted(set(expected) | (set(have) - set(METADATA))):
        rows.append(Row(name, expected.get(name), have.get(name)))
    pairs = []
    for r in rows:
        if not r.same and r.release and r.rebuilt:
            if r.name == STATEMENT:
                local = report_dir / "release" / STATEMENT
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(rel.files[STATEMENT])
            else:
                local = rel.local(r.name, report_dir / "release")
            pairs.append((r.name, local, rebuilt / r.name))
    for e in diffoscope(pairs, report_dir, log):
        row = next(r for r in rows if r.name == e["artifact"])
        if "error" in e:
            row.summary = e["error"]
        else:
            row.summary, row.report = _summary(Path(e["text"])), e["html"]
    return rows


# --- the whole rebuild -------------------------------------------------------------

def run(where: str, settings, release_key: Path, rebuilder_key: Path, legal_info: Path | None,
        attestation: Path | None, junit: Path | None, log=print) -> int:
    from ..inputs import lock as lock_mod
    from .junit import Case
    from .junit import write as write_junit
    from .repro import _copy_tree, _doit
    cases: list[Case] = []

    def done(code: int) -> int:
        if junit is not None:
            write_junit(junit, f"doit rebuild {where}", cases)
            log(f"rebuild: JUnit report {junit}")
        return code

    try:
        try:
            release_pub = release_key.read_text()
            sign.parse_public_key(release_pub)
        except (OSError, SigningError) as e:
            raise Refused(f"release key {release_key}: {getattr(e, 'strerror', None) or e}") from None
        try:
            key = sign.load_key(rebuilder_key)
        except SigningError as e:
            raise Refused(f"rebuilder key: {e} (the rebuilder signs its attestation with a key of its own: "
                          f"ONLYDOCKER_SIGNING_KEY=... doit keygen)") from None
        if sign.minisign_public_key(key).splitlines()[-1] == release_pub.strip().splitlines()[-1]:
            raise Refused(f"the rebuilder key {rebuilder_key} is the release's own key: an independent "
                          f"rebuild is attested with a key of its own")
        rel = load_release(where)
        release_keyid = check_signatures(rel, release_pub)
        cases.append(Case("release", "signatures"))
        prov = parse_provenance(rel.files[STATEMENT], rel.sums)
        cases.append(Case("release", "provenance"))
        here = check_checkout(settings.root, prov)
        cases.append(Case("release", "checkout"))
    except Refused as e:
        cases.append(Case("release", "refused", str(e)))
        _err(f"error: refused: {e}")
        return done(2)
    log(f"rebuild: release {where}, lane {prov.lane}: {len(rel.sums)} artifact(s), signed by {release_keyid}; "
        f"source {source_state.summary(here)}")

    lk = lock_mod.load(settings.root / prov.lock["path"])
    try:
        missing = fetch_materials(prov, lk, settings, legal_info, log)
    except Refused as e:
        cases.append(Case("materials", "refused", str(e)))
        _err(f"error: refused: {e}")
        return done(2)
    for m in missing:
        _err(f"error: {m}")
        cases.append(Case("materials", m.split(":", 1)[0], m))
    if missing:
        log(f"rebuild: {len(missing)} material(s) found nowhere: not built")
        return done(1)
    cases.append(Case("materials", "all found"))

    base = LanePaths.of(settings.out_root, prov.lane).rebuild
    work = base / "work"
    rebuilt = LanePaths.of(work / "out", prov.lane)     # the rebuild's own out/<lane>
    if base.exists():
        shutil.rmtree(base)
    work.mkdir(parents=True)
    clone = work / "source"
    _copy_tree(settings.root, clone)
    env = dict(os.environ)
    for k in ("ONLYDOCKER_VARIATION_FILE", "ONLYDOCKER_LOCK", "ONLYDOCKER_STAGE_CACHE"):
        env.pop(k, None)
    env.update({"ONLYDOCKER_OUT": str(work / "out"), "ONLYDOCKER_REBUILD": "all",
                "ONLYDOCKER_CACHE": str(settings.cache_dir),
                # Never signed here: the release key is the publisher's.
                "ONLYDOCKER_SIGNING_KEY": str(work / "no-signing-key"),
                "PYTHONPATH": str(clone) + os.pathsep + env.get("PYTHONPATH", "")})
    if prov.box_base_url:
        # The release's catalog names its boxes under the publisher's URL: the same here.
        env["ONLYDOCKER_BOX_BASE_URL"] = prov.box_base_url
    if prov.supplier:
        env["ONLYDOCKER_SUPPLIER"] = prov.supplier      # the SBOMs name the release's publisher
    log(f"rebuild: building lane {prov.lane} from scratch in {clone} (no stage cache)")
    rc = _doit(clone, clone / prov.lock["path"], ["build"], env, log)
    if rc != 0:
        cases.append(Case("build", prov.lane, f"the rebuild failed (exit {rc})"))
        log(f"rebuild: the build failed (exit {rc}); its logs are in {rebuilt.out / 'logs'}")
        return done(1)

    rows = compare(rel, rebuilt.dist, base, log)
    for r in rows:
        log(str(r))
        cases.append(Case("artifacts", r.name, None if r.same else str(r)))
    kept = base / "dist"
    shutil.move(str(rebuilt.dist), kept)
    shutil.rmtree(work, ignore_errors=True)
    different = [r for r in rows if not r.same]
    if different:
        log(f"rebuild: NOT identical: {len(different)} of {len(rows)} differ; rebuilt files in {kept}, "
            f"reports in {base}; no attestation")
        return done(1)

    stmt = attest.statement(
        rel.sums, lane=prov.lane, sums_sha256=hashlib.sha256(rel.files[SUMS]).hexdigest(),
        provenance_sha256=hashlib.sha256(rel.files[STATEMENT]).hexdigest(), release_keyid=release_keyid,
        source={k: v for k, v in prov.source.items() if k != "changed"}, lock=prov.lock,
        materials=prov.materials, rebuilder_keyid=key.keyid)
    path = attestation or base / f"{prov.lane}.{key.keyid}{attest.SUFFIX}"
    attest.write(path, key, stmt)
    log(f"rebuild: identical: all {len(rows)} file(s); attestation signed by {key.keyid}: {path}")
    return done(0)
