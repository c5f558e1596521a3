# The ISO, as the original made it (xorriso in mkisofs mode, ISOLINUX,
# El Torito, hybrid MBR), with every date fixed so the bytes are reproducible:
# the volume's creation and modification dates and its "uuid" (which also
# seeds the hybrid MBR's disk id, random otherwise) from SOURCE_DATE_EPOCH,
# -volume_date all_file_dates for every file, a fixed preparer id; -r makes
# owners and modes rational, so input trees with other dates and modes give
# the same bytes (tests/test_iso.py runs this script on the host, with BUILD
# pointing at a tree laid out like the container's /build).
#
# A lane with UEFI=true (lane.toml) also gets what UEFI machines boot, as
# Debian's own ISOs do it: a unified kernel image, onlydocker.efi (systemd's
# EFI stub with the kernel, initrd, command line and os-release as sections,
# made by ukify), as EFI/BOOT/BOOTX64.EFI in a FAT image that is the ISO's
# second El Torito entry (a CD-ROM) and, through -isohybrid-gpt-basdat, a
# GPT partition (the ISO written to a disk). The FAT image's volume serial
# and dates, and the GPT's disk and partition GUIDs, come from
# SOURCE_DATE_EPOCH like the rest (Talos PR #4059: the serial was its last
# differing byte).
set -eu
build="${BUILD:-/build}"
epoch="${SOURCE_DATE_EPOCH:?SOURCE_DATE_EPOCH must be set}"
. "$build/stage/lane/lane.env"
uuid=$(date -u -d "@$epoch" +%Y%m%d%H%M%S00)
iso="$build/work/iso"
rm -rf "$iso"
mkdir -p "$iso/boot/isolinux" "$build/out"
cp "$build/deps/kernel/bzImage" "$iso/boot/vmlinuz"
cp "$build/deps/initrd/initrd.img" "$iso/boot/initrd"
cp /usr/lib/ISOLINUX/isolinux.bin "$iso/boot/isolinux/"
cp /usr/lib/syslinux/modules/bios/ldlinux.c32 "$iso/boot/isolinux/"
cp "$build/stage/files/isolinux.cfg" "$iso/boot/isolinux/"

efi_boot=""
if [ "$UEFI" = true ]; then
    # The same command line as ISOLINUX's default entry (tests/test_iso.py
    # checks); the boot tests add theirs through SMBIOS, which stub 257 reads.
    ukify build --stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub \
        --linux="$build/deps/kernel/bzImage" --initrd="$build/deps/initrd/initrd.img" \
        --cmdline="@$build/stage/files/cmdline" --os-release="@$build/deps/rootfs/etc/os-release" \
        --output="$build/out/onlydocker.efi"
    # Signed for Secure Boot when a key was given (secureboot.py checked it
    # and its certificate): sbsign dates its PKCS#7 signature (signingTime),
    # so it signs with the clock stopped at SOURCE_DATE_EPOCH (an absolute
    # FAKETIME, read in UTC: "@..." would let the clock run, and a shifted
    # clock or another TZ around it would show); RSA PKCS#1 v1.5 does the
    # rest the same every time. The certificate is published beside it.
    if [ -f "$build/secureboot/db.key" ]; then
        when=$(date -u -d "@$epoch" '+%Y-%m-%d %H:%M:%S')
        env TZ=UTC faketime -f "$when" sbsign --key "$build/secureboot/db.key" --cert "$build/secureboot/db.crt" \
            --output "$build/work/onlydocker.signed.efi" "$build/out/onlydocker.efi"
        sbverify --cert "$build/secureboot/db.crt" "$build/work/onlydocker.signed.efi"
        mv "$build/work/onlydocker.signed.efi" "$build/out/onlydocker.efi"
        cp "$build/secureboot/db.crt" "$build/out/onlydocker-secureboot.crt"
    fi
    # FAT sized to the image plus room for the FAT itself and directories.
    kib=$(( $(stat -c %s "$build/out/onlydocker.efi") / 1024 * 102 / 100 + 1024 ))
    img="$iso/boot/efi.img"
    serial=$(printf '%08X' $(( epoch & 0xFFFFFFFF )))
    # mkfs.fat and mtools date what they write from SOURCE_DATE_EPOCH (a
    # file's own mtime, mcopy -m, would be read through a shifted clock),
    # in local time: UTC. mkfs.fat's --invariant is not used: it fixes the
    # serial at 1234-ABCD for everyone, where -i gives the lane its own.
    export MTOOLS_SKIP_CHECK=1
    TZ=UTC mkfs.fat -C -i "$serial" -n ONLYDOCKER "$img" "$kib" >/dev/null
    TZ=UTC mmd -i "$img" ::/EFI ::/EFI/BOOT
    TZ=UTC mcopy -i "$img" "$build/out/onlydocker.efi" ::/EFI/BOOT/BOOTX64.EFI
    efi_boot="-eltorito-alt-boot -e boot/efi.img -no-emul-boot -isohybrid-gpt-basdat"
fi

# $efi_boot is split into words on purpose.
# shellcheck disable=SC2086
TZ=UTC LC_ALL=C xorriso -preparer_id ONLYDOCKER \
    -volume_date c "=$epoch" -volume_date m "=$epoch" -volume_date uuid "$uuid" \
    -volume_date all_file_dates "=$epoch" -boot_image any gpt_disk_guid=volume_date_uuid \
    -as mkisofs -l -J -r -V ONLYDOCKER \
    -no-emul-boot -boot-load-size 4 -boot-info-table \
    -b boot/isolinux/isolinux.bin -c boot/isolinux/boot.cat \
    -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin $efi_boot \
    -o "$build/out/onlydocker.iso" "$iso"
