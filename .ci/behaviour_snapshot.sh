#!/usr/bin/env bash
# What a user can see of a small sweep, written to OUT_DIR so that two commits can be diffed
# byte for byte (`diff -r A B`): a refactor that claims "behaviour unchanged" runs this before
# and after.
#   .ci/behaviour_snapshot.sh OUT_DIR     (with the project's venv active; ~3 min on 2 cores)
# OUT_DIR/commands.txt   every job's command (all algorithms, three offline datasets, dummy launcher)
# OUT_DIR/hashes.txt     the job directories those commands name
# OUT_DIR/records.jsonl  a trained sweep's records, wall-clock and memory keys dropped
# OUT_DIR/speed_records.jsonl  the args of a sweep with speed options, in records' order
# OUT_DIR/tables.*       collect_results in every format; status.txt `sweep status`
set -euo pipefail
out=${1:?give an output directory}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export DOMAINBED_THREADS=${DOMAINBED_THREADS:-1}

python -m domainbed.scripts.sweep launch --datasets RotatedMNIST5k ColoredMNIST5k DigitsDG5k \
    --data_dir offline --output_dir "$work/dummy" --command_launcher dummy --n_hparams 2 \
    --n_trials 2 --skip_confirmation 2>&1 | sed "s#$work#WORK#g" | sort > "$out/commands.txt"
ls "$work/dummy" | sort > "$out/hashes.txt"

common=(--datasets ColoredMNIST5k --algorithms ERM Mixup FGMix --data_dir offline
        --output_dir "$work/sweep" --n_hparams 2 --n_trials 1 --steps 6 --single_test_envs)
python -m domainbed.scripts.sweep launch "${common[@]}" --command_launcher local \
    --skip_confirmation > /dev/null 2>&1
python -m domainbed.scripts.sweep status "${common[@]}" 2>&1 | sed "s#$work#WORK#g" > "$out/status.txt"
python - "$work" > "$out/records.jsonl" <<'PY'
import json, pathlib, sys
dropped = {"step_time", "mem_gb", "elapsed", "eval_time"}
for path in sorted(pathlib.Path(sys.argv[1], "sweep").glob("*/results.jsonl")):
    for line in path.read_text().replace(sys.argv[1], "WORK").splitlines():
        record = {k: v for k, v in json.loads(line).items() if k not in dropped}
        print(path.parent.name, json.dumps(record, sort_keys=True))
PY
# The speed options reach records as args (in the order a record writes them: not sorted).
python -m domainbed.scripts.sweep launch --datasets ColoredMNIST5k --algorithms ERM \
    --data_dir offline --output_dir "$work/speed" --n_hparams 1 --n_trials 1 --steps 2 \
    --single_test_envs --precision bf16 --memory_format channels_last --metrics all \
    --command_launcher local --skip_confirmation > /dev/null 2>&1
python - "$work" > "$out/speed_records.jsonl" <<'PY'
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1], "speed").glob("*/results.jsonl")):
    for line in path.read_text().replace(sys.argv[1], "WORK").splitlines():
        record = json.loads(line)
        print(path.parent.name, json.dumps(record["args"]), json.dumps(sorted(record)))
PY
for format in text latex markdown csv json; do
    python -m domainbed.scripts.collect_results --input_dir "$work/sweep" --format "$format" \
        2>&1 | sed "s#$work#WORK#g" > "$out/tables.$format"
done
echo "wrote $out ($(wc -l < "$out/commands.txt") commands, $(wc -l < "$out/records.jsonl") records)"
