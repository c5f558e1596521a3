# The disk image: the libvirt box's disk (vagrant-libvirt gives the domain
# box.img and nothing else), and what a hypervisor or cloud takes. 40 GiB,
# sparse, in qcow2 (qemu-img writes it without dates or random ids: same raw
# image, same bytes). It has an empty partition that init formats (label
# DOCKER) on first boot and keeps /var/lib/docker on; the kernel, initrd and
# boot menu are the iso stage's, byte for byte.
#
# A lane that makes a unified kernel image (lane.toml's uefi, so the iso
# stage published onlydocker.efi) gets a GPT disk, as LinuxKit's raw-efi
# and mkosi make them:
#   1  the EFI system partition (FAT32): EFI/BOOT/BOOTX64.EFI is the UKI
#      (signed for Secure Boot when the iso stage signed it), what UEFI
#      boots; and SYSLINUX with the kernel, initrd and the ISO's menu, what
#      BIOS boots (gptmbr.bin in the protective MBR's boot code starts the
#      partition marked "legacy BIOS bootable").
#   2  the data partition (Linux filesystem, name DOCKER), empty.
# Its disk and partition GUIDs, and the FAT's volume serial, are derived from
# SOURCE_DATE_EPOCH; the FAT's dates are SOURCE_DATE_EPOCH (mtools, which
# SYSLINUX's installer also runs, reads it).
#
# A BIOS-only lane (its ISO boots by ISOLINUX only) gets the hybrid ISO
# written at the disk's start, which SeaBIOS boots from its MBR, and the data
# partition in the MBR's first free slot after it.
set -eu
build="${BUILD:-/build}"
size_gib=40
iso="$build/deps/iso/onlydocker.iso"
uki="$build/deps/iso/onlydocker.efi"
raw="$build/work/box.raw"
mkdir -p "$build/work" "$build/out"
rm -f "$raw"
truncate -s "${size_gib}G" "$raw"

# A GUID for `role`, the same for every build of this lane: sha256 of the
# epoch and the role, shaped as RFC 4122 asks (version 4, variant 1).
guid() {
    printf 'onlydocker %s %s' "$SOURCE_DATE_EPOCH" "$1" | sha256sum |
        sed -E 's/^(.{8})(.{4}).(.{3}).(.{3})(.{12}).*$/\1-\2-4\3-8\4-\5/'
}

gpt_disk() {
    : "${SOURCE_DATE_EPOCH:?SOURCE_DATE_EPOCH must be set}"
    kernel="$build/deps/kernel/bzImage"
    initrd="$build/deps/initrd/initrd.img"
    esp="$build/work/esp.img"
    rm -f "$esp"
    # FAT32 (what the UEFI specification asks of an EFI system partition),
    # sized to its files plus 2 % and 8 MiB for the FAT and directories, in
    # whole MiB so the data partition after it starts aligned; one sector a
    # cluster, and at least 64 MiB: FAT32 needs 65525 clusters.
    files=$(( $(stat -c %s "$uki") + $(stat -c %s "$kernel") + $(stat -c %s "$initrd") ))
    mib=$(( files / 1048576 * 102 / 100 + 8 ))
    [ "$mib" -ge 64 ] || mib=64
    export MTOOLS_SKIP_CHECK=1 TZ=UTC
    # mtools' mformat, not mkfs.fat: it dates the volume label's entry from
    # SOURCE_DATE_EPOCH wherever it runs (bookworm's mkfs.fat uses the clock).
    # Hidden sectors: the partition's start, as a boot sector expects.
    mformat -i "$esp" -C -T $(( mib * 2048 )) -H 2048 -c 1 -F -v ONLYDOCKER -N "$(guid esp-serial | cut -c1-8)" ::
    mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/boot ::/boot/syslinux
    mcopy -i "$esp" "$uki" ::/EFI/BOOT/BOOTX64.EFI
    mcopy -i "$esp" "$kernel" ::/boot/vmlinuz
    mcopy -i "$esp" "$initrd" ::/boot/initrd
    mcopy -i "$esp" "$build/stage/files/syslinux.cfg" ::/boot/syslinux/syslinux.cfg
    syslinux --install --directory /boot/syslinux "$esp"

    # Partition 1 from 1 MiB; partition 2 from the next MiB to the end (the
    # backup GPT's sectors). The protective MBR's entry stays inactive, as
    # the UEFI specification asks (SeaBIOS and OVMF boot it so).
    sfdisk --quiet --no-reread --no-tell-kernel "$raw" <<EOF
label: gpt
label-id: $(guid disk)
unit: sectors
sector-size: 512
first-lba: 2048
start=2048, size=$(( mib * 2048 )), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$(guid esp), name="EFI system partition", attrs="LegacyBIOSBootable"
start=$(( 2048 + mib * 2048 )), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$(guid data), name="DOCKER"
EOF
    dd if="$esp" of="$raw" bs=1M seek=1 conv=notrunc,sparse status=none
    dd if=/usr/lib/SYSLINUX/gptmbr.bin of="$raw" bs=440 count=1 conv=notrunc status=none
    rm -f "$esp"
}

hybrid_iso_disk() {
    dd if="$iso" of="$raw" conv=notrunc,sparse bs=1M status=none
    python3 - "$raw" "$(stat -c %s "$iso")" "$size_gib" <<'PY'
import struct, sys
raw, iso_size, size_gib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
MIB = 1 << 20
start = -(-iso_size // MIB) * MIB // 512          # the first MiB boundary after the ISO
end = size_gib * 1024 * MIB // 512
with open(raw, "r+b") as f:
    mbr = bytearray(f.read(512))
    if mbr[510:512] != b"\x55\xaa":
        sys.exit("onlydocker.iso has no hybrid MBR (no 55 AA signature)")
    free = [n for n in (2, 3, 4) if not any(mbr[446 + 16 * (n - 1):446 + 16 * n])]
    if not free:
        sys.exit("the hybrid MBR has no free partition slot")
    entry = 446 + 16 * (free[0] - 1)
    last = max((struct.unpack_from("<II", mbr, 446 + 16 * i + 8) for i in range(4)), key=sum)
    if sum(last) > start:
        sys.exit(f"partition {free[0]} would start at sector {start}, inside the ISO's partitions (end {sum(last)})")
    # Not active, CHS "beyond 8 GB" markers, type 0x83 (Linux), LBA start and length.
    mbr[entry:entry + 16] = bytes([0, 0xFE, 0xFF, 0xFF, 0x83, 0xFE, 0xFF, 0xFF]) + struct.pack("<II", start, end - start)
    f.seek(0)
    f.write(mbr)
PY
}

if [ -f "$uki" ]; then gpt_disk; else hybrid_iso_disk; fi
qemu-img convert -q -f raw -O qcow2 "$raw" "$build/out/box.img"
rm -f "$raw"
qemu-img check -q "$build/out/box.img"
