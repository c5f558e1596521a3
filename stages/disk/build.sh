# An empty, sparse 40 GB disk: init formats it (label DOCKER) on first boot
# and keeps /var/lib/docker there. qemu-img writes a random CID into the
# VMDK descriptor; a constant one makes the bytes reproducible.
set -eu
qemu-img create -q -f vmdk -o subformat=streamOptimized /build/out/data-disk.vmdk 40G
perl -0777 -pi -e 's/(?<!parent)CID=[0-9a-f]{8}/CID=0d0c4e72/g' /build/out/data-disk.vmdk
grep -a -q 'CID=0d0c4e72' /build/out/data-disk.vmdk
