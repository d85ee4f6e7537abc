"""Part 2 of bench/trainer_gpu.sh: the product's own `train_run` (services/fine_tuning/training/loop.py) on
CUDA, end to end — bf16-autocast forward, loss, backward, AdamW, held-out evaluation and the best-checkpoint
restore — with and without an `ItemPrefixCache`, on synthetic data; prints training sessions/s.

Model: the all-MiniLM-L6-v2 architecture (BertModel, 6 layers, hidden 384) from its config with random
weights, saved with a BertTokenizerFast over a generated vocabulary into a temporary folder (outside the
repository) and loaded as `SentenceTransformer(folder)` (mean pooling), wrapped in the product's
`TextToTextModel(max_seq_length=128)` and moved with `.to(training_device())`, as services/trainer/runner.py
does. No download and no weights needed: speed does not depend on the weights.
Data: LOOP_ITEMS items of LOOP_ITEM_WORDS (120) random vocabulary words each (one token per word, so 122-token
items); LOOP_SESSIONS training examples (`ClickExample`: a query of 8 words, LOOP_QUERY_FROM_ITEM (4) of them
from its clicked item and the rest random, the clicked item, 2 random hard negatives, weight 1 to 3); LOOP_TEST
held-out sessions (one click each, 4 more shown results, 1 in 10 irrelevant) in a `HeldOutQueries`. The task
is learnable but not solved by the random model (on the CPU, 1024 sessions and 512 items: loss 4.97 -> 4.69,
nDCG@10 0.10 -> 0.15, best checkpoint at the last step, not the start). LOOP_LR (1e-4) is the learning rate
and LOOP_INIT_RANGE (0.02, BERT's) the random weights' init std. Settings: FineTuningSettings(num_epochs=1,
batch_size=64, max_seq_length=128, test_each_n_sessions=0.5), so each run evaluates 3 times (start, half, end).
Per run (LOOP_RUNS, "FIXED:cache|nocache" items): a deepcopy of the start model, fix_layers, the item cache
built as services/fine_tuning/training/builder.py builds it (only when `matches_sentence_transformers` holds,
as there), then `train_run`. A warm-up `train_run` on LOOP_WARMUP examples comes first (CUDA/cuBLAS start-up).

Reported per run: sessions/s by train_run's own timer (RunResult.train_sessions_per_s) and by the wall clock
(train_run's wall time minus its held-out evaluations, GPU synchronised), steps, best step, start and best
nDCG@10, and a check that the restored model scores what `best` says.

Run:   bash bench/trainer_gpu.sh (PART=2 for this part only), or python bench/trainer_gpu_loop.py
Smoke: LOOP_SESSIONS=128 LOOP_ITEMS=96 LOOP_TEST=24 LOOP_WARMUP=64 .venv/bin/python bench/trainer_gpu_loop.py
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import platform
import random
import string
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Import only the training modules the loop needs. `import services.fine_tuning.training.loop` would first run
# services/fine_tuning/training/__init__.py, which imports the builder and the experiments manager and with
# them optuna, mlflow and structlog: the GPU machine has none of those, and the loop needs none of them. So
# the package is registered in sys.modules as a module made from its spec but never executed: Python then
# finds its submodules through its __path__ (the folder) without running that __init__.

_TRAINING = "services.fine_tuning.training"
_folder = ROOT / "services" / "fine_tuning" / "training"
_spec = importlib.util.spec_from_file_location(_TRAINING, _folder / "__init__.py",
                                               submodule_search_locations=[str(_folder)])
assert _spec is not None
sys.modules[_TRAINING] = importlib.util.module_from_spec(_spec)  # __init__.py deliberately not executed

# services/fine_tuning/training/models.py imports Router from sentence-transformers 6's module path; it is used
# only by the CLIP model, not here. On an older sentence-transformers (5.x keeps Router in .models) the bench
# aliases that path so the text-to-text path can still be measured, and says so in its output.
ST_SHIM = ""
try:
    import sentence_transformers.sentence_transformer.modules  # noqa: F401
except ModuleNotFoundError:
    import types

    import sentence_transformers.models as _st_models

    _shim = types.ModuleType("sentence_transformers.sentence_transformer.modules")
    _shim.Router = getattr(_st_models, "Router", None)  # type: ignore[attr-defined]
    _parent = "sentence_transformers.sentence_transformer"
    sys.modules[_parent] = types.ModuleType(_parent)
    sys.modules["sentence_transformers.sentence_transformer.modules"] = _shim
    ST_SHIM = " (bench shim: sentence_transformers.sentence_transformer.modules aliased to .models)"

from sentence_transformers import SentenceTransformer  # noqa: E402
from transformers import BertConfig, BertModel, BertTokenizerFast  # noqa: E402
from transformers import logging as transformers_logging  # noqa: E402

from services.fine_tuning.training.evaluation import HeldOutQueries, HeldOutScores  # noqa: E402
from services.fine_tuning.training.examples import ClickExample  # noqa: E402
from services.fine_tuning.training.loop import train_run  # noqa: E402
from services.fine_tuning.training.models import ItemPrefixCache, TextToTextModel, training_device  # noqa: E402
from services.fine_tuning.training.settings import FineTuningParams, FineTuningSettings  # noqa: E402

SESSIONS = int(os.environ.get("LOOP_SESSIONS", "4096"))
ITEMS = int(os.environ.get("LOOP_ITEMS", "4096"))
TEST = int(os.environ.get("LOOP_TEST", "256"))
WARMUP = int(os.environ.get("LOOP_WARMUP", "256"))
RUNS = [(int(fixed), kind == "cache") for fixed, kind in
        (run.split(":") for run in os.environ.get("LOOP_RUNS", "3:cache 3:nocache 0:nocache").split())]
ITEM_WORDS, VOCAB_WORDS = int(os.environ.get("LOOP_ITEM_WORDS", "120")), 4000
LR = float(os.environ.get("LOOP_LR", "1e-4"))
INIT_RANGE = float(os.environ.get("LOOP_INIT_RANGE", "0.02"))
QUERY_FROM_ITEM = int(os.environ.get("LOOP_QUERY_FROM_ITEM", "4"))  # of its 8 words; the rest random


@dataclass(frozen=True)
class Query:
    text: str

    def group_key(self) -> str:
        return self.text


@dataclass(frozen=True)
class Result:
    item_id: str
    is_click: bool
    position: int
    event_weight: float = 1.0


@dataclass(frozen=True)
class Session:
    query: Query
    results: tuple[Result, ...]
    is_irrelevant: bool = False


def start_model(folder: Path, device: torch.device) -> tuple[TextToTextModel, list[str]]:
    """all-MiniLM-L6-v2's architecture with random weights and a generated-vocabulary tokenizer."""
    rng = random.Random(1)
    words = sorted({"".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 8))) for _ in range(VOCAB_WORDS)})
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    # from_pretrained reads vocab.txt on transformers 4 and 5 alike (5 ignores a vocab_file= argument, which
    # would leave every word [UNK] and every text the same embedding).
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True, model_max_length=512)
    if tokenizer.unk_token_id in tokenizer(" ".join(words[:50]))["input_ids"]:
        raise RuntimeError("the generated tokenizer maps vocabulary words to [UNK]")
    tokenizer.save_pretrained(folder)
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2,
                        hidden_act="gelu", layer_norm_eps=1e-12, initializer_range=INIT_RANGE)
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    # A plain transformers folder: sentence-transformers adds mean pooling, as for MiniLM.
    model = SentenceTransformer(str(folder), device="cpu")
    return TextToTextModel(model, max_seq_length=128).to(device), words


