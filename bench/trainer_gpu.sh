#!/usr/bin/env bash
# Trainer speed on a GPU, in two parts.
#
# Part 1: training sessions/s of one fine-tuning step shaped like services/fine_tuning/training/loop.py with the
# default ClickContrastiveLoss, for batch sizes 1, 8, 32, 128 (a re-implementation, needing only torch and
# transformers).
# Model: the all-MiniLM-L6-v2 architecture (BertModel, 6 layers, hidden 384) built from its config with
# random weights (no download needed; speed does not depend on the weights), mean pooling + L2
# normalisation as sentence-transformers does, one model for queries and items, embeddings frozen as
# the trainer's fix_layers does (FIXED_LAYERS more layers frozen, default 0).
# Step: B sessions, each a query (12 random tokens) and a clicked item plus HARD_NEGATIVES shown-but-not-
# clicked items (128 tokens each, max_seq_length 128); queries encode to (B, D), the unique candidates to
# (B*(1+H), D); InfoNCE over scale 20 * query.candidate with in-batch negatives, weighted mean
# cross-entropy; one forward, one backward, AdamW, loss.item() per step. bf16 autocast on CUDA.
# Falls back to CPU when there is no CUDA.
#
# Part 2 (bench/trainer_gpu_loop.py): the product's REAL train_run (services/fine_tuning/training/loop.py) on
# CUDA end to end (bf16-autocast forward, loss, backward, AdamW, held-out evaluation, best-checkpoint restore)
# on synthetic data with the same random-weight MiniLM in the product's TextToTextModel, batch size 64: one
# run with 3 fixed layers and an ItemPrefixCache, one with 3 fixed layers without it, one with 0 fixed layers;
# prints sessions/s by train_run's own timer and by the wall clock. Needs torch, transformers (>= 5),
# sentence-transformers (>= 6), numpy, PIL and the repository's services/ (not mlflow, optuna, structlog).
# Exits non-zero when a check fails (restored model not the best checkpoint, non-finite loss, ...).
#
# Run:    bash bench/trainer_gpu.sh                     (device tool: run command="bash bench/trainer_gpu.sh")
# Smoke:  PYTHON=.venv/bin/python STEPS=1 WARMUP=1 BATCH_SIZES="1 2" LOOP_SESSIONS=128 LOOP_ITEMS=96 \
#           LOOP_TEST=24 LOOP_WARMUP=0 LOOP_RUNS="3:cache 0:nocache" bash bench/trainer_gpu.sh
# Env:    PART ("1 2": which parts run), PYTHON (python3);
#         part 1: STEPS (20 timed steps), WARMUP (3), BATCH_SIZES ("1 8 32 128"),
#           HARD_NEGATIVES (2, FineTuningSettings' default), FIXED_LAYERS (0);
#         part 2: LOOP_SESSIONS (4096 training sessions), LOOP_ITEMS (4096), LOOP_TEST (256 held-out sessions),
#           LOOP_WARMUP (256 sessions of a first, untimed train_run; 0 for none),
#           LOOP_RUNS ("3:cache 3:nocache 0:nocache": fixed layers and item cache per run), LOOP_ITEM_WORDS (120),
#           LOOP_QUERY_FROM_ITEM (4 of a query's 8 words), LOOP_LR (1e-4), LOOP_INIT_RANGE (0.02).
# Output: part 1: one line per batch size, then one JSON line with every number; part 2: one line per run,
#         then one JSON line with every number.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
PART="${PART:-1 2}"
part1=0
part2=0
if [[ " $PART " == *" 1 "* ]]; then
echo "=== part 1: one training step, re-implemented (batch sizes ${BATCH_SIZES:-1 8 32 128}) ==="
"$PYTHON" - <<'PY' || part1=$?
import json
import os
import platform
import time

import torch
import torch.nn.functional as F  # noqa: N812 - the torch convention
from transformers import BertConfig, BertModel

