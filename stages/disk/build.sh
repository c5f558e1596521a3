# An empty, sparse 40 GB disk: init formats it (label DOCKER) on first boot
# and keeps /var/lib/docker there. qemu-img writes a random CID into the
# VMDK descriptor, unpadded (1 to 8 hex digits); a constant of the same
# length keeps every other byte in place, so we draw again until the CID
# has 8 digits (15 times in 16 at once) and then write ours.
set -eu
disk=/build/out/data-disk.vmdk
i=0
while :; do
    qemu-img create -q -f vmdk -o subformat=streamOptimized "$disk" 40G
    grep -a -q -E '(^|[^t])CID=[0-9a-f]{8}$' "$disk" && break
    i=$((i + 1))
    [ "$i" -lt 32 ] || { echo "qemu-img never wrote an 8-digit CID"; exit 1; }
done
perl -0777 -pi -e 's/(?<!parent)CID=[0-9a-f]{8}\n/CID=0d0c4e72\n/' "$disk"
grep -a -q '^CID=0d0c4e72$' "$disk"
