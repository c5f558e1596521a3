# The kernel: tinyconfig, the lane's fragment merged, olddefconfig, then a
# check that every option the fragment asks for survived (Kconfig drops an
# option silently when a dependency is missing): the engine's kconfig-fragment,
# as for BusyBox. Docker's own check-config on top. Built in-tree at the
# fixed path /build/src/linux (3.18 has no -ffile-prefix-map); never `make
# clean`: Debian's repacked orig tarball breaks mrproper.
set -eu
cd /build/src/linux
. /build/stage/lane/lane.env

make -s tinyconfig
sh /build/engine/kconfig-fragment /build/stage/lane/config make -s olddefconfig

# Docker's own check, before minutes of compiling. The lane's Docker package
# (the docker.io source group) ships contrib/check-config.sh: it is run on
# this .config. A lane whose Docker brings no script (2015: a static binary)
# checks its docker_required_options list (lane.toml), Docker 1.5.0's, instead.
report=/build/out/docker-check-config.txt
set -- /build/sources/docker.io_*.deb
if [ -e "$1" ]; then
    [ "$#" = 1 ] || { echo "kernel stage: more than one docker.io package among the sources: $*"; exit 1; }
    dpkg-deb --fsys-tarfile "$1" | tar -xO ./usr/share/docker.io/contrib/check-config.sh > /build/work/check-config.sh
    # The lane's waivers, one "OPTION why" a line, as the checker reads them.
    for opt in ${DOCKER_CHECK_CONFIG_WAIVERS[@]+"${!DOCKER_CHECK_CONFIG_WAIVERS[@]}"}; do
        printf '%s %s\n' "$opt" "${DOCKER_CHECK_CONFIG_WAIVERS[$opt]}"
    done | LC_ALL=C sort > /build/work/docker-check-config-waivers
    # And the options it leaves off on purpose (only optional ones).
    for opt in ${DOCKER_CHECK_CONFIG_DECLINED[@]+"${!DOCKER_CHECK_CONFIG_DECLINED[@]}"}; do
        printf '%s %s\n' "$opt" "${DOCKER_CHECK_CONFIG_DECLINED[$opt]}"
    done | LC_ALL=C sort > /build/work/docker-check-config-declined
    sh /build/stage/files/docker-check-config /build/work/check-config.sh .config "$(make -s kernelrelease)" "$report" \
        /build/work/docker-check-config-waivers . /build/work/docker-check-config-declined
else
    missing=0
    : > "$report"
    for opt in ${DOCKER_REQUIRED_OPTIONS[@]+"${DOCKER_REQUIRED_OPTIONS[@]}"}; do
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
