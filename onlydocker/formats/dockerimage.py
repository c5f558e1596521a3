"""Container image archives, made from a rootfs folder with no network and
the same bytes every time. One archive satisfies both loaders: Docker 1.5's
(`repositories` + `<id>/{VERSION,json,layer.tar}`) and today's `docker load`
(`manifest.json` + a config named by its sha256)."""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import BinaryIO

from ..canon import compact_json, rfc3339
from ..hashing import sha256_file
from .tarball import write_entries, write_tree

ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


_j = compact_json


def write_image_archive(rootfs: Path, out: BinaryIO, *, tags: list[str], mtime: int,
                        config: dict | None = None) -> str:
    """Write the archive of a one-layer image of `rootfs`, tagged `tags`
    (`repo:tag`, default tag `latest`); `config` adds to or overrides the
    run config (Env, Cmd, ...). Returns the image id (sha256 of its config),
    which is also what `docker images --no-trunc` shows after a load."""
    if not tags:
        raise ValueError("an image archive needs at least one tag")
    created = rfc3339(mtime)
    with tempfile.TemporaryDirectory() as tmp:
        layer = Path(tmp) / "layer.tar"
        with open(layer, "wb") as f:
            write_tree(rootfs, f, mtime=mtime)
        diff_id = "sha256:" + sha256_file(layer)
        run_config = {"Env": ENV, "Cmd": ["/bin/sh"], **(config or {})}
        image_config = {
            "architecture": "amd64", "os": "linux", "created": created, "config": run_config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": "onlydocker: BusyBox rootfs"}],
        }
        config_bytes = _j(image_config)
        image_id = hashlib.sha256(config_bytes).hexdigest()
        # The legacy (Docker 1.5) id names the layer *and* its config: two
        # images of one rootfs but different Cmd must not share it, or the
        # old loader keeps the first one's json for both tags.
        layer_id = hashlib.sha256(f"onlydocker-v1 {image_id}".encode()).hexdigest()
        legacy = {"id": layer_id, "created": created, "container_config": run_config, "config": run_config,
                  "architecture": "amd64", "os": "linux"}
        repositories: dict[str, dict[str, str]] = {}
        for tag in tags:
            repo, _, version = tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "latest")
            repositories.setdefault(repo, {})[version] = layer_id
        manifest = [{"Config": f"{image_id}.json", "RepoTags": list(tags), "Layers": [f"{layer_id}/layer.tar"]}]
        write_entries([
            (f"{image_id}.json", "file", 0o644, config_bytes),
            (f"{layer_id}", "dir", 0o755, None),
            (f"{layer_id}/VERSION", "file", 0o644, b"1.0"),
            (f"{layer_id}/json", "file", 0o644, _j(legacy)),
            (f"{layer_id}/layer.tar", "file", 0o644, layer),
            ("manifest.json", "file", 0o644, _j(manifest)),
            ("repositories", "file", 0o644, _j(repositories)),
        ], out, mtime)
    return image_id
