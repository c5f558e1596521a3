# Dropbear as the 2015 Vagrant edition shipped it: static, one multi-call
# binary (MULTI=1 STATIC=1), so the image needs no libcrypt or libutil.
# Which programs and configure options: the lane's data. Password logins stay
# compiled in (`dropbear -s` only exists then): init runs it with -s.
set -eu
. /build/stage/lane/lane.env
cd /build/src/dropbear
./configure --prefix=/usr --enable-static ${CONFIGURE_OPTIONS[@]+"${CONFIGURE_OPTIONS[@]}"} >/dev/null
make -s -j"$JOBS" PROGRAMS="${PROGRAMS[*]}" MULTI=1 STATIC=1
mkdir -p /build/out/bin /build/out/share
cp dropbearmulti /build/out/bin/dropbearmulti
strip /build/out/bin/dropbearmulti
if readelf -l /build/out/bin/dropbearmulti | grep -q INTERP; then echo "dropbear is not static"; exit 1; fi
# The multi binary picks the program from its own name (the image links
# dropbear, dropbearkey, scp, dbclient to it), or from argv[1].
# Run bare, it lists the programs it holds.
listing=$(/build/out/bin/dropbearmulti 2>&1 || true)
for p in "${PROGRAMS[@]}"; do
    echo "$listing" | grep -q "'$p'" || { echo "dropbearmulti has no $p: $listing"; exit 1; }
done
cp /build/stage/files/vagrant-insecure.pub /build/out/share/vagrant-insecure.pub
