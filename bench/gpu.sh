#!/usr/bin/env bash
# Everything a lent GPU should run, in one call: a lease is paid by the second and a fresh machine takes
# minutes to start, so the checks and benchmarks that need CUDA go together.
#
#   bash bench/gpu.sh [tests] [kernels|kernels-quick] [train] [model]   (default: tests kernels-quick)
#
# Logs and result tables go to $OUT (the device tool brings that folder back), or /tmp/minagent-gpu.
# Each part has its own time limit so one hang cannot eat the lease. Uses the machine's own torch/triton/
# transformers/peft (nothing is installed: such machines usually reach no package index).
set -u
OUT=${OUT:-/tmp/minagent-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-python3}
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(tests kernels-quick)

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  $PY -c "import torch, triton, transformers; print('torch', torch.__version__, '| triton', triton.__version__,
'| transformers', transformers.__version__, '|', torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/env.txt"

QWEN=/tmp/minagent-qwen-0.5b-random  # random weights in Qwen2.5-0.5B's shapes (no hub here), made once
make_qwen() {
  [ -f "$QWEN/config.json" ] || $PY - "$QWEN" <<'EOF'
import sys, torch, transformers
cfg = transformers.Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                               num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                               rope_theta=1e6, tie_word_embeddings=True, torch_dtype="bfloat16")
torch.manual_seed(0)
transformers.Qwen2ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(sys.argv[1])
EOF
}

for part in "${parts[@]}"; do
  case $part in
    tests)
      timeout 330 $PY -m pytest -q -p no:cacheprovider tests/test_kernels_gpu.py tests/test_kernels_triton.py \
        tests/test_kernels_model.py 2>&1 | tee "$OUT/tests.log" ;;
    kernels)
      timeout 560 $PY bench/kernels.py --results "$OUT/kernels.md" 2>&1 | tee "$OUT/kernels.log" ;;
    kernels-quick)
      timeout 220 $PY bench/kernels.py --quick --results "$OUT/kernels.md" 2>&1 | tee "$OUT/kernels.log" ;;
    train)  # fine-tuning step vs transformers + peft on a random Qwen2.5-0.5B-shaped checkpoint
      make_qwen && timeout 200 $PY bench/train.py --model "$QWEN" ${TRAIN_ARGS:---batch 4 --seq 1024 --steps 6} \
        2>&1 | tee "$OUT/train.log" ;;
    model)  # prefill and decode (batch 1 and 8) vs transformers, same checkpoint, bf16
      make_qwen && timeout 200 $PY bench/model.py --model "$QWEN" --device cuda --dtype bfloat16 --repeats 3 \
        2>&1 | tee "$OUT/model.log" ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
