#!/bin/sh
# Run a command as root inside a Debian chroot (default /srv/trixie): how mailmfa's suite is
# run on Debian 13 from a Debian 12 machine (README, "Development"). /proc, /sys, /dev,
# /dev/pts, /dev/shm and /run are mounted while the command runs.
#   usage: packaging/trixie-chroot.sh [-r ROOT] COMMAND [ARGS...]
#   e.g.:  apt-get install debootstrap
#          debootstrap trixie /srv/trixie http://deb.debian.org/debian
#          git clone . /srv/trixie/opt/mailmfa
#          packaging/trixie-chroot.sh sh -c 'cd /opt/mailmfa && .ci/run'
# Several invocations may overlap: the last one to finish kills what still runs inside the
# root (only processes whose /proc/PID/root is the chroot) and unmounts. Starts no service.
set -eu
ROOT=/srv/trixie
if [ "${1:-}" = "-r" ]; then ROOT=$2; shift 2; fi
[ $# -gt 0 ] || { echo "usage: $0 [-r ROOT] COMMAND [ARGS...]" >&2; exit 2; }
ROOT=$(readlink -f "$ROOT")
[ -x "$ROOT/bin/sh" ] && [ "$ROOT" != / ] || { echo "$ROOT is not a Debian root (debootstrap it first)" >&2; exit 2; }

MOUNTS="/proc /sys /dev /dev/pts /dev/shm /run"
mnt() {  # mnt TARGET TYPE SOURCE [OPTIONS]
  mkdir -p "$ROOT$1"
  mountpoint -q "$ROOT$1" || mount -t "$2" ${4:+-o "$4"} "$3" "$ROOT$1"
}
kill_inside() {
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$ROOT" ] && kill -9 "${p#/proc/}" 2>/dev/null || true
  done
}
cleanup() {
  flock -x 9
  flock -u 8
  # the use lock taken exclusively = no other invocation still holds it shared: we are the last
  if flock -x -n 8; then
    kill_inside
    sleep 0.3
    for m in $(echo "$MOUNTS" | tr ' ' '\n' | sort -r); do
      if mountpoint -q "$ROOT$m"; then umount "$ROOT$m" 2>/dev/null || umount -l "$ROOT$m"; fi
    done
  fi
  flock -u 9
}

# fd 9: set-up/tear-down lock; fd 8: held shared by every invocation while its command runs
exec 8>"$ROOT/.chroot-use.lock" 9>"$ROOT/.chroot-setup.lock"
flock -x 9
mnt /proc proc proc
mnt /sys sysfs sysfs
mnt /dev devtmpfs udev
mnt /dev/pts devpts devpts gid=5,mode=620,ptmxmode=666
mnt /dev/shm tmpfs tmpfs mode=1777
mnt /run tmpfs tmpfs mode=755
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
# CAs the host trusts locally (e.g. a TLS-intercepting proxy's) are trusted inside too, so
# apt and pip over https behave as on the host (applied once ca-certificates is installed).
for crt in /usr/local/share/ca-certificates/*.crt; do
  [ -e "$crt" ] || continue
  cmp -s "$crt" "$ROOT$crt" && [ -e "$ROOT/etc/ssl/certs/$(basename "$crt" .crt).pem" ] && continue
  mkdir -p "$ROOT/usr/local/share/ca-certificates" && cp "$crt" "$ROOT$crt"
  [ -x "$ROOT/usr/sbin/update-ca-certificates" ] && chroot "$ROOT" update-ca-certificates >/dev/null 2>&1 || true
done
flock -s 8
flock -u 9
trap cleanup EXIT
trap 'exit 130' INT TERM

rc=0
chroot "$ROOT" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@" 8>&- 9>&- || rc=$?
exit $rc
