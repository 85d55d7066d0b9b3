#!/usr/bin/env bash
# Text2SQL on Qwen2.5-Coder-0.5B-Instruct (llama.cpp), the first 100 shipped questions.
#
# Usage: bash benchmarks/bench_text2sql_qwen.sh [CONFIG ...]
#   CONFIG: greedy-schema greedy-none bon8-schema iad-schema bon8-none iad-none (default: the first four)
#
# Each configuration is one `agentloop run` into benchmarks/runs/qwen05/CONFIG; a run dir
# that exists is resumed (--resume), never restarted. Then `agentloop report --json` of
# each, and `agentloop report A --compare B --json` for the paired differences, go to
# benchmarks/results/text2sql_qwen/. The model must be pulled first:
#   agentloop models pull qwen2.5-coder-0.5b
set -euo pipefail
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1
BACKEND=${BACKEND:-llamacpp:qwen2.5-coder-0.5b}
RUNS=${RUNS:-benchmarks/runs/qwen05}
OUT=${OUT:-benchmarks/results/text2sql_qwen}
mkdir -p "$RUNS" "$OUT"
configs=("$@")
[ ${#configs[@]} -eq 0 ] && configs=(greedy-schema greedy-none bon8-schema iad-schema)

flags() {
  case "$1" in
    greedy-*) echo "--graph greedy" ;;
    bon8-*) echo "--graph best_of_n --n 8" ;;
    iad-*) echo "--graph iad --n 4 --rounds 2 --threshold 1.0 --patience 2" ;;
  esac
}

for c in "${configs[@]}"; do
  constrain=${c##*-}
  dir="$RUNS/$c"
  cmd=(python -m agentloop run text2sql --backend "$BACKEND" $(flags "$c") --constrain "$constrain" --limit 100)
  if [ -e "$dir/run.sqlite" ]; then cmd+=(--resume --run-dir "$dir"); else cmd+=(--run-dir "$dir"); fi
  echo "$(date -u +%H:%M:%S) ${cmd[*]}"
  /usr/bin/time -v "${cmd[@]}" --json > "$OUT/$c.summary.json" 2> "$OUT/$c.time.txt" || { tail -5 "$OUT/$c.time.txt"; exit 1; }
  grep -E "Elapsed|Maximum resident" "$OUT/$c.time.txt"
  python -m agentloop report "$dir" --json > "$OUT/$c.report.json"
done