def synthetic_data(words: list[str]) -> tuple[dict[str, str], list[ClickExample], list[Session]]:
    rng = random.Random(2)
    item_words = {f"item{i}": rng.choices(words, k=ITEM_WORDS) for i in range(ITEMS)}
    items = {item_id: " ".join(ws) for item_id, ws in item_words.items()}
    ids = list(items)

    def query_for(item_id: str) -> str:
        return " ".join(rng.sample(item_words[item_id], QUERY_FROM_ITEM) + rng.choices(words, k=8 - QUERY_FROM_ITEM))

    examples = []
    for _ in range(SESSIONS):
        positive = rng.choice(ids)
        negatives = tuple(i for i in rng.sample(ids, 3) if i != positive)[:2]
        examples.append(ClickExample(query_for(positive), positive, negatives, frozenset({positive}),
                                     float(rng.randint(1, 3))))
    test = []
    for n in range(TEST):
        shown = rng.sample(ids, 5)
        irrelevant = n % 10 == 9
        results = tuple(Result(item_id, not irrelevant and k == 0, k + 1) for k, item_id in enumerate(shown))
        test.append(Session(Query(query_for(shown[0])), results, irrelevant))
    return items, examples, test


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    device = training_device()
    cuda = device.type == "cuda"
    name = (torch.cuda.get_device_name() if cuda
            else f"cpu {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)")
    import sentence_transformers
    import transformers

    print(f"train_run: device {name}; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"sentence-transformers {sentence_transformers.__version__}{ST_SHIM}; {SESSIONS} sessions, {ITEMS} items, "
          f"{TEST} held-out sessions, bf16 autocast {'on' if cuda else 'off'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="trainer_gpu_minilm_") as tmp:
        began = time.perf_counter()
        model, words = start_model(Path(tmp), device)
        items, examples, test_sessions = synthetic_data(words)
        item_ids = list(items)
        held_out = HeldOutQueries(test_sessions, item_ids, retriever=lambda q: q.text)
        print(f"model and data ready in {time.perf_counter() - began:.1f} s; model on "
              f"{next(model.parameters()).device}; {len(held_out)} judged held-out queries", flush=True)

        # The builder uses the item cache only when the layer-split forward matches sentence-transformers'.
        cache_ok = model.matches_sentence_transformers([items[i] for i in item_ids[:2]])
        print(f"matches_sentence_transformers on {device.type}: {cache_ok}", flush=True)
        settings = FineTuningSettings(num_epochs=1, batch_size=64, max_seq_length=128, test_each_n_sessions=0.5)

        # Counts the held-out evaluations' time inside train_run (score returns numpy arrays: synchronised).
        eval_seconds = [0.0]
        score = held_out.score

        def timed_score(*args: object, **kwargs: object) -> HeldOutScores:
            start = time.perf_counter()
            try:
                return score(*args, **kwargs)
            finally:
                eval_seconds[0] += time.perf_counter() - start

        held_out.score = timed_score  # type: ignore[method-assign]

        def one_run(fixed: int, use_cache: bool, run_examples: list[ClickExample]) -> dict[str, object]:
            params = FineTuningParams(num_fixed_layers=fixed, query_lr=LR, items_lr=LR, query_weight_decay=0.0,
                                      items_weight_decay=0.0, margin=0.05)
            run_model = copy.deepcopy(model)
            run_model.fix_layers(fixed)
            cache, cache_seconds = None, 0.0
            if use_cache and cache_ok:
                sync(device)
                start = time.perf_counter()
                cache = ItemPrefixCache(run_model, item_ids, [items[i] for i in item_ids])
                sync(device)
                cache_seconds = time.perf_counter() - start
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            eval_seconds[0] = 0.0
            sync(device)
            start = time.perf_counter()
            result = train_run(run_model, run_examples, len(run_examples), held_out, settings, params,
                               item_inputs=lambda ids: [items[i] for i in ids], cache=cache)
            sync(device)
            wall = time.perf_counter() - start
            train_wall = wall - eval_seconds[0]
            epochs = result.steps / math.ceil(len(run_examples) / settings.batch_size)
            # The model train_run left behind must be its best checkpoint: it scores what `best` says.
            with torch.no_grad():
                again = held_out.score(run_model.encode_queries, (lambda ids: cache.encode(run_model, ids))
                                       if cache is not None else
                                       (lambda ids: run_model.encode_items([items[i] for i in ids])))
            losses = [m["train_loss"] for _, m in result.history if "train_loss" in m]
            devices = sorted({str(p.device) for p in run_model.parameters()})
            return {
                "num_fixed_layers": fixed, "item_cache": cache is not None, "cache_requested": use_cache,
                "sessions_per_s_train_run": round(result.train_sessions_per_s, 1),
                "sessions_per_s_wall": round(len(run_examples) * epochs / train_wall, 1) if train_wall > 0 else None,
                "train_wall_s": round(train_wall, 2), "eval_s": round(eval_seconds[0], 2),
                "cache_build_s": round(cache_seconds, 2), "steps": result.steps, "best_step": result.best_step,
                "stopped_early": result.stopped_early, "train_losses": [round(x, 4) for x in losses],
                "ndcg10_start": round(result.initial.ndcg_at_10, 4), "ndcg10_best": round(result.best.ndcg_at_10, 4),
                "ndcg10_restored": round(again.ndcg_at_10, 4),
                "restored_is_best": abs(again.ndcg_at_10 - result.best.ndcg_at_10) < 1e-3,
                "losses_finite": all(math.isfinite(x) for x in losses), "param_devices": devices,
                "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
            }

        if WARMUP:
            start = time.perf_counter()
            one_run(RUNS[0][0], RUNS[0][1], examples[:WARMUP])
            print(f"warm-up train_run ({WARMUP} sessions) in {time.perf_counter() - start:.1f} s", flush=True)
        results = []
        for fixed, use_cache in RUNS:
            result = one_run(fixed, use_cache, examples)
            results.append(result)
            cache_note = ("with item cache" if result["item_cache"] else
                          "no item cache (matches_sentence_transformers failed)" if use_cache else "no item cache")
            print(f"fixed {fixed}, {cache_note:16s}: {result['sessions_per_s_train_run']:8.1f} sessions/s "
                  f"(train_run timer), {result['sessions_per_s_wall']:8.1f} sessions/s (wall); "
                  f"{result['steps']} steps in {result['train_wall_s']} s + {result['eval_s']} s held-out eval"
                  f" + {result['cache_build_s']} s cache build; nDCG@10 {result['ndcg10_start']} -> best "
                  f"{result['ndcg10_best']} at step {result['best_step']}, restored {result['ndcg10_restored']}; "
                  f"losses {result['train_losses']}; peak "
                  f"{str(result['peak_gpu_mib']) + ' MiB' if cuda else 'n/a'}", flush=True)
    problems = [f"fixed {r['num_fixed_layers']}: {what}" for r in results for what, bad in (
        ("restored model does not score as the best checkpoint", not r["restored_is_best"]),
        ("non-finite training loss", not r["losses_finite"]),
        ("parameters off the training device", r["param_devices"] != [str(next(model.parameters()).device)]),
        ("item cache requested but not used", r["cache_requested"] and not r["item_cache"])) if bad]
    print(json.dumps({"bench": "trainer_gpu_loop", "device": name, "torch": torch.__version__,
                      "transformers": transformers.__version__,
                      "sentence_transformers": sentence_transformers.__version__, "bf16": cuda,
                      "sessions": SESSIONS, "items": ITEMS, "held_out_sessions": TEST, "batch_size": 64,
                      "max_seq_length": 128, "matches_sentence_transformers": cache_ok, "results": results,
                      "problems": problems}))
    if problems:
        print("PROBLEMS: " + "; ".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
