# The libvirt box boots from its disk (vagrant-libvirt gives the domain
# box.img and nothing else), so the disk is the hybrid ISO itself, written at
# its start (SeaBIOS boots its MBR, ISOLINUX reads the ISO; OVMF boots the
# EFI partition of a UEFI lane's ISO, the MBR's partition 2), followed by an
# empty partition in the MBR's first free slot (2, or 3 after the EFI one)
# that init formats (label DOCKER) on first boot and keeps /var/lib/docker on. The kernel, initrd and boot menu are the ISO's, byte
# for byte. qemu-img writes qcow2 without dates or random ids: same raw
# image, same bytes.
set -eu
build="${BUILD:-/build}"
size_gib=40
iso="$build/deps/iso/onlydocker.iso"
raw="$build/work/box.raw"
mkdir -p "$build/work" "$build/out"
rm -f "$raw"
truncate -s "${size_gib}G" "$raw"
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
qemu-img convert -q -f raw -O qcow2 "$raw" "$build/out/box.img"
rm -f "$raw"
qemu-img check -q "$build/out/box.img"
