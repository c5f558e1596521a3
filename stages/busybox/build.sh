# BusyBox, static: defconfig, then the lane's fragment (the same
# "CONFIG_X=y" / "# CONFIG_X is not set" lines as a .config), merged, resolved
# with oldconfig and checked by the engine's kconfig-fragment, as the kernel's
# is: an option Kconfig dropped fails the stage by name.
set -eu
cd /build/src/busybox
# No build date in the banner (1.23.1 honours only this; 1.34+ also SOURCE_DATE_EPOCH).
export KCONFIG_NOTIMESTAMP=1

make -s defconfig >/dev/null
sh /build/engine/kconfig-fragment /build/stage/lane/config make -s oldconfig

make -s -j"$JOBS" busybox
make -s busybox.links
mkdir -p /build/out/bin
cp busybox /build/out/bin/busybox
LC_ALL=C sort busybox.links > /build/out/bin/busybox.links
cp .config /build/out/bin/busybox.config
# Static, as the image needs: fail here rather than at boot.
if readelf -l busybox | grep -q INTERP; then echo "busybox is not static"; exit 1; fi
