"""`doit diff A B`: what changed between two builds, from what each
published: its SBOM (dist/onlydocker.spdx.json: the sources and packages in
the image with their versions, the build tools, the image's files with
their sha256) and its SHA256SUMS (the artifacts; their sizes when the files
are beside it). As `nix store diff-closures` does: packages added, removed
or changed (name, old and new version), artifact sizes, image files that
differ. A and B are dist folders or their SHA256SUMS files."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from ..stage.paths import SBOM, SUMS
from .clean import human

KINDS = {"SPDXRef-Source-": "package", "SPDXRef-BuildTool-": "build tool"}


def _dist(arg: str) -> Path:
    p = Path(arg)
    if p.is_dir():
        return p
    if p.is_file() and p.name == SUMS:
        return p.parent
    raise ConfigError(f"{arg}: neither a dist folder nor a SHA256SUMS file")


def load(arg: str) -> dict:
    """One build as data: packages, artifacts (sha256, size), image files."""
    dist = _dist(arg)
    sums = dist / SUMS
    try:
        artifacts = {}
        for line in sums.read_text().splitlines():
            if line.strip():
                sha, name = line.split(None, 1)
                name = name.lstrip("*")
                f = dist / name
                artifacts[name] = {"sha256": sha, "size": f.stat().st_size if f.is_file() else None}
    except (OSError, ValueError) as e:
        raise ConfigError(f"{sums}: {getattr(e, 'strerror', None) or e}") from None
    try:
        sbom = json.loads((dist / SBOM).read_text())
        packages = {}
        for p in sbom.get("packages", []):
            for prefix, kind in KINDS.items():
                if p.get("SPDXID", "").startswith(prefix):
                    packages[f"{kind} {p.get('name')}"] = p.get("versionInfo")
        files = {}
        for entry in sbom.get("files", []):
            file_sha = next((c["checksumValue"] for c in entry.get("checksums", []) if c.get("algorithm") == "SHA256"),
                            None)
            files[entry.get("fileName", "?").removeprefix("./")] = file_sha
    except (OSError, ValueError, AttributeError, TypeError, KeyError) as e:
        raise ConfigError(f"{dist / SBOM}: not a readable SBOM ({getattr(e, 'strerror', None) or e})") from None
    return {"dist": str(dist), "packages": packages, "artifacts": artifacts, "files": files}


def compare(a: dict, b: dict) -> dict:
    pa, pb = a["packages"], b["packages"]
    fa, fb = a["files"], b["files"]
    aa, ab = a["artifacts"], b["artifacts"]
    return {
        "a": a["dist"], "b": b["dist"],
        "packages": {
            "added": [{"name": n, "version": pb[n]} for n in sorted(set(pb) - set(pa))],
            "removed": [{"name": n, "version": pa[n]} for n in sorted(set(pa) - set(pb))],
            "changed": [{"name": n, "old": pa[n], "new": pb[n]} for n in sorted(set(pa) & set(pb)) if pa[n] != pb[n]],
        },
        "artifacts": [{"name": n, "old_size": (aa.get(n) or {}).get("size"), "new_size": (ab.get(n) or {}).get("size"),
                       "status": ("added" if n not in aa else "removed" if n not in ab
                                  else "same" if aa[n]["sha256"] == ab[n]["sha256"] else "changed")}
                      for n in sorted(set(aa) | set(ab))],
        "files": {
            "added": sorted(set(fb) - set(fa)),
            "removed": sorted(set(fa) - set(fb)),
            "changed": sorted(n for n in set(fa) & set(fb) if fa[n] != fb[n]),
        },
    }


def _mb(n: float | None) -> str:
    return "?" if n is None else human(n)


def render(d: dict) -> str:
    lines = [f"--- {d['a']}", f"+++ {d['b']}"]
    pk = d["packages"]
    if pk["added"] or pk["removed"] or pk["changed"]:
        lines.append("packages:")
        lines += [f"  {c['name']}: {c['old']} -> {c['new']}" for c in pk["changed"]]
        lines += [f"  {c['name']}: added ({c['version']})" for c in pk["added"]]
        lines += [f"  {c['name']}: removed ({c['version']})" for c in pk["removed"]]
    else:
        lines.append("packages: the same")
    lines.append("artifacts:")
    for art in d["artifacts"]:
        o, n = art["old_size"], art["new_size"]
        delta = (f" ({'+' if n > o else '-'}{human(abs(n - o))})" if o is not None and n is not None and n != o else "")
        lines.append(f"  {art['name']}: {art['status']}, {_mb(o)} -> {_mb(n)}{delta}")
    f = d["files"]
    if f["added"] or f["removed"] or f["changed"]:
        lines.append(f"image files: {len(f['changed'])} changed, {len(f['added'])} added, {len(f['removed'])} removed")
        lines += [f"  ~ {p}" for p in f["changed"]] + [f"  + {p}" for p in f["added"]] + [f"  - {p}" for p in f["removed"]]
    else:
        lines.append("image files: the same")
    return "\n".join(lines)
