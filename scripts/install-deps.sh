#!/usr/bin/env bash
# install-deps.sh — installs what Aegis Gateway needs to build and test.
#
# CI runs on a fresh Debian 12 machine with only Swift (/opt/swift), gcc and
# a Python with pip on it, so everything else is installed here. Idempotent:
# it installs only what is missing (apt-get update only when something must
# be installed), prints nothing when all is there, and on failure says what
# failed and shows the tail of the tool's output.
#
# Environment: PYTHON (default python3), CLANG (default
# /opt/swift/usr/bin/clang, the clang with libFuzzer).
set -euo pipefail

cd "$(dirname "$0")/.."

# Debian packages: C libraries of the core and transport, and PostgreSQL.
APT_PACKAGES=(
    libsodium-dev liburing-dev libssl-dev libpq-dev
    postgresql postgresql-contrib
    pkg-config python3-pip
    # the tests' tools: openssl (certificates), psql (postgresql-client),
    # runuser (util-linux, for pg_ctl as postgres)
    openssl postgresql-client util-linux
)
REQUIREMENTS=Tests/requirements.txt
PYTHON=${PYTHON:-python3}
CLANG=${CLANG:-/opt/swift/usr/bin/clang}

LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

fail() { echo "install-deps: $*" >&2; exit 1; }

# Runs a command with its output in $LOG; on failure shows it and stops.
quietly() {
    if ! "$@" >"$LOG" 2>&1; then
        echo "install-deps: FAILED: $*" >&2
        tail -n 40 "$LOG" | sed 's/^/    /' >&2
        exit 1
    fi
}

# Root runs apt-get itself; anyone else needs sudo.
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    SUDO=()   # only an error if something must actually be installed
fi

# --- Swift toolchain (not an apt package: it must already be there) ---------
if ! command -v swift >/dev/null 2>&1; then
    if [ -x /opt/swift/usr/bin/swift ]; then
        # The Makefile adds it to PATH itself; a plain shell needs this.
        echo "install-deps: note: swift is in /opt/swift/usr/bin, which is not on PATH;" \
             "add: export PATH=/opt/swift/usr/bin:\$PATH" >&2
    else
        fail "swift not found (expected Swift 6 at /opt/swift/usr/bin); it cannot be installed from apt"
    fi
fi
[ -x "$CLANG" ] || fail "clang with libFuzzer not found at $CLANG (set CLANG=...)"

# --- Debian packages ----------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
        fail "need root or sudo to install: ${missing[*]}"
    fi
    echo "install-deps: installing ${missing[*]}" >&2
    apt_get=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)
    quietly "${apt_get[@]}" update
    quietly "${apt_get[@]}" install -y --no-install-recommends "${missing[@]}"
fi

# --- Python packages for the end-to-end tests ---------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || fail "$PYTHON not found"
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    # A Python of its own (pyenv) does not see Debian's python3-pip.
    quietly "$PYTHON" -m ensurepip --upgrade
fi

# Prints the lines of the requirements file that the installed packages do
# not satisfy (by name and version specifier).
unsatisfied=$("$PYTHON" - "$REQUIREMENTS" <<'EOF'
import sys
from importlib import metadata
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate():
        continue
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        print(line)
        continue
    if not req.specifier.contains(version, prereleases=True):
        print(line)
EOF
) || fail "could not read $REQUIREMENTS"

if [ -n "$unsatisfied" ]; then
    echo "install-deps: pip installing $(echo $unsatisfied)" >&2
    pip_args=(install -q --disable-pip-version-check -r "$REQUIREMENTS")
    # Debian's own python (PEP 668) refuses pip outside a venv unless told.
    if "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(0 if sys.prefix == sys.base_prefix and os.path.isfile(
    os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
        pip_args+=(--break-system-packages)
    fi
    [ "$(id -u)" -eq 0 ] && pip_args+=(--root-user-action=ignore)
    quietly "$PYTHON" -m pip "${pip_args[@]}"
fi
