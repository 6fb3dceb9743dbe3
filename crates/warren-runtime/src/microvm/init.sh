#!/bin/busybox sh
# Warren microVM init. Runs from the initramfs the host builds (busybox + the virtio modules),
# sets the guest up from /warren/config (appended per sandbox), then hands PID 1 to the agent.
/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

fail() {
    echo "warren-init: $*"
    poweroff -f
}

mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
for m in $(cat /modules/order); do
    insmod "/modules/$m.ko" || fail "cannot load module $m"
done
. /warren/config

# Boot probe (`warren doctor`, bench/): the agent straight from its disk, no root, no network,
# to time the VMM + kernel + initramfs + agent floor.
if [ "$WARREN_BOOT_PROBE" = 1 ]; then
    for i in $(seq 1 500); do [ -e /dev/vda ] && break; usleep 10000; done
    mkdir -p /.warren /tmp /workspace && mount -t ext4 -o ro /dev/vda /.warren || fail "no agent disk"
    exec /.warren/lib/ld-linux-x86-64.so.2 --library-path /.warren/lib /.warren/warren-agent \
        --tcp 127.0.0.1:7777
fi

# Disks are found by the serial the host gave them, not by probe order.
disk() {
    for i in $(seq 1 500); do
        for b in /sys/block/vd*; do
            [ "$(cat "$b/serial" 2>/dev/null)" = "$1" ] && { echo "/dev/${b##*/}"; return 0; }
        done
        usleep 10000
    done
    return 1
}
ROOT=$(disk warren-root) || fail "no root disk"
DATA=$(disk warren-data) || fail "no writable disk"
AGENT=$(disk warren-agent) || fail "no agent disk"

mkdir -p /lower /data /newroot
mount -t ext4 -o ro "$ROOT" /lower || fail "cannot mount the root disk"
mount -t ext4 "$DATA" /data || fail "cannot mount the writable disk"
mkdir -p /data/upper /data/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/data/upper,workdir=/data/work /newroot \
    || fail "cannot mount the root overlay"
for d in .warren proc sys dev tmp workspace run; do mkdir -p "/newroot/$d"; done
chmod 1777 /newroot/tmp
mount -t ext4 -o ro "$AGENT" /newroot/.warren || fail "cannot mount the agent disk"
mount --move /dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev shm /newroot/dev/shm
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
if [ -f /warren/resolv.conf ]; then
    rm -f /newroot/etc/resolv.conf
    cp /warren/resolv.conf /newroot/etc/resolv.conf
fi

hostname "$WARREN_HOSTNAME"
ip link set lo up
ip link set eth0 up || fail "no network device"
ip addr add "$WARREN_GUEST_IP/30" dev eth0
ip route add default via "$WARREN_GATEWAY_IP"

WARREN_BOOT_ENV="$(cat /warren/env.json)"
export WARREN_BOOT_ENV HOME=/root LANG=C.UTF-8 TERM=xterm-256color
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
exec switch_root /newroot /.warren/lib/ld-linux-x86-64.so.2 --library-path /.warren/lib \
    /.warren/warren-agent --tcp "0.0.0.0:$WARREN_AGENT_PORT" --sandbox-id "$WARREN_SANDBOX_ID" \
    --template "$WARREN_TEMPLATE" --vcpu "$WARREN_VCPU" --memory-mb "$WARREN_MEMORY_MB" \
    --disk-mb "$WARREN_DISK_MB" --workdir "$WARREN_WORKDIR"
