# The kernel: tinyconfig, the lane's fragment merged, olddefconfig, then a
# check that every option the fragment asks for survived (Kconfig drops an
# option silently when a dependency is missing), and the lane's Docker
# check-config list on top. Built in-tree at the fixed path /build/src/linux
# (3.18 has no -ffile-prefix-map); never `make clean`: Debian's repacked
# orig tarball breaks mrproper.
set -eu
cd /build/src/linux
fragment=/build/stage/lane/config

make -s tinyconfig
scripts/kconfig/merge_config.sh -m .config "$fragment" >/dev/null
make -s olddefconfig

sh /build/engine/check-kconfig "$fragment" .config
missing=0
for opt in $(grep -v '^#' /build/stage/lane/docker-required-options); do
    grep -Eq "^CONFIG_$opt=(y|m)$" .config || { echo "kernel config: CONFIG_$opt, required by Docker's check-config.sh, is not set"; missing=1; }
done
[ "$missing" = 0 ]

make -s -j"$JOBS" bzImage modules
make -s INSTALL_MOD_PATH=/build/out INSTALL_MOD_STRIP=1 DEPMOD=/sbin/depmod modules_install
# The build tree links are host paths inside the container: not outputs.
rm -f /build/out/lib/modules/*/build /build/out/lib/modules/*/source
cp arch/x86/boot/bzImage /build/out/bzImage
cp .config /build/out/config
cp System.map /build/out/System.map
ls /build/out/lib/modules/*/modules.dep >/dev/null
