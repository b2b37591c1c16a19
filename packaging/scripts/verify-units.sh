#!/bin/sh
# Check the systemd units in packaging/ the way systemd itself reads them:
#
#   1. `systemd-analyze verify` on ctrlsock@.service and ctrlsock@.socket, as templates and as an
#      instance. Any output fails the check: verify exits 0 on "Unknown key ..., ignoring" and "Failed to
#      parse ..., ignoring" (systemd 252 measured), which is exactly how a typo in a hardening option
#      slips through.
#   2. `systemd-analyze security --offline`: every hardening check it knows passes, except a short list
#      of exceptions justified below, so hardening cannot quietly go.
#   3. sysusers.d creates the ctrlsock user, then tmpfiles.d creates /run/ctrlsock 0750 owned by it,
#      both into a scratch root (--root), never on this machine.
#
# The units run `ctrlsock` from systemd's executable search path and name man:ctrlsock(1), and verify
# checks both exist: so everything is installed into a scratch root (--root=) that also carries this
# machine's own units (sysinit.target & co.), and MANPATH points man(1) at our page.
#
# Usage: packaging/scripts/verify-units.sh [PACKAGING_DIR]    (default: the packaging/ folder this script is in)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
packaging=${1:-$here/..}

for tool in systemd-analyze systemd-sysusers systemd-tmpfiles; do
    command -v "$tool" >/dev/null || { echo "verify-units: $tool is not installed (apt-get install systemd)" >&2; exit 2; }
done

root=$(mktemp -d /tmp/ctrlsock-units-XXXXXX)
trap 'rm -rf "$root"' EXIT INT TERM

mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd" "$root/usr/bin" "$root/usr/share/man/man1"
cp -R /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp "$packaging"/systemd/ctrlsock@.service "$packaging"/systemd/ctrlsock@.socket "$root/etc/systemd/system/"
cp "$packaging/man/ctrlsock.1" "$root/usr/share/man/man1/"
printf '#!/bin/sh\nexit 0\n' >"$root/usr/bin/ctrlsock"
chmod 0755 "$root/usr/bin/ctrlsock"

failed=0
check() {
    # $1: what; rest: the command. Fails on a non-zero exit or on any output at all, except lines
    # matching $EXPECTED (an extended regex) when that is set.
    what=$1
    shift
    if output=$("$@" 2>&1) && [ -z "$(printf '%s' "$output" | grep -Ev "${EXPECTED:-^\$}")" ]; then
        echo "ok: $what"
    else
        echo "FAILED: $what" >&2
        printf '%s\n' "$output" | sed 's/^/    /' >&2
        failed=1
    fi
}

export MANPATH="$root/usr/share/man"
check "systemd-analyze verify ctrlsock@.service ctrlsock@.socket (templates)" \
    systemd-analyze verify --root="$root" ctrlsock@.service ctrlsock@.socket
check "systemd-analyze verify ctrlsock@main.service ctrlsock@main.socket (an instance)" \
    systemd-analyze verify --root="$root" ctrlsock@main.service ctrlsock@main.socket

# Every hardening check systemd knows must pass, except these, each for a reason:
#   RootDirectoryOrRootImage         a chroot buys nothing over ProtectSystem=strict for a Python daemon
#   RestrictAddressFamilies_AF_UNIX  the control socket is AF_UNIX
#   ProtectProc, ProcSubset          the lock diagnosis reads other processes' /proc entries, /proc/locks
#                                    and /proc/sys/kernel/random/boot_id
#   PrivateUsers                     --allow-uid/--allow-gid judge real SO_PEERCRED ids
#   DeviceAllow                      the char-rtc:r entry is ProtectClock='s own
ALLOWED_EXPOSURES="RootDirectoryOrRootImage RestrictAddressFamilies_AF_UNIX ProtectProc ProcSubset PrivateUsers DeviceAllow"
if output=$(systemd-analyze security --offline=yes --root="$root" --json=short ctrlsock@main.service 2>&1) &&
    unexpected=$(printf '%s' "$output" | python3 -c '
import json, sys
allowed = set(sys.argv[1].split())
checks = json.load(sys.stdin)
bad = [c["name"] + "  " + c["description"] for c in checks
       if c.get("exposure") not in (None, "0.0") and c["json_field"] not in allowed]
print("\n".join(bad))
' "$ALLOWED_EXPOSURES") && [ -z "$unexpected" ]; then
    echo "ok: systemd-analyze security: every hardening check passes but the documented exceptions"
else
    echo "FAILED: systemd-analyze security: hardening missing (add it, or justify it in $0):" >&2
    printf '%s\n' "${unexpected:-$output}" | sed 's/^/    /' >&2
    failed=1
fi

EXPECTED="^Creating (group|user) 'ctrlsock'" check "systemd-sysusers creates the ctrlsock user" \
    systemd-sysusers --root="$root" "$packaging/sysusers.d/ctrlsock.conf"
check "systemd-tmpfiles --create" \
    systemd-tmpfiles --create --root="$root" "$packaging/tmpfiles.d/ctrlsock.conf"
uid=$(awk -F: '$1 == "ctrlsock" { print $3 }' "$root/etc/passwd" 2>/dev/null || true)
gid=$(awk -F: '$1 == "ctrlsock" { print $3 }' "$root/etc/group" 2>/dev/null || true)
made=$(stat -c '%F %a %u %g' "$root/run/ctrlsock" 2>/dev/null || echo missing)
if [ -n "$uid" ] && [ "$made" = "directory 750 $uid $gid" ]; then
    echo "ok: /run/ctrlsock is a directory, 0750, owned by ctrlsock ($uid:$gid)"
else
    echo "FAILED: /run/ctrlsock should be 'directory 750 ${uid:-?} ${gid:-?}', is '$made'" >&2
    failed=1
fi

exit "$failed"
