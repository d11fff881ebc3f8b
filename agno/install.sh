#!/usr/bin/env bash
# Installs the pinned Agno stack (agno 2.1.5, as Wegent pins it) into a venv for agno_client.py.
#
#   bash agno/install.sh [VENV_DIR]        # default: <repo>/.tools/agno-venv
#   PYTHON=python3.11 bash agno/install.sh # the interpreter for a new venv (default python3)
#
# Idempotent: a venv that already imports the stack with agno 2.1.5 is left alone.
# Prints AGNO_PYTHON=<venv>/bin/python as its last line (the interpreter the executor runs).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="${1:-$repo/.tools/agno-venv}"
# An absolute path, so the printed AGNO_PYTHON works from any cwd.
mkdir -p "$(dirname "$venv")"
venv="$(cd "$(dirname "$venv")" && pwd)/$(basename "$venv")"
py="$venv/bin/python"
want="2.1.5"

check() {
    [ -x "$py" ] && "$py" - "$want" <<'PY' >/dev/null 2>&1
import sys
import agno, mcp, openai, anthropic
from agno.team import Team
from importlib.metadata import version
sys.exit(0 if version("agno") == sys.argv[1] else 1)
PY
}

if check; then
    echo "agno $want is already installed in $venv; nothing to do"
else
    start=$(date +%s)
    if [ ! -x "$py" ]; then
        echo "creating venv $venv"
        "${PYTHON:-python3}" -m venv "$venv"
    fi
    echo "installing $here/requirements.txt into $venv"
    "$py" -m pip install --disable-pip-version-check -r "$here/requirements.txt"
    if ! check; then
        echo "error: the venv $venv still does not import agno $want (see pip output above)" >&2
        exit 1
    fi
    echo "installed in $(( $(date +%s) - start ))s"
fi
echo "AGNO_PYTHON=$py"
