"""The comparison report: Markdown, a self-contained HTML page, PNG plots, a summary.

Everything here is built from ``results.json`` alone, so the numbers in the
report are the numbers in the file, and a report can be rebuilt at any time
(``build_report(folder)``).
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from headstart._internal.atomic import atomic_write
from headstart.evaluation.comparison import load_results, sizes_in_order, summarise
from headstart.evaluation.issues_section import label_issue_lines
from headstart.evaluation.plots import new_figure, save_confusion_matrix, save_figure
from headstart.evaluation.ranking_section import RANKING_PLOT, load_ranking, ranking_lines

__all__ = ["build_report", "summary_sentences"]

COLOURS = {
    "scratch": "#888888",
    "feature-extraction": "#1f77b4",
    "fine-tune": "#d62728",
    "semi-supervised": "#2ca02c",
}


# One line style per backbone when several are compared: colour says strategy, style
# says backbone, so both read off the same axes.
LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P")


def _size_label(k: str) -> str:
    return "all" if k == "all" else f"{k}"


def _backbones(items: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["backbone"] for r in items if r.get("backbone")))


def _label(item: dict[str, Any], several: bool) -> str:
    """A curve's or a row's name: the strategy, with its backbone when several compete."""
    return f"{item['strategy']} ({item['backbone']})" if several else item["strategy"]


def _plot_accuracy_vs_labels(rows: list[dict[str, Any]], path: Path) -> Path:
    figure, axes = new_figure(6.4, 4.2)
    sizes = sizes_in_order(r["labels_per_class"] for r in rows)
    positions = {k: i for i, k in enumerate(sizes)}
    backbones = _backbones(rows)
    several = len(backbones) > 1
    curves = dict.fromkeys((r["strategy"], r.get("backbone")) for r in rows)
    for strategy, backbone in curves:
        ok = [
            r
            for r in rows
            if (r["strategy"], r.get("backbone")) == (strategy, backbone)
            and r["accuracy_mean"] is not None
        ]
        ok.sort(key=lambda r: positions[str(r["labels_per_class"])])
        if not ok:
            continue
        x = [positions[str(r["labels_per_class"])] for r in ok]
        mean = [100 * r["accuracy_mean"] for r in ok]
        low = [100 * r["accuracy_min"] for r in ok]
        high = [100 * r["accuracy_max"] for r in ok]
        colour = COLOURS.get(strategy)
        which = backbones.index(backbone) if several else 0
        axes.plot(
            x, mean, marker=MARKERS[which % len(MARKERS)], label=_label(ok[0], several),
            color=colour, linestyle=LINE_STYLES[which % len(LINE_STYLES)],
        )  # fmt: skip
        axes.fill_between(x, low, high, alpha=0.2, color=colour)  # spread across seeds
    axes.set_xticks(range(len(sizes)), labels=[_size_label(k) for k in sizes])
    axes.set_xlabel("labelled training images per class")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("Accuracy against labels per class (band: min-max over seeds)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return save_figure(figure, path)


def _plot_accuracy_vs_time(runs: list[dict[str, Any]], path: Path) -> Path:
    figure, axes = new_figure(6.4, 4.2)
    backbones = _backbones(runs)
    several = len(backbones) > 1
    for strategy, backbone in dict.fromkeys((r["strategy"], r.get("backbone")) for r in runs):
        ok = [
            r
            for r in runs
            if (r["strategy"], r.get("backbone")) == (strategy, backbone)
            and r.get("status") == "ok"
        ]
        if not ok:
            continue
        which = backbones.index(backbone) if several else 0
        axes.scatter(
            [r["train_seconds"] for r in ok],
            [100 * r["accuracy"] for r in ok],
            label=_label(ok[0], several),
            color=COLOURS.get(strategy),
            marker=MARKERS[which % len(MARKERS)],
        )
        for r in ok:
            axes.annotate(
                f"k={r['labels_per_class']}",
                (r["train_seconds"], 100 * r["accuracy"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    axes.set_xscale("log")
    axes.set_xlabel("training wall time (s, log scale)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("Accuracy against training time")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return save_figure(figure, path)


def _best_run(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [r for r in runs if r.get("status") == "ok"]
    return max(ok, key=lambda r: (r["accuracy"], -r["train_seconds"])) if ok else None


def summary_sentences(results: dict[str, Any]) -> list[str]:
    """What the numbers say, in plain language, one sentence per data size."""
    rows = summarise(results)
    several = len(_backbones(rows)) > 1
    sentences = []
    for k in sizes_in_order(r["labels_per_class"] for r in rows):
        at_k = [
            r for r in rows if str(r["labels_per_class"]) == k and r["accuracy_mean"] is not None
        ]
        if not at_k:
            sentences.append(f"With {_size_label(k)} labels per class every run failed.")
            continue
        best = max(at_k, key=lambda r: r["accuracy_mean"])
        head = "With all training images" if k == "all" else f"With {k} labels per class"
        text = (
            f"{head}, {_label(best, several)} is best at {best['accuracy_mean']:.1%} "
            f"({best['train_seconds_mean']:.0f} s of training)"
        )
        scratch = next(
            (
                r
                for r in at_k
                if r["strategy"] == "scratch" and r.get("backbone") == best.get("backbone")
            ),
            None,
        )
        if scratch is not None and best["strategy"] != "scratch":
            gap = best["accuracy_mean"] - scratch["accuracy_mean"]
            ratio = scratch["train_seconds_mean"] / max(best["train_seconds_mean"], 1e-9)
            speed = (
                f"{ratio:.1f}x as much training time"
                if ratio >= 1
                else f"{1 / ratio:.1f}x less training time"
            )
            text += (
                f"; scratch reaches {scratch['accuracy_mean']:.1%}, "
                f"{100 * gap:.1f} points behind, with {speed}"
            )
        elif scratch is not None:
            text += "; training from scratch wins here: transfer does not pay at this size"
        others = [r for r in at_k if r is not best and r is not scratch]
        if not several:  # as before: scratch is named once, in its own clause
            others = [r for r in others if r["strategy"] != "scratch"]
        for other in others:
            text += (
                f"; {_label(other, several)} {other['accuracy_mean']:.1%} in "
                f"{other['train_seconds_mean']:.0f} s"
            )
        sentences.append(text + ".")
    failures = [r for r in results["runs"] if r.get("status") != "ok"]
    for run in failures:
        sentences.append(f"Run {run['id']} failed: {run.get('error', 'unknown error')}.")
    return sentences


def _held_out_sentence(runs: list[dict[str, Any]]) -> str:
    """What each strategy held out of the drawn images for early stopping, as recorded
    per run (results of older versions did not record it: then nothing is claimed)."""
    parts = []
    for strategy in dict.fromkeys(r["strategy"] for r in runs):
        mine = [r for r in runs if r["strategy"] == strategy and "held_out_images" in r]
        if not mine:
            continue
        held = [r for r in mine if r["held_out_images"]]
        sizes = sizes_in_order(r["labels_per_class"] for r in held)
        if not held:
            parts.append(f"{strategy} held none out")
            continue
        share = sum(r["held_out_images"] for r in held) / sum(r["train_images"] for r in held)
        where = "" if len(held) == len(mine) else f" at {', '.join(sizes)} labels per class"
        parts.append(f"{strategy} held {share:.0%} of them out for early stopping{where}")
    return f" Hold-out: {'; '.join(parts)}." if parts else ""


def _markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    """One row per (size, strategy), and per backbone when several were compared (then a
    backbone column follows the strategy's)."""
    backbones = _backbones(rows)
    several = len(backbones) > 1
    lines = [
        "| labels/class | strategy | "
        + ("backbone | " if several else "")
        + "balanced acc. | accuracy (mean, min–max) | train time (s) | trainable params | runs |",
        "| --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if several else ""),
    ]
    order = sizes_in_order(r["labels_per_class"] for r in rows)
    rows = sorted(
        rows,
        key=lambda r: (
            order.index(str(r["labels_per_class"])),
            r["strategy"],
            backbones.index(r["backbone"]) if several else 0,
        ),
    )
    for r in rows:
        name = f"{r['strategy']} | {r['backbone']}" if several else r["strategy"]
        if r["accuracy_mean"] is None:
            lines.append(f"| {r['labels_per_class']} | {name} | failed | – | – | – | {r['runs']} |")
            continue
        spread = (
            f" ({100 * r['accuracy_min']:.1f}–{100 * r['accuracy_max']:.1f})"
            if r["runs"] - r["failed"] > 1
            else ""
        )
        lines.append(
            f"| {r['labels_per_class']} | {name} | {100 * r['balanced_accuracy_mean']:.1f} % | "
            f"{100 * r['accuracy_mean']:.1f} %{spread} | "
            f"{r['train_seconds_mean']:.1f} | {r['trainable_parameters']:,} | "
            f"{r['runs'] - r['failed']}/{r['runs']} |"
        )
    return lines


def _backbone_sentence(settings: dict[str, Any]) -> str:
    names = settings.get("backbones") or [settings.get("backbone")]
    if len(names) == 1:
        return f"Backbone: {names[0]}"
    return f"Backbones (each with every strategy, on the same draws): {', '.join(names)}, each"


def build_report(folder: str | Path, title: str = "headstart comparison") -> dict[str, Path]:
    """Write report.md, report.html and the PNGs from the folder's results.json (and a
    Ranking section from its ranking.json, when there is one)."""
    folder = Path(folder)
    results = load_results(folder)
    runs = results.get("runs", [])
    rows = summarise(results)
    paths: dict[str, Path] = {}
    if any(r["accuracy_mean"] is not None for r in rows):
        paths["labels"] = _plot_accuracy_vs_labels(rows, folder / "accuracy_vs_labels.png")
        paths["time"] = _plot_accuracy_vs_time(runs, folder / "accuracy_vs_time.png")
    best = _best_run(runs)
    if best is not None:
        paths["confusion"] = save_confusion_matrix(
            best["confusion_matrix"],
            results["data"]["classes"],
            folder / "confusion_best.png",
            title=f"best: {best['id']} ({best['accuracy']:.1%})",
        )
    data = results.get("data", {})
    settings = results.get("settings", {})
    summary = summary_sentences(results)
    md = [f"# {title}", ""]
    if data.get("description") and data["description"] not in title:
        md.append(f"Data: {data['description']}.")
    md += [
        f"Training pool: {data.get('train_images')} images; test set: "
        f"{data.get('test_images')} images; {len(data.get('classes', []))} classes. "
        f"{_backbone_sentence(settings)} at {settings.get('image_size') or 'its own'} px. "
        f"Seeds: {settings.get('seeds')}. At each size every strategy drew from the same "
        f"images.{_held_out_sentence(runs)}"
        + (
            " semi-supervised also sees the pool's other images, without their labels "
            "(labels per class counts labelled images only)."
            if any(r.get("unlabelled_images") for r in results.get("runs", []))
            else ""
        ),
        "",
        "## What the numbers say",
        "",
        *[f"- {s}" for s in summary],
        *[f"- Note: {n}" for n in results.get("notes", [])],
        "",
        "## Results",
        "",
        *_markdown_table(rows),
        "",
    ]
    for key, caption in (
        ("labels", "Accuracy against labels per class"),
        ("time", "Accuracy against training time"),
        ("confusion", "Confusion matrix of the best model"),
    ):
        if key in paths:
            md += [f"![{caption}]({paths[key].name})", ""]
    md += [
        "Times are training wall time on this machine, feature extraction included where "
        "a strategy needs it (a cached extraction counts as its load time). The settings "
        "of each strategy are in results.json.",
        "",
    ]
    md += label_issue_lines(results.get("label_issues"))
    ranking = load_ranking(folder)
    if ranking is not None:
        plot = folder / RANKING_PLOT
        if plot.is_file():
            paths["ranking"] = plot
        md += ranking_lines(ranking, runs, plot=plot.is_file())
    markdown = "\n".join(md)
    atomic_write(folder / "report.md", lambda handle: handle.write(markdown.encode()))
    page = _html_page(title, markdown, paths)
    atomic_write(folder / "report.html", lambda handle: handle.write(page.encode()))
    paths["markdown"] = folder / "report.md"
    paths["html"] = folder / "report.html"
    return paths


_LINK = re.compile(r"\[([^\]]+)\]\(([\w.-]+)\)")  # [text](file next to the report)


def _links(escaped: str) -> str:
    """Markdown links to files beside the report as <a> (no scheme: nothing remote)."""
    return _LINK.sub(r'<a href="\2">\1</a>', escaped)


def _html_page(title: str, markdown: str, images: dict[str, Path]) -> str:
    """A minimal Markdown-to-HTML rendering with the PNGs inlined (one file to send)."""
    embedded = {p.name: base64.b64encode(p.read_bytes()).decode() for p in images.values()}
    body: list[str] = []
    in_table = in_list = False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= {"-", " "}:
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
                body.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells) + "</tr>")
                continue
            body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("- "):
            if not in_list:
                body.append("<ul>")
                in_list = True
            body.append(f"<li>{html.escape(line[2:])}</li>")
            continue
        if in_list:
            body.append("</ul>")
            in_list = False
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("![") and "](" in line:
            caption = line[2 : line.index("]")]
            name = line[line.index("](") + 2 : -1]
            data = embedded.get(name, "")
            body.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        elif line:
            body.append(f"<p>{_links(html.escape(line))}</p>")
    if in_table:
        body.append("</table>")
    if in_list:
        body.append("</ul>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        "img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )
