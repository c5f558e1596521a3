# An empty, sparse 40 GB disk: init formats it (label DOCKER) on first boot
# and keeps /var/lib/docker there. qemu-img writes a random CID into the
# VMDK descriptor, unpadded (1 to 8 hex digits); a constant of the same
# length keeps every other byte in place, so we draw again until the CID
# has 8 digits (15 times in 16 at once) and then write ours.
# (tests/test_box.py runs this script on the host, with BUILD set.)
set -eu
build="${BUILD:-/build}"
size_gib=40
cid=0d0c4e72
disk="$build/out/data-disk.vmdk"
mkdir -p "$build/out"
i=0
while :; do
    qemu-img create -q -f vmdk -o subformat=streamOptimized "$disk" "${size_gib}G"
    grep -a -q -E '(^|[^t])CID=[0-9a-f]{8}$' "$disk" && break
    i=$((i + 1))
    [ "$i" -lt 32 ] || { echo "qemu-img never wrote an 8-digit CID"; exit 1; }
done
perl -0777 -pi -e "s/(?<!parent)CID=[0-9a-f]{8}\n/CID=$cid\n/" "$disk"
grep -a -q "^CID=$cid\$" "$disk"
