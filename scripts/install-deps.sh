#!/usr/bin/env bash
# Installs the Debian packages Iris and its lab need, only those missing.
# Idempotent: a second run finds everything and does nothing.
set -euo pipefail
PKGS=(openvswitch-switch openssh-client openssh-server iperf3 ethtool iproute2 iputils-ping arping traceroute procps postgresql python3-venv lxc busybox-static qemu-system-x86 qemu-utils nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils e2fsprogs debootstrap stress-ng gcc libc6-dev chromium chromium-driver)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# kvm L1s boot a Debian kernel from /boot with its modules: install one only where the host has
# none (a container or a micro-VM), never a second kernel beside a host's own.
if ! ls /boot/vmlinuz-* >/dev/null 2>&1; then
  missing+=(linux-image-cloud-amd64)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# The packages' maintainer scripts would start system-wide OVS and PostgreSQL services;
# Iris runs its own private instances, so tell invoke-rc.d not to start anything.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1
fi
trap '[ $created_policy -eq 1 ] && rm -f "$policy"' EXIT
apt-get install -y -q --no-install-recommends "${missing[@]}"
