#!/usr/bin/env bash
# Make /lib/modules/$(uname -r)/build point at kernel headers, which bcc needs to compile bpf/.
# Prefer the exact headers package; when the distro has none for this kernel (custom or VM
# kernels), install the nearest packaged series and link it, saying so.
set -euo pipefail

release=$(uname -r)
moddir=/lib/modules/$release
if [ -e "$moddir/build/include/linux/kconfig.h" ] || [ -e "$moddir/build/include/generated/autoconf.h" ]; then
  echo "kernel headers: $moddir/build present"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() { apt-get install -y -q --no-install-recommends "$@"; }

if apt-cache show "linux-headers-$release" >/dev/null 2>&1; then
  apt_install "linux-headers-$release"
  echo "kernel headers: installed linux-headers-$release"
  exit 0
fi

arch=$(dpkg --print-architecture)
running=$(echo "$release" | grep -oE '^[0-9]+\.[0-9]+')
# Candidates: versioned series packages such as linux-headers-6.12-amd64, newest first, preferring
# the newest series not newer than the running kernel.
mapfile -t series < <(apt-cache pkgnames linux-headers- | grep -E "^linux-headers-[0-9]+\.[0-9]+-$arch$" \
  | sed -E "s/^linux-headers-([0-9]+\.[0-9]+)-$arch$/\1/" | sort -V -r)
pick=""
for v in "${series[@]}"; do
  if [ "$(printf '%s\n%s\n' "$v" "$running" | sort -V | head -1)" = "$v" ]; then pick=$v; break; fi
done
[ -n "$pick" ] || pick=${series[0]:-}
if [ -z "$pick" ]; then
  echo "kernel headers: no linux-headers package for $release and no series package for $arch." >&2
  echo "Install headers for this kernel and link them to $moddir/build." >&2
  exit 1
fi
apt_install "linux-headers-$pick-$arch"
# The series package depends on one versioned flavour: find its directories.
hdr=$(ls -d /usr/src/linux-headers-"$pick".*-"$arch" 2>/dev/null | sort -V | tail -1)
common=$(ls -d /usr/src/linux-headers-"$pick".*-common 2>/dev/null | sort -V | tail -1)
[ -n "$hdr" ] || { echo "kernel headers: linux-headers-$pick-$arch installed no /usr/src tree" >&2; exit 1; }
mkdir -p "$moddir"
ln -sfn "$hdr" "$moddir/build"
[ -n "$common" ] && ln -sfn "$common" "$moddir/source"
echo "kernel headers: no package for $release; linked the nearest series $pick ($hdr)."
echo "  BPF programs here use tracepoint formats read at run time, so a nearby series is enough."
