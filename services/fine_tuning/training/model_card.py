"""The model card a saved model carries as its README.md: where the version came from (plugin, batch,
iteration, task, run), what trained it (parameters) and how it scored on the batch's held-out sessions
against the model it started from, and how to load it. Markdown, for people and for the MLflow UI."""

from __future__ import annotations

from typing import Any

from services.common.mlflow_models import iteration_experiment_name
from services.fine_tuning.context import PluginCall
from services.fine_tuning.training.evaluation import HeldOutScores


def _score_rows(before: HeldOutScores, after: HeldOutScores) -> list[str]:
    rows = [("nDCG@10", before.ndcg_at_10, after.ndcg_at_10), ("MRR@10", before.mrr_at_10, after.mrr_at_10)]
    rows += [(f"recall@{k}", before.recall_at.get(k, float("nan")), value)
             for k, value in sorted(after.recall_at.items())]
    return [f"| {name} | {start:.4f} | {this:.4f} | {this - start:+.4f} |" for name, start, this in rows]


def model_card(scope: PluginCall, run_id: str, model_config: dict[str, Any], params: dict[str, Any] | None = None,
               start: HeldOutScores | None = None, scores: HeldOutScores | None = None) -> str:
    """The card of the model of run `run_id`: the plugin's initial model when `params` is None, else a
    fine-tuned one with its parameters and (when given) its held-out `scores` against the `start` model's."""
    plugin = scope.plugin
    initial = params is None
    title = f"{plugin.name}: {'initial model' if initial else f'fine-tuned on {scope.batch_id}'}"
    lines = [f"# {title}", "",
             (f"The initial model of the Embedding Studio plugin {plugin.name!r} {plugin.version}: the model every "
              "fine-tuning of it starts from until a fine-tuned version beats it." if initial else
              f"Fine-tuned by the Embedding Studio plugin {plugin.name!r} {plugin.version} from the clicks of batch "
              f"{scope.batch_id}, starting from the plugin's best version when task {scope.task_id} began."),
             "", "| | |", "|---|---|", f"| plugin | {plugin.name} {plugin.version} |"]
    if not initial:
        lines += [f"| batch | {scope.batch_id} |", f"| task | {scope.task_id} |",
                  f"| iteration (MLflow experiment) | {iteration_experiment_name(plugin.name, scope.batch_id)} |"]
    lines.append(f"| MLflow run | {run_id} |")
    lines += [f"| model {key} | {value} |" for key, value in sorted(model_config.items())]
    if params:
        lines += ["", "## Parameters", "", "| parameter | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in sorted(params.items())]
    if start is not None and scores is not None:
        lines += ["", f"## Held-out scores ({scores.queries} queries of the batch's held-out sessions)", "",
                  "Clicked items are the relevant ones, read through the batch's click model; the registry "
                  "promotes this version only if its nDCG@10 beats the best version's on the same sessions.", "",
                  "| metric | start model | this model | change |", "|---|---|---|---|", *_score_rows(start, scores)]
    lines += ["", "## Loading", "", "```python", "from sentence_transformers import SentenceTransformer",
              "model = SentenceTransformer(\"<this folder>\")  # e.g. what `es model download` extracted",
              "# or, from MLflow (text models): mlflow.sentence_transformers.load_model("
              f"\"models:/{plugin.name}@champion\")", "```", ""]
    return "\n".join(lines)
