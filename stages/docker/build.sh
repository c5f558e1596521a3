# Docker as the lane ships it: .deb files are unpacked into a sysroot (the
# rootfs stage takes the binaries and their library closure from it); tar
# sources are copied into it at the place the lane's `layout` names (the
# 2015 static binary: docker-1.5.0.tgz holds usr/local/bin/docker). Which
# binaries the image takes is the rootfs-docker layer's list (its lanes/<lane>/lane.toml):
# it fails naming one the sysroot lacks.
set -eu
. /build/stage/lane/lane.env
sysroot=/build/out/sysroot
mkdir -p "$sysroot"
for deb in /build/sources/*.deb; do
    [ -e "$deb" ] || continue
    dpkg-deb -x "$deb" "$sysroot"
done
# Since trixie, Debian's packages install under /usr only and base-files
# makes the merged-/usr links (/lib64 -> usr/lib64, ...). A sysroot of such
# packages (no /lib of its own) gets the one ELF headers name, so that the
# interpreter /lib64/ld-linux-x86-64.so.2 resolves in it (and the image gets
# it as that link); libraries are found in usr/lib, where the loader looks
# too. Not /lib: the image's root layer has a real /lib (its modules).
if [ ! -e "$sysroot/lib" ] && [ ! -e "$sysroot/lib64" ] && [ -d "$sysroot/usr/lib64" ]; then
    ln -s usr/lib64 "$sysroot/lib64"
fi
for name in $(printf '%s\n' ${LAYOUT[@]+"${!LAYOUT[@]}"} | LC_ALL=C sort); do
    dir=${LAYOUT[$name]}
    mkdir -p "$sysroot/$dir"
    cp -a "/build/src/$name/." "$sysroot/$dir/"
done
# Documentation is not part of an image.
rm -rf "$sysroot/usr/share/doc" "$sysroot/usr/share/man" "$sysroot/usr/share/lintian" \
       "$sysroot/usr/share/locale" "$sysroot/usr/share/info"

# The CA bundle, made deterministically: the certificates sorted by name.
mkdir -p /build/out/etc/ssl/certs
if [ -d "$sysroot/usr/share/ca-certificates/mozilla" ]; then
    find "$sysroot/usr/share/ca-certificates/mozilla" -name '*.crt' -print0 | LC_ALL=C sort -z | xargs -0 cat \
        > /build/out/etc/ssl/certs/ca-certificates.crt
else
    # No ca-certificates source in the lane (2015): the builder image's own
    # bundle, which update-ca-certificates made when the image was
    # bootstrapped; the builder's identity is part of this stage's key.
    [ -s /etc/ssl/certs/ca-certificates.crt ] || {
        echo "docker stage: the lane has no ca-certificates source and the builder image no /etc/ssl/certs/ca-certificates.crt (add ca-certificates to the lock's [builder] packages)"; exit 1; }
    cp /etc/ssl/certs/ca-certificates.crt /build/out/etc/ssl/certs/ca-certificates.crt
fi
grep -c 'BEGIN CERTIFICATE' /build/out/etc/ssl/certs/ca-certificates.crt | sed 's/^/docker stage: certificates in the bundle: /'