STEPS = int(os.environ.get("STEPS", "20"))
WARMUP = int(os.environ.get("WARMUP", "3"))
BATCH_SIZES = [int(b) for b in os.environ.get("BATCH_SIZES", "1 8 32 128").split()]
HARD_NEGATIVES = int(os.environ.get("HARD_NEGATIVES", "2"))
FIXED_LAYERS = int(os.environ.get("FIXED_LAYERS", "0"))
QUERY_TOKENS, ITEM_TOKENS, SCALE, LR = 12, 128, 20.0, 2e-5

cuda = torch.cuda.is_available()
device = torch.device("cuda" if cuda else "cpu")
cpu_name = f"cpu {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
device_name = torch.cuda.get_device_name() if cuda else cpu_name
config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                    intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2,
                    hidden_act="gelu", layer_norm_eps=1e-12)


def encode(model: BertModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean pooling over real tokens, then L2 normalisation (sentence-transformers' MiniLM head)."""
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # (N, L, D)
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9), dim=-1)


def texts(count: int, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1000, config.vocab_size, (count, tokens), device=device)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    return ids, torch.ones_like(ids)


def measure(batch: int) -> dict[str, float | int | None]:
    torch.manual_seed(0)
    # Dropout off (eval mode), as the trainer trains by default (FineTuningSettings.dropout).
    model = BertModel(config, add_pooling_layer=False).to(device).eval()
    for module in [model.embeddings, *model.encoder.layer[:FIXED_LAYERS]]:
        module.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    candidates = batch * (1 + HARD_NEGATIVES)  # positives first, then every row's hard negatives
    targets = torch.arange(batch, device=device)
    sample_weights = torch.ones(batch, device=device)  # click confidences
    excluded = torch.zeros(batch, candidates, dtype=torch.bool, device=device)
    query_inputs, item_inputs = texts(batch, QUERY_TOKENS), texts(candidates, ITEM_TOKENS)

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            queries = encode(model, *query_inputs)  # (B, D)
            items = encode(model, *item_inputs)  # (B*(1+H), D)
            logits = (SCALE * queries.float() @ items.float().T).masked_fill(excluded, float("-inf"))
            losses = F.cross_entropy(logits, targets, reduction="none")
            loss = (losses * sample_weights).sum() / sample_weights.sum().clamp_min(1e-12)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(WARMUP):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    for _ in range(STEPS):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    return {"batch_size": batch, "sessions_per_s": round(batch * STEPS / seconds, 1),
            "ms_per_step": round(1000 * seconds / STEPS, 2),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None}


print(f"device {device_name}; torch {torch.__version__}; {STEPS} timed steps after {WARMUP} warm-up; "
      f"{HARD_NEGATIVES} hard negatives, {QUERY_TOKENS}-token queries, {ITEM_TOKENS}-token items, "
      f"{FIXED_LAYERS} fixed layers, bf16 autocast {'on' if cuda else 'off'}", flush=True)
results = []
for batch in BATCH_SIZES:
    try:
        result = measure(batch)
    except torch.cuda.OutOfMemoryError:
        result = {"batch_size": batch, "error": "out of memory"}
    finally:
        if cuda:
            torch.cuda.empty_cache()
    results.append(result)
    if "error" in result:
        print(f"batch {batch:4d}  out of memory  {device_name}", flush=True)
        continue
    memory = f"{result['peak_gpu_mib']} MiB" if cuda else "n/a"
    print(f"batch {batch:4d}  {result['sessions_per_s']:9.1f} sessions/s  {result['ms_per_step']:8.2f} ms/step  "
          f"peak {memory}  {device_name}", flush=True)
print(json.dumps({"bench": "trainer_gpu", "device": device_name, "torch": torch.__version__, "steps": STEPS,
                  "warmup": WARMUP, "hard_negatives": HARD_NEGATIVES, "query_tokens": QUERY_TOKENS,
                  "item_tokens": ITEM_TOKENS, "fixed_layers": FIXED_LAYERS, "bf16": cuda, "results": results}))
PY
fi
if [[ " $PART " == *" 2 "* ]]; then
  echo "=== part 2: the product's train_run (bench/trainer_gpu_loop.py) ==="
  "$PYTHON" bench/trainer_gpu_loop.py || part2=$?
fi
echo "=== exit codes: part 1 $part1, part 2 $part2 ==="
exit $((part1 || part2))
