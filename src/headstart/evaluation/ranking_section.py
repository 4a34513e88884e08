"""The comparison report's Ranking section, built from ``ranking.json`` in the folder.

``headstart rank`` predicts, from features alone, which backbone, input size and layer
set will do best; ``compare`` trains. Where both looked at the same candidate, the
section sets the prediction beside the measurement, so a reader sees how far to trust
the ranking on this data. The ranking arrives as the plain JSON ``Ranking.to_dict()``
writes (this layer sits below ``headstart.rank`` and does not import it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["RANKING_FILE", "RANKING_PLOT", "load_ranking", "ranking_lines"]

RANKING_FILE = "ranking.json"
RANKING_PLOT = "ranking.png"
TOP = 8  # rows of the ranked table in the report; ranking.json has them all


def load_ranking(folder: Path) -> dict[str, Any] | None:
    """The folder's ranking.json, or None when there is none (or it cannot be read)."""
    path = Path(folder) / RANKING_FILE
    if not path.is_file():
        return None
    try:
        ranking = json.loads(path.read_text())
    except ValueError:
        return None
    return ranking if isinstance(ranking, dict) and "scores" in ranking else None


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def measured_run(candidate: dict[str, Any], ranking: dict[str, Any], runs: list[dict[str, Any]]):
    """The comparison run that trained exactly what ``candidate`` predicts: feature
    extraction with its backbone, input size and layers, on the draw the ranking scored
    (same labels per class and seed); None when compare trained no such model."""
    draw = ranking.get("draw") or {}
    for run in runs:
        if (
            run.get("status") == "ok"
            and run.get("strategy") == "feature-extraction"
            and run.get("backbone") == candidate["backbone"]
            and run.get("image_size") == candidate["image_size"]
            and tuple(run.get("layers") or ()) == tuple(candidate["layers"])
            and str(run.get("labels_per_class")) == str(draw.get("labels_per_class"))
            and run.get("seed") == draw.get("seed")
        ):
            return run
    return None


def ranking_lines(ranking: dict[str, Any], runs: list[dict[str, Any]], plot: bool) -> list[str]:
    """The section's Markdown lines: the ranked table (top ``TOP``), why the first leads,
    the accuracy-against-latency plot, and predicted beside measured accuracy."""
    scored = [s for s in ranking["scores"] if s.get("error") is None]
    failed = [s for s in ranking["scores"] if s.get("error") is not None]
    front = set(ranking.get("pareto", []))
    draw = ranking.get("draw") or {}
    if not draw:
        where = ""
    elif str(draw["labels_per_class"]) == "all":
        where = f" (all of them, seed {draw['seed']}'s split: the largest draw compare trained on)"
    else:
        where = (
            f" ({draw['labels_per_class']} per class drawn with seed {draw['seed']}: the "
            "largest draw compare trained on)"
        )
    lines = [
        "## Ranking",
        "",
        f"`headstart rank` scored {len(ranking['scores'])} candidates on {ranking['images']} "
        f"training images{where}, without training them; the test set was not looked at. "
        "Predicted accuracy is a cross-validated linear probe on the training images; "
        "measured is the test accuracy of the feature-extraction run this comparison "
        "trained with the same backbone, input size and layers on the same draw (– where "
        "it trained none).",
        "",
    ]
    if ranking.get("why_best"):
        lines += [f"Ranked first: {scored[0]['candidate']['name']}, for {ranking['why_best']}.", ""]
    lines += [
        "| # | candidate | score | predicted accuracy | measured accuracy | LogME "
        "| batch-1 latency (ms) | Pareto front |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, s in enumerate(scored[:TOP], start=1):
        run = measured_run(s["candidate"], ranking, runs)
        latency = s.get("latency_ms")
        lines.append(
            f"| {i} | {s['candidate']['name']} | {s['score']:+.2f} | "
            f"{_pct(s['predicted_accuracy'])} | {_pct(run['accuracy'] if run else None)} | "
            f"{s['logme']:.3f} | {'–' if latency is None else f'{latency:.1f}'} | "
            f"{'yes' if s['candidate']['name'] in front else ''} |"
        )
    lines.append("")
    if len(scored) > TOP:
        more = len(scored) - TOP
        lines += [f"{more} more candidate{' is' if more == 1 else 's are'} in {RANKING_FILE}.", ""]
    for s in failed:
        lines.append(f"- Not scored: {s['candidate']['name']}: {s['error']}")
    if failed:
        lines.append("")
    lines += _agreement(scored, ranking, runs)
    if plot:
        lines += [f"![Candidates: predicted accuracy against latency]({RANKING_PLOT})", ""]
    return lines


def _agreement(
    scored: list[dict[str, Any]], ranking: dict[str, Any], runs: list[dict[str, Any]]
) -> list[str]:
    """Whether the candidate predicted best is also the best measured, among those
    compare trained (nothing is claimed when it trained fewer than two)."""
    pairs = [(s, run) for s in scored if (run := measured_run(s["candidate"], ranking, runs))]
    if len(pairs) < 2:
        return []
    first, first_run = pairs[0]  # the ranking's order: the one it would pick
    top = max(run["accuracy"] for _, run in pairs)
    best = [s["candidate"]["name"] for s, run in pairs if run["accuracy"] == top]
    intro = f"Of the {len(pairs)} ranked candidates compare trained, "
    if first_run["accuracy"] == top:
        text = f"{first['candidate']['name']}, ranked highest among them, also measured best"
        if len(best) > 1:
            text += f" (tied with {len(best) - 1} other{'s' if len(best) > 2 else ''})"
        text += f": {_pct(top)} on the test set."
    else:
        text = (
            f"{first['candidate']['name']} ranked highest among them but measured "
            f"{_pct(first_run['accuracy'])} on the test set, behind {best[0]} at {_pct(top)}."
        )
    return [intro + text, ""]
