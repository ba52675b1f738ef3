#!/usr/bin/env bash
# The main job, and the one entry point for set-up.
#
#   ./reproduce.sh                 offline FGMix experiment on CPU (no downloads), then tables
#   ./reproduce.sh test            the test suite (what CI runs)
#   ./reproduce.sh setup           only create/refresh the environment
#   ./reproduce.sh --full --data_dir DIR --launcher NAME   the DomainBed protocol on real data
#
# Set-up: uses the active virtual environment if there is one, else creates ./.venv, and
# installs the package with pinned torch/torchvision (skipped when nothing changed).
set -euo pipefail
cd "$(dirname "$0")"

TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
EXTRAS="test,plots,slurm"

setup_env() {
  if [[ -z "${VIRTUAL_ENV:-}" ]]; then
    if [[ ! -x .venv/bin/python ]]; then
      echo "[setup] creating virtual environment .venv" >&2
      python3 -m venv .venv
    fi
    # shellcheck disable=SC1091
    source .venv/bin/activate
  fi
  local stamp
  stamp="$VIRTUAL_ENV/.domainbed-installed-$(cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)"
  if [[ ! -f "$stamp" ]]; then
    echo "[setup] installing domainbed-fgmix with ${TORCH_PINS[*]} (first run: a few minutes)" >&2
    python -m pip install --quiet --upgrade pip >&2
    python -m pip install --quiet "${TORCH_PINS[@]}" -e ".[${EXTRAS}]" >&2
    touch "$stamp"
  fi
}

run_tests() {
  set +e
  # One worker per core (pytest-xdist): the suite is CPU-bound and its tests independent;
  # a later `-n N` among the arguments wins (`-n 0`: in this process). Work stealing: an idle
  # worker takes pending tests from a busy one, so a few long tests at the end of the
  # collection order do not leave the other core idle.
  python -m pytest tests -n auto --dist worksteal "$@"
  local rc=$?
  set -e
  if [[ $rc -eq 5 ]]; then
    echo "pytest collected no tests: failing on purpose" >&2
    return 1
  fi
  return $rc
}

case "${1:-}" in
  setup) setup_env ;;
  test) shift; setup_env; run_tests "$@" ;;
  *)
    setup_env
    exec python -m domainbed.scripts.reproduce "$@"
    ;;
esac
