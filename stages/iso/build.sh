# The ISO, as the original made it (xorriso in mkisofs mode, ISOLINUX,
# El Torito, hybrid MBR), with every date fixed so the bytes are reproducible:
# the volume's creation and modification dates and its "uuid" (which also
# seeds the hybrid MBR's disk id, random otherwise) from SOURCE_DATE_EPOCH,
# -volume_date all_file_dates for every file, a fixed preparer id; -r makes
# owners and modes rational, so input trees with other dates and modes give
# the same bytes (tests/test_iso.py runs this script on the host, with BUILD
# pointing at a tree laid out like the container's /build).
set -eu
build="${BUILD:-/build}"
epoch="${SOURCE_DATE_EPOCH:?SOURCE_DATE_EPOCH must be set}"
uuid=$(date -u -d "@$epoch" +%Y%m%d%H%M%S00)
iso="$build/work/iso"
rm -rf "$iso"
mkdir -p "$iso/boot/isolinux" "$build/out"
cp "$build/deps/kernel/bzImage" "$iso/boot/vmlinuz"
cp "$build/deps/initrd/initrd.img" "$iso/boot/initrd"
cp /usr/lib/ISOLINUX/isolinux.bin "$iso/boot/isolinux/"
cp /usr/lib/syslinux/modules/bios/ldlinux.c32 "$iso/boot/isolinux/"
cp "$build/stage/files/isolinux.cfg" "$iso/boot/isolinux/"
TZ=UTC LC_ALL=C xorriso -preparer_id ONLYDOCKER \
    -volume_date c "=$epoch" -volume_date m "=$epoch" -volume_date uuid "$uuid" \
    -volume_date all_file_dates "=$epoch" \
    -as mkisofs -l -J -r -V ONLYDOCKER \
    -no-emul-boot -boot-load-size 4 -boot-info-table \
    -b boot/isolinux/isolinux.bin -c boot/isolinux/boot.cat \
    -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin \
    -o "$build/out/onlydocker.iso" "$iso"
