#!/usr/bin/env bash
# The thread measurements of docs/benchmarks.md ("Threads"): wall time of one FGMix run
# (RotatedMNIST5k, 100 steps) and of a 2-job `local` sweep (FGMix, 6 held-out
# environments, 40 steps), beside LOAD busy Python processes.
#
#   docs/thread_benchmark.sh CODE_DIR LOAD      e.g. docs/thread_benchmark.sh . 2
#
# CODE_DIR is the checkout whose `domainbed` runs (an older one for "before").
set -uo pipefail
code=$(cd "$1" && pwd); load=$2
python=${PYTHON:-python}
scratch=$(mktemp -d)
busy=()
for _ in $(seq "$load"); do "$python" -c 'while 1: pass' & busy+=($!); done
trap 'kill "${busy[@]}" 2>/dev/null; rm -rf "$scratch"' EXIT
sleep 1

seconds() { local start=$(date +%s.%N); "$@" >/dev/null 2>&1; echo "$(date +%s.%N) - $start" | bc; }

single=$(cd "$scratch" && PYTHONPATH=$code seconds "$python" -m domainbed.scripts.train \
  --dataset RotatedMNIST5k --algorithm FGMix --test_envs 0 --steps 100 --output_dir one)
sweep=$(cd "$scratch" && PYTHONPATH=$code DOMAINBED_LOCAL_JOBS=2 seconds "$python" -m \
  domainbed.scripts.sweep launch --datasets RotatedMNIST5k --algorithms FGMix --n_hparams 1 \
  --n_trials 1 --steps 40 --single_test_envs --data_dir offline --output_dir sweep \
  --command_launcher local --skip_confirmation)
done_jobs=$(ls "$scratch"/sweep/*/done 2>/dev/null | wc -l)
printf "%-10s load %s: one FGMix run 100 steps %6.1f s; 2-job local sweep (6 jobs, %s done) %6.1f s; %s\n" \
  "$(basename "$code")" "$load" "$single" "$done_jobs" "$sweep" \
  "$(grep -m1 '^Threads' "$scratch"/one/out.txt 2>/dev/null || echo 'no Threads line')"
