# Dropbear as the 2015 Vagrant edition shipped it: static, one multi-call
# binary (MULTI=1 STATIC=1), so the image needs no libcrypt or libutil.
# Which programs and configure options: the lane's data. Password logins stay
# compiled in (`dropbear -s` only exists then): init runs it with -s.
set -eu
cd /build/src/dropbear
./configure --prefix=/usr --enable-static $(grep -v '^#' /build/stage/lane/configure-options) >/dev/null
programs=$(grep -v '^#' /build/stage/lane/programs | tr '\n' ' ')
make -s -j"$JOBS" PROGRAMS="$programs" MULTI=1 STATIC=1
mkdir -p /build/out/bin /build/out/share
cp dropbearmulti /build/out/bin/dropbearmulti
strip /build/out/bin/dropbearmulti
if readelf -l /build/out/bin/dropbearmulti | grep -q INTERP; then echo "dropbear is not static"; exit 1; fi
# The multi binary picks the program from its own name (the image links
# dropbear, dropbearkey, scp, dbclient to it), or from argv[1].
# Run bare, it lists the programs it holds.
listing=$(/build/out/bin/dropbearmulti 2>&1 || true)
for p in $programs; do
    echo "$listing" | grep -q "'$p'" || { echo "dropbearmulti has no $p: $listing"; exit 1; }
done
cp /build/stage/vagrant-insecure.pub /build/out/share/vagrant-insecure.pub
