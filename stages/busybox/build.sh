# BusyBox, static: defconfig, then the lane's fragment (the same
# "CONFIG_X=y" / "# CONFIG_X is not set" lines as a .config), checked after
# oldconfig so an option Kconfig dropped fails the stage by name.
set -eu
cd /build/src/busybox
# No build date in the banner (1.23.1 honours only this; 1.34+ also SOURCE_DATE_EPOCH).
export KCONFIG_NOTIMESTAMP=1
fragment=/build/stage/lane/config

make -s defconfig >/dev/null
grep -E '^(CONFIG_[A-Za-z0-9_]+=|# CONFIG_[A-Za-z0-9_]+ is not set)' "$fragment" | while IFS= read -r line; do
    opt=$(echo "$line" | sed -E 's/^# (CONFIG_[A-Za-z0-9_]+) is not set$/\1/; s/^(CONFIG_[A-Za-z0-9_]+)=.*/\1/')
    sed -i -E "/^(# )?$opt( is not set|=)/d" .config
    echo "$line" >> .config
done
yes "" | make -s oldconfig >/dev/null
sh /build/engine/check-kconfig "$fragment" .config

make -s -j"$JOBS" busybox
make -s busybox.links
mkdir -p /build/out/bin
cp busybox /build/out/bin/busybox
LC_ALL=C sort busybox.links > /build/out/bin/busybox.links
cp .config /build/out/bin/busybox.config
# Static, as the image needs: fail here rather than at boot.
if readelf -l busybox | grep -q INTERP; then echo "busybox is not static"; exit 1; fi
