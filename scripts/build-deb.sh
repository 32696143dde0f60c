#!/usr/bin/env bash
# Build limpet's Debian package (debian/) and check what is in it.
#
#   bash scripts/build-deb.sh [OUTDIR]     the .deb ends up in OUTDIR (default build-deb/)
#
# The build runs in a copy of the tree (the files git tracks or would track: build directories
# and other ignored files stay out), so the checkout is left as it was: dpkg-buildpackage writes
# debian/limpet/, obj-*/ and its files next to the source and one level up.
#
# Then the .deb is checked: it holds the binary, both man pages, the systemd unit, the logrotate
# file and the example configuration; the binary, extracted, accepts the extracted example
# (`limpet -t`) and prints the package's version; lintian (when installed) reports, and only an
# error fails.
#
# Environment: DEB_BUILD_OPTIONS (default "nocheck noopt parallel=$JOBS", JOBS default 2),
# LIMPET_LINTIAN=0 to skip lintian.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
outdir="$(realpath -m "${1:-$root/build-deb}")"
cd "$root"

for tool in dpkg-buildpackage dh fakeroot dpkg-deb; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "build-deb: $tool not found: bash scripts/install-deps.sh (debhelper, dpkg-dev, fakeroot)" >&2
    exit 1
  }
done

version=$(dpkg-parsechangelog -l debian/changelog -S Version)
upstream_version=${version%-*}
meson_version=$(sed -n "s/^ *version: '\([^']*\)'.*/\1/p" meson.build | head -n 1)
if [[ $upstream_version != "$meson_version" ]]; then
  echo "build-deb: debian/changelog says $version, meson.build says $meson_version: add a changelog entry (dch -v $meson_version-1)" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/limpet-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src="$work/limpet-$upstream_version"
mkdir -p "$src"
# Tracked and untracked-but-not-ignored files as they are in the working tree (uncommitted edits
# included, so a developer tests what they see); a tracked file deleted in the tree is left out.
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done |
  tar --null -T - -cf - | tar -xf - -C "$src"

# nocheck: the tests run in scripts/test.sh's other stages, and debian/rules builds none anyway.
# noopt (-O0): what is checked here is the packaging (paths, unit, conffiles, shared-library
# dependencies), not the code generation, and -O0 compiles the toml11-heavy config loader much
# faster: dpkg-buildpackage took 231 s with noopt against 395 s at -O2 (parallel=1, this 2-core
# machine, 2026-12-03). A .deb for users is built without it:
#   DEB_BUILD_OPTIONS="nocheck" bash scripts/build-deb.sh
export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-nocheck noopt parallel=${JOBS:-2}}"
echo "build-deb: dpkg-buildpackage -us -uc -b in $src (DEB_BUILD_OPTIONS=$DEB_BUILD_OPTIONS)" >&2
t=$SECONDS
(cd "$src" && dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1 || {
  tail -n 60 "$work/build.log" >&2
  echo "build-deb: dpkg-buildpackage failed (last 60 lines above)" >&2
  exit 1
}
echo "build-deb: built in $((SECONDS - t))s" >&2

arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb="$work/limpet_${version}_${arch}.deb"
[[ -f $deb ]] || { echo "build-deb: $deb not produced" >&2; ls "$work" >&2; exit 1; }

fail=0
check() {  # check WHAT COMMAND...: run it, report, remember a failure
  local what=$1
  shift
  if "$@"; then
    echo "build-deb: ok: $what" >&2
  else
    echo "build-deb: FAILED: $what" >&2
    fail=1
  fi
}

# What meson.build and conf/meson.build install, at the paths debian/rules gives them.
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' >"$work/contents"
for path in /usr/sbin/limpet /usr/share/man/man8/limpet.8.gz /usr/share/man/man5/limpet.toml.5.gz \
            /lib/systemd/system/limpet.service /etc/logrotate.d/limpet /etc/limpet/limpet.toml \
            /usr/share/doc/limpet/copyright; do
  check "contains $path" grep -qx -- "$path" "$work/contents"
done
# Everything under /etc is a conffile: an upgrade keeps the administrator's edits.
dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles >"$work/conffiles" 2>/dev/null || true
for path in /etc/limpet/limpet.toml /etc/logrotate.d/limpet; do
  check "conffile $path" grep -qx -- "$path" "$work/conffiles"
done
# dh_installsystemd found the unit: the maintainer scripts enable and start it.
dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./postinst >"$work/postinst" 2>/dev/null || true
check "postinst enables limpet.service" grep -q "deb-systemd-helper.*enable.*limpet.service" "$work/postinst"
# shlibs found the libraries the binary links.
depends=$(dpkg-deb -f "$deb" Depends)
echo "build-deb: Depends: $depends" >&2
for lib in libuv1 libssl3 libhiredis; do
  check "Depends names $lib" grep -q "$lib" <<<"$depends"
done

# The extracted binary runs, is the package's version, and accepts the example configuration it
# ships with. The example's pid_file is /run/limpet/limpet.pid (the unit's RuntimeDirectory) and
# limpet -t refuses a pid file it could not write, so the check gets that directory in the
# extracted tree instead: everything else is checked as shipped.
x="$work/extract"
dpkg-deb -x "$deb" "$x"
check "limpet -v prints $upstream_version" grep -q -- "$upstream_version" <("$x/usr/sbin/limpet" -v 2>&1)
mkdir -p "$x/run/limpet"
sed "s|^pid_file = \"/run/limpet/|pid_file = \"$x/run/limpet/|" "$x/etc/limpet/limpet.toml" >"$work/check.toml"
check "pid_file of the example is the unit's RuntimeDirectory" \
  grep -qx 'pid_file = "/run/limpet/limpet.pid"' "$x/etc/limpet/limpet.toml"
check "limpet -t accepts the shipped example" "$x/usr/sbin/limpet" -t -c "$work/check.toml"
check "the unit runs /usr/sbin/limpet with /etc/limpet/limpet.toml" \
  grep -qx 'ExecStart=/usr/sbin/limpet -c /etc/limpet/limpet.toml' "$x/lib/systemd/system/limpet.service"

if [[ ${LIMPET_LINTIAN:-1} != 0 ]] && command -v lintian >/dev/null 2>&1; then
  # Warnings and informational tags are reported, not fatal; an error is.
  lintian --tag-display-limit 0 "$deb" >"$work/lintian.txt" 2>&1 || true
  sed 's/^/build-deb: lintian: /' "$work/lintian.txt" >&2
  check "lintian reports no error" bash -c "! grep -q '^E: ' '$work/lintian.txt'"
else
  echo "build-deb: lintian not run (not installed, or LIMPET_LINTIAN=0)" >&2
fi

mkdir -p "$outdir"
cp "$deb" "$outdir/"
cp "$work/build.log" "$outdir/dpkg-buildpackage.log"
if [[ $fail != 0 ]]; then
  echo "build-deb: the package has problems (above); build log: $outdir/dpkg-buildpackage.log" >&2
  exit 1
fi
echo "build-deb: $outdir/$(basename "$deb") ok" >&2
