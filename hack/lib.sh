# shellcheck shell=bash
# Shared helpers for hack/* scripts (sourced, not executed).
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

BYOL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BYOL_CACHE="${BYOL_CACHE:-$HOME/.cache/baremetal-byol}"
export BYOL_ROOT BYOL_CACHE

# The two supported toolchains (ansible-core series); see toolchain_python_version.
# shellcheck disable=SC2034  # used by the scripts that source this file
BYOL_TOOLCHAINS=("2.21" "2.19")

log() { printf '%s [byol] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# Python X.Y used for a toolchain.
toolchain_python_version() {
    case "$1" in
        2.21) echo "${BYOL_PY_2_21_VERSION:-3.13}" ;;
        2.19) echo "3.11" ;;
        *) die "unknown toolchain $1" ;;
    esac
}

# Is $1 a working interpreter of version $2 (X.Y) with venv + ensurepip?
_python_ok() {
    [ -x "$1" ] || return 1
    "$1" -c "import sys, venv, ensurepip, ssl; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '$2' else 1)" >/dev/null 2>&1
}

# Print the path of a real (non-venv, non-shim) interpreter for toolchain $1.
# Override with BYOL_PYTHON_2_21=/path/python3.13 or BYOL_PYTHON_2_19=/path/python3.11.
find_python() {
    local series="$1" ver override cand root
    ver="$(toolchain_python_version "$series")"
    override="BYOL_PYTHON_${series//./_}"
    if [ -n "${!override:-}" ]; then
        _python_ok "${!override}" "$ver" || die "$override=${!override} is not a working Python $ver"
        echo "${!override}"; return 0
    fi
    local -a cands=()
    if [ "$series" = "2.19" ]; then
        # Debian 12's own python3 (3.11) first; pyenv's 3.11 as a fallback.
        cands+=("/usr/bin/python$ver")
    fi
    root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
    for cand in "$root"/versions/"$ver".*/bin/python"$ver"; do
        [ -e "$cand" ] && cands+=("$cand")
    done
    cands+=("/usr/local/bin/python$ver" "/usr/bin/python$ver")
    for cand in "${cands[@]}"; do
        if _python_ok "$cand" "$ver"; then echo "$cand"; return 0; fi
    done
    die "no working Python $ver found for ansible-core $series (tried: ${cands[*]}); install it (e.g. pyenv install $ver) or set $override"
}

# Stable venv path for a toolchain (symlink maintained by hack/setup).
venv_dir() { echo "$BYOL_CACHE/venv-$1"; }

# Copy the collection (git-tracked + untracked-not-ignored files) to a real
# .build/ansible_collections/baremetal/byol tree (ansible-test needs that path; no symlinks).
# Files that vanished from the source are removed from the copy; tests/output/ is kept.
# The copy gets its own empty git repository: ansible-test takes its file list from the nearest
# .git upwards (`git ls-files --cached --others --exclude-standard`), and without one it would find
# the source checkout, where .build/ is ignored, and skip every target.
BYOL_BUILD_TREE="$BYOL_ROOT/.build/ansible_collections/baremetal/byol"
sync_build_tree() {
    local list
    list="$(mktemp)"
    (cd "$BYOL_ROOT" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"; done) > "$list"
    mkdir -p "$BYOL_BUILD_TREE"
    [ -d "$BYOL_BUILD_TREE/.git" ] || git -C "$BYOL_BUILD_TREE" init -q
    rsync -a --from0 --files-from="$list" "$BYOL_ROOT/" "$BYOL_BUILD_TREE/"
    # delete what is no longer in the source (except ansible-test's output)
    (cd "$BYOL_BUILD_TREE" && find . \( -path ./tests/output -prune -o -path ./.git -prune \) -o \( -type f -o -type l \) -print0 | sed -z 's|^\./||') |
        sort -z | comm -z -23 - <(sort -z "$list") |
        (cd "$BYOL_BUILD_TREE" && xargs -0 -r rm -f)
    find "$BYOL_BUILD_TREE" -mindepth 1 -type d -empty -not -path '*/tests/output*' -not -path '*/.git*' -delete
    rm -f "$list"
}
