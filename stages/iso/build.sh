# The ISO, as the original made it (xorriso in mkisofs mode, ISOLINUX,
# El Torito, hybrid MBR), with every date fixed so the bytes are reproducible:
# SOURCE_DATE_EPOCH for the volume dates, -volume_date all_file_dates for
# every file, a fixed preparer id.
set -eu
iso=/build/work/iso
mkdir -p "$iso/boot/isolinux"
cp /build/deps/kernel/bzImage "$iso/boot/vmlinuz"
cp /build/deps/initrd/initrd.img "$iso/boot/initrd"
cp /usr/lib/ISOLINUX/isolinux.bin "$iso/boot/isolinux/"
cp /usr/lib/syslinux/modules/bios/ldlinux.c32 "$iso/boot/isolinux/"
cp /build/stage/isolinux.cfg "$iso/boot/isolinux/"
xorriso -preparer_id "ONLYDOCKER" \
    -volume_date all_file_dates "=$SOURCE_DATE_EPOCH" \
    -as mkisofs -l -J -r -V ONLYDOCKER \
    -no-emul-boot -boot-load-size 4 -boot-info-table \
    -b boot/isolinux/isolinux.bin -c boot/isolinux/boot.cat \
    -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin \
    -o /build/out/onlydocker.iso "$iso"
