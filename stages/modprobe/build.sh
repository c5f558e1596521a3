# Which modprobe the lane uses is data: lane.toml's provider is "kmod"
# (a static kmod built here) or "busybox" (BusyBox's applets, as in 2015).
set -eu
. /build/stage/lane/lane.env
mkdir -p /build/out/bin
echo "$PROVIDER" > /build/out/bin/modprobe-provider
[ "$PROVIDER" = kmod ] || exit 0

cd /build/src/kmod
mkdir -p /build/out/bin
if [ -f meson.build ] && [ ! -f configure.ac ]; then
    # kmod 34 and later build with meson only. The kmod tool links libkmod's
    # internal static library; -static makes it one static binary (only that
    # target is built: the shared libkmod would not link -static).
    meson setup /build/work/kmod-build --prefix=/usr --buildtype=release \
        -Dmanpages=false -Ddocs=false -Dbuild-tests=false \
        -Dxz=disabled -Dzstd=disabled -Dzlib=disabled -Dopenssl=disabled \
        -Dc_link_args=-static >/dev/null
    ninja -C /build/work/kmod-build -j"$JOBS" kmod >/dev/null
    cp /build/work/kmod-build/kmod /build/out/bin/kmod
else
    # Debian's orig is a git snapshot: no configure yet.
    [ -x configure ] || ./autogen.sh >/dev/null 2>&1 || autoreconf -fi
    ./configure --prefix=/usr --disable-manpages --disable-gtk-doc --disable-test-modules \
        --without-xz --without-zstd --without-zlib --without-openssl >/dev/null
    # The kmod tool links libkmod's internal convenience library: -all-static
    # makes it one static binary (kmod's configure refuses --enable-static).
    make -s -j"$JOBS" LDFLAGS="-all-static" tools/kmod
    cp tools/kmod /build/out/bin/kmod
fi
strip /build/out/bin/kmod
if readelf -l /build/out/bin/kmod | grep -q INTERP; then echo "kmod is not static"; exit 1; fi
