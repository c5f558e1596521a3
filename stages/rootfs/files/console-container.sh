#!/bin/sh
# Waits for the daemon, runs DHCP in a host-network container, then keeps a
# console ("dom0") container running on this script's terminal: leaving it
# starts a fresh one. Its own messages go to the log and the kernel console.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
. /etc/onlydocker/lane.conf
LOG=/var/log/console-container.log
say() { echo "console-container: $*" | tee -a "$LOG" >/dev/console; }

i=0
until docker version >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -gt 300 ] && { say "the Docker daemon never answered"; exit 1; }
    sleep 1
done
say "daemon is up"

# The bundled image, made by the build from its own BusyBox (no pulls).
if ! docker inspect "$DHCP_IMAGE" >/dev/null 2>&1; then
    if [ "$IMAGE_LOAD" = import ]; then
        docker import "$IMAGE_ARCHIVE" "$DHCP_IMAGE" >>"$LOG" 2>&1
    else
        docker load -i "$IMAGE_ARCHIVE" >>"$LOG" 2>&1
    fi && say "loaded $IMAGE_ARCHIVE" || say "could not load $IMAGE_ARCHIVE"
fi

# DHCP for the host's eth0 from a container sharing the host's network; the
# lease's DNS servers go into the host's resolv.conf.
docker rm -f dhcp >/dev/null 2>&1
if docker run --name dhcp --net host --cap-add NET_ADMIN -v /etc/resolv.conf:/etc/resolv.conf \
        "$DHCP_IMAGE" udhcpc -i eth0 -q -n -t 10 -s /usr/share/udhcpc/default.script >>"$LOG" 2>&1; then
    say "dhcp: eth0 configured"
else
    say "dhcp: no lease"
fi

tty=""
[ -t 0 ] && tty="-t"
while true; do
    # Checked each time: an image tagged console-image:latest from inside
    # the console takes over when the current one exits.
    libs=""
    if docker inspect console-image:latest >/dev/null 2>&1; then
        image=console-image:latest
    else
        image=$CONSOLE_IMAGE_DEFAULT
        # The static BusyBox image has no C library; a dynamic docker
        # client then runs with the host's (read-only, and no others'):
        # /lib64 (its interpreter) and the folder of the host's libraries,
        # /lib/x86_64-linux-gnu or, merged /usr (trixie's packages), the
        # /usr one, at /lib/x86_64-linux-gnu, where the loader looks.
        if [ -d /lib64 ]; then
            libs="-v /lib64:/lib64:ro"
            for d in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu; do
                if [ -d "$d" ]; then libs="$libs -v $d:/lib/x86_64-linux-gnu:ro"; break; fi
            done
        fi
    fi
    say "starting the console container from $image"
    docker rm -f console >/dev/null 2>&1
    docker run --name console -i $tty --privileged --net host \
        -v /:/root -v /lib/modules:/lib/modules:ro $libs \
        -v /usr/bin/docker:/usr/bin/docker:ro -v /var/run/docker.sock:/var/run/docker.sock \
        "$image" /bin/sh
    say "the console container exited ($?)"
    sleep 2
done
