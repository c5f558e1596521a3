# The engine's prelude, run in every container stage before its build.sh:
# unpack the sources, apply the patches, then run the stage's script,
# optionally under a shifted clock (`doit repro`). It runs as the build user
# (uid 1000 unless the stage says root = true), without capabilities.
# Archives were checked on the host (no absolute paths, no .., no links out,
# no devices, no setuid) before they were copied in; tar here is the second
# line: any warning it gives (a stripped leading /, a skipped .., a device it
# cannot make) fails the stage.
set -eu
umask "${ONLYDOCKER_UMASK:-022}"
started=$(date +%s)

# A kept tree (kept.py): /build/src is the stage's volume, left by its last
# build. It is built on only when its stamp, written below after a build that
# succeeded, names this build's identity (every input of the stage key but
# the lane's Kconfig fragment); anything else (no stamp: none yet, or a build
# that failed or was killed; another identity) is wiped first. The stamp is
# removed before the build starts, so a build cut short leaves none.
kept=0
if [ -n "${ONLYDOCKER_KEEP:-}" ]; then
    stamp=/build/src/.onlydocker-kept
    exec 9>/build/src/.onlydocker-kept.lock
    if ! flock -n 9; then
        echo "prelude: kept tree: waiting for another build of this stage that uses it"
        flock 9
    fi
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$ONLYDOCKER_KEEP" ]; then
        kept=1
        echo "prelude: kept tree: reused (an earlier build of the same identity $ONLYDOCKER_KEEP): building incrementally"
    else
        if [ -f "$stamp" ]; then why="it was made for another identity"; else why="none, or its last build did not finish"; fi
        echo "prelude: kept tree: not used ($why): building from a fresh extraction"
        find /build/src -mindepth 1 -maxdepth 1 ! -name .onlydocker-kept.lock -exec rm -rf {} +
    fi
    rm -f "$stamp"
fi

mkdir -p /build/src /build/out /build/work /build/home
while read -r name file version kind; do
    [ -n "$name" ] || continue
    # A reused kept tree holds these sources, unpacked and patched.
    [ "$kept" = 0 ] || continue
    archive="/build/sources/$file"
    # The host's verdict (unpack.kind_of): only what it checked as a tar is
    # unpacked; .deb and plain files: the script takes them as they are.
    [ "$kind" = tar ] || continue
    dest="/build/src/$name"
    mkdir -p "$dest.unpack"
    if ! tar -xf "$archive" -C "$dest.unpack" --no-same-owner --no-same-permissions 2>/build/engine/tar.err \
        || [ -s /build/engine/tar.err ]; then
        echo "prelude: tar refused $file:"
        cat /build/engine/tar.err
        exit 1
    fi
    # A single top-level directory is stripped (linux-6.1.176/ -> /build/src/linux).
    set -- "$dest.unpack"/* "$dest.unpack"/.[!.]*
    if [ "$#" -ge 1 ] && [ -d "$1" ] && { [ "$#" -eq 1 ] || [ ! -e "$2" ]; }; then
        mv "$1" "$dest"
        rmdir "$dest.unpack"
    else
        mv "$dest.unpack" "$dest"
    fi
    echo "prelude: unpacked $file into $dest"

    patches="/build/patches/$name"
    [ -d "$patches" ] || continue
    # (`|| true`: a series of comments only, or a folder without patches,
    # is an empty list, not a silent exit under set -e.)
    if [ -f "$patches/series" ]; then
        list=$(grep -v '^[[:space:]]*\(#\|$\)' "$patches/series" || true)
    else
        list=$(cd "$patches" && ls | grep '\.patch$' | LC_ALL=C sort || true)
    fi
    for p in $list; do
        if ! out=$(cd "$dest" && patch -p1 --batch --forward --no-backup-if-mismatch < "$patches/$p" 2>&1); then
            echo "patch $name/$p failed to apply:"
            echo "$out"
            exit 1
        fi
        echo "prelude: applied $name/$p"
    done
done < /build/engine/sources.txt

# A shifted clock (libfaketime), when the builder image has it.
preload=""
if [ -n "${FAKETIME:-}" ]; then
    lib=$(ls /usr/lib/*/faketime/libfaketime.so.1 2>/dev/null | head -n 1 || true)
    if [ -n "$lib" ]; then
        export FAKETIME_DONT_FAKE_MONOTONIC=1
        preload="env LD_PRELOAD=$lib"
        echo "prelude: clock shifted by $FAKETIME (date now says: $($preload date -u))"
    else
        echo "prelude: no libfaketime in the builder image: clock not shifted"
    fi
fi
# bash: build.sh sources lane.env, whose lists are bash arrays.
run="$preload bash /build/stage/build.sh"
unpacked=$(date +%s)
echo "prelude: running build.sh (stage $STAGE, lane $LANE, $JOBS jobs, uid $(id -u))"
cd /build/work
$run
finished=$(date +%s)
if [ -n "${ONLYDOCKER_KEEP:-}" ]; then
    echo "$ONLYDOCKER_KEEP" > /build/src/.onlydocker-kept
fi
echo "prelude: build.sh took $((finished - unpacked)) s; unpacking and patches $((unpacked - started)) s"
