"""provenance.py: the in-toto Statement's shape, and the same bytes for the
same build whatever the order of its inputs."""
from __future__ import annotations

import json
import random

import pytest

from onlydocker import sign
from onlydocker.publish import provenance

EPOCH = 1686355200
H = {c: c * 64 for c in "abcdef"}


def inputs(shuffle: int | None = None) -> dict:
    subjects = {"vmlinuz": H["a"], "initrd": H["b"], "onlydocker.iso": H["c"]}
    materials = [{"name": "busybox", "uri": "debian:pool/main/b/busybox/busybox_1.35.0.orig.tar.bz2",
                  "digest": {"sha256": H["d"]}},
                 {"name": "linux", "uri": "https://kernel.invalid/linux-6.1.tar.xz", "digest": {"sha256": H["e"]}},
                 {"name": "builder-image", "uri": "mmdebstrap:bookworm", "digest": {"sha256": H["f"]},
                  "annotations": {"packages": ["gcc=12.2.0-14", "make=4.3-4.1"]}}]
    stage_keys = {"kernel": "1" * 64, "busybox": "2" * 64, "initrd": "3" * 64}
    if shuffle is not None:
        rng = random.Random(shuffle)
        items = list(subjects.items())
        rng.shuffle(items)
        subjects = dict(items)
        rng.shuffle(materials)
        keys = list(stage_keys.items())
        rng.shuffle(keys)
        stage_keys = dict(keys)
    return dict(subjects=subjects, materials=materials, builder={"id": "https://onlydocker.invalid/pipeline"},
                stage_keys=stage_keys, lane="bookworm", epoch=EPOCH,
                lock={"path": "locks/bookworm.lock", "digest": {"sha256": H["a"]}})


def test_statement_has_the_in_toto_v1_and_slsa_v1_shape():
    st = provenance.statement(**inputs())
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    assert st["predicateType"] == "https://slsa.dev/provenance/v1"
    assert st["subject"][0] == {"name": "initrd", "digest": {"sha256": H["b"]}}
    bd = st["predicate"]["buildDefinition"]
    assert set(bd) == {"buildType", "externalParameters", "internalParameters", "resolvedDependencies"}
    assert bd["externalParameters"]["lane"] == "bookworm"
    assert bd["externalParameters"]["lock"]["path"] == "locks/bookworm.lock"
    assert bd["internalParameters"]["stage_keys"]["kernel"] == "1" * 64
    assert {m["name"] for m in bd["resolvedDependencies"]} == {"busybox", "linux", "builder-image"}
    rd = st["predicate"]["runDetails"]
    assert rd["builder"]["id"] == "https://onlydocker.invalid/pipeline"
    assert rd["metadata"]["startedOn"] == rd["metadata"]["finishedOn"] == "2023-06-10T00:00:00Z"


def test_same_build_same_bytes_whatever_the_input_order():
    outs = {provenance.canonical_json(provenance.statement(**inputs(seed))) for seed in (None, 1, 2, 3)}
    assert len(outs) == 1


def test_canonical_json_is_sorted_utf8_and_ends_with_a_newline():
    out = provenance.canonical_json({"b": 1, "a": ["é", {"d": None, "c": True}]})
    assert out == '{\n "a": [\n  "é",\n  {\n   "c": true,\n   "d": null\n  }\n ],\n "b": 1\n}\n'.encode()
    assert json.loads(out) == {"b": 1, "a": ["é", {"d": None, "c": True}]}
    with pytest.raises(ValueError):
        provenance.canonical_json({"x": float("nan")})


def test_bad_digests_and_anonymous_materials_are_refused():
    bad = inputs()
    bad["subjects"] = {"vmlinuz": "ABC"}
    with pytest.raises(ValueError, match="vmlinuz"):
        provenance.statement(**bad)
    bad = inputs()
    bad["materials"] = [{"digest": {"sha256": H["a"]}}]
    with pytest.raises(ValueError, match="uri or a name"):
        provenance.statement(**bad)


def test_the_signed_envelope_carries_the_statement(tmp_path):
    key = sign.generate_key(tmp_path / "k")
    payload = provenance.canonical_json(provenance.statement(**inputs()))
    env = sign.dsse_sign(key, payload, provenance.PAYLOAD_TYPE)
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert sign.dsse_verify(sign.minisign_public_key(key), env) == payload
