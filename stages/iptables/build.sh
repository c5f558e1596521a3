# iptables, static like the original: the extensions are linked in, so the
# image needs no xtables .so files (without them dockerd dies with
# "Couldn't load target `standard'"). The lane's configure options are data.
set -eu
. /build/stage/lane/lane.env
cd /build/src/iptables
./configure --prefix=/usr --sysconfdir=/etc --enable-static --disable-shared \
    ${CONFIGURE_OPTIONS[@]+"${CONFIGURE_OPTIONS[@]}"} >/dev/null
# configure turns nfnl_osf on when pkg-config finds libnfnetlink, and the
# static link then fails (1.4.21): the builders carry no libnfnetlink-dev.
# Say so here if one ever does, instead of failing at the link.
if ! grep -q '^S\["HAVE_LIBNFNETLINK_TRUE"\]="#"$' config.status; then
    echo "iptables: configure found libnfnetlink (pkg-config); a static build needs it absent from the builder image"
    exit 1
fi
# libtool's -all-static: a fully static program (its -static only means
# "link our own libraries statically").
make -s -j"$JOBS" LDFLAGS="-all-static"
mkdir -p /build/out/bin
cp "iptables/$MULTI_BINARY" /build/out/bin/xtables-multi
strip /build/out/bin/xtables-multi
if readelf -l /build/out/bin/xtables-multi | grep -q INTERP; then echo "iptables is not static"; exit 1; fi
# The multi binary picks the program from argv[1] when its own name is not
# one: the image links iptables, iptables-save... to it.
/build/out/bin/xtables-multi iptables --version
