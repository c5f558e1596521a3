#!/bin/sh
# Waits for the daemon, runs DHCP in a host-network container, then keeps a
# console ("dom0") container running: leaving it starts a fresh one.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
. /etc/onlydocker/lane.conf
say() { echo "console-container: $*"; }

i=0
until docker version >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -gt 300 ] && { say "the Docker daemon never answered"; exit 1; }
    sleep 1
done
say "daemon is up"

# The bundled image, made by the build from its own BusyBox (no pulls).
if ! docker inspect "$DHCP_IMAGE" >/dev/null 2>&1; then
    docker load -i "$IMAGE_ARCHIVE" && say "loaded $IMAGE_ARCHIVE"
fi

docker rm -f dhcp >/dev/null 2>&1
if docker run --name dhcp --net host --cap-add NET_ADMIN "$DHCP_IMAGE" \
        udhcpc -i eth0 -q -n -t 10 -s /usr/share/udhcpc/default.script; then
    say "dhcp: eth0 configured"
else
    say "dhcp: no lease"
fi

if docker inspect console-image:latest >/dev/null 2>&1; then
    image=console-image:latest
else
    image=$CONSOLE_IMAGE_DEFAULT
fi
tty=""
[ -t 0 ] && tty="-t"
while true; do
    say "starting the console container from $image"
    docker rm -f console >/dev/null 2>&1
    docker run --name console -i $tty --privileged --net host \
        -v /:/root -v /lib/modules:/lib/modules:ro \
        -v /usr/bin/docker:/usr/bin/docker:ro -v /var/run/docker.sock:/var/run/docker.sock \
        "$image" /bin/sh
    say "the console container exited ($?)"
    sleep 2
done
