#!/usr/bin/env bash
# Peer environments for the TRL benchmarks, beside ours and never inside it:
#   benchmarks/.venv-trl      lit-rlhf + the latest TRL (DPO, reward, RLOO, GRPO)
#   benchmarks/.venv-trl-ppo  lit-rlhf + TRL 1.12.0, the last release that ships a PPO trainer
# Both use the same torch and transformers as the project, so only the trainer differs.
set -euo pipefail
cd "$(dirname "$0")/.."

make_venv() {
  local venv=$1 trl=$2
  if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "import trl, lit_rlhf" 2>/dev/null; then
    echo "$venv: ready ($("$venv/bin/python" -c 'import trl; print("trl", trl.__version__)'))"
    return
  fi
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -e . "trl==$trl" psutil
  echo "$venv: installed trl==$trl"
}

make_venv benchmarks/.venv-trl 1.16.0
make_venv benchmarks/.venv-trl-ppo 1.12.0
