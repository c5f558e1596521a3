# The kernel: tinyconfig, the lane's fragment merged, olddefconfig, then a
# check that every option the fragment asks for survived (Kconfig drops an
# option silently when a dependency is missing), and Docker's own
# check-config on top. Built in-tree at the fixed path /build/src/linux
# (3.18 has no -ffile-prefix-map); never `make clean`: Debian's repacked
# orig tarball breaks mrproper.
set -eu
cd /build/src/linux
fragment=/build/stage/lane/config

make -s tinyconfig
scripts/kconfig/merge_config.sh -m .config "$fragment" >/dev/null
make -s olddefconfig

sh /build/engine/check-kconfig "$fragment" .config
# Docker's own check, before minutes of compiling. The lane's Docker package
# (the docker.io source group) ships contrib/check-config.sh: it is run on
# this .config. A lane whose Docker brings no script (2015: a static binary)
# checks its docker-required-options list, Docker 1.5.0's, instead.
report=/build/out/docker-check-config.txt
set -- /build/sources/docker.io_*.deb
if [ -e "$1" ]; then
    [ "$#" = 1 ] || { echo "kernel stage: more than one docker.io package among the sources: $*"; exit 1; }
    dpkg-deb --fsys-tarfile "$1" | tar -xO ./usr/share/docker.io/contrib/check-config.sh > /build/work/check-config.sh
    sh /build/stage/docker-check-config /build/work/check-config.sh .config "$(make -s kernelrelease)" "$report" \
        /build/stage/lane/docker-check-config-waivers .
else
    missing=0
    : > "$report"
    for opt in $(grep -v '^#' /build/stage/lane/docker-required-options); do
        if grep -Eq "^CONFIG_$opt=(y|m)$" .config; then
            echo "- CONFIG_$opt: enabled" >> "$report"
        else
            echo "kernel config: CONFIG_$opt, required by Docker's check-config.sh, is not set"; missing=1
        fi
    done
    [ "$missing" = 0 ]
fi

make -s -j"$JOBS" bzImage modules
make -s INSTALL_MOD_PATH=/build/out INSTALL_MOD_STRIP=1 DEPMOD=/sbin/depmod modules_install
# The build tree links are host paths inside the container: not outputs.
rm -f /build/out/lib/modules/*/build /build/out/lib/modules/*/source
cp arch/x86/boot/bzImage /build/out/bzImage
cp .config /build/out/config
cp System.map /build/out/System.map
ls /build/out/lib/modules/*/modules.dep >/dev/null
