# Docker as the lane ships it: .deb files are unpacked into a sysroot (the
# rootfs stage takes the binaries and their library closure from it); tar
# sources are copied into it at the place the lane's `layout` names (the
# 2015 static binary: docker-1.5.0.tgz holds usr/local/bin/docker).
set -eu
sysroot=/build/out/sysroot
mkdir -p "$sysroot"
for deb in /build/sources/*.deb; do
    [ -e "$deb" ] || continue
    dpkg-deb -x "$deb" "$sysroot"
done
grep -v '^#' /build/stage/lane/layout | while read -r name dir; do
    [ -n "$name" ] || continue
    mkdir -p "$sysroot/$dir"
    cp -a "/build/src/$name/." "$sysroot/$dir/"
done
# Documentation is not part of an image.
rm -rf "$sysroot/usr/share/doc" "$sysroot/usr/share/man" "$sysroot/usr/share/lintian" \
       "$sysroot/usr/share/locale" "$sysroot/usr/share/info"

# The CA bundle, made deterministically: the certificates sorted by name.
mkdir -p /build/out/etc/ssl/certs
if [ -d "$sysroot/usr/share/ca-certificates/mozilla" ]; then
    find "$sysroot/usr/share/ca-certificates/mozilla" -name '*.crt' | LC_ALL=C sort | xargs cat \
        > /build/out/etc/ssl/certs/ca-certificates.crt
else
    # No ca-certificates source in the lane: the builder's own bundle.
    cp /etc/ssl/certs/ca-certificates.crt /build/out/etc/ssl/certs/ca-certificates.crt
fi
