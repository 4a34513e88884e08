"""Measuring: strategies compared side by side, the report built from their results, and
the plots in it; what a model gets wrong (top losses, confused pairs, their gallery)
and where it looks (Grad-CAM heatmaps as files)."""

from headstart._internal.lazy import lazy_exports

_EXPORTS = {
    "CompareCallback": ".comparison",
    "CompareSettings": ".comparison",
    "compare": ".comparison",
    "load_results": ".comparison",
    "LabelIssues": ".label_issues",
    "find_label_issues": ".label_issues",
    "write_issue_files": ".issue_files",
    "build_report": ".report",
    "summary_sentences": ".report",
    "save_confusion_matrix": ".plots",
    "find_mistakes": ".mistakes",
    "write_gallery": ".mistakes",
    "write_heatmaps": ".heatmaps",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
