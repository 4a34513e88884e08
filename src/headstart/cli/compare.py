"""``headstart compare`` and ``headstart demo``: strategies side by side, and a report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from headstart.cli.arguments import (
    DEFAULT_BACKBONE,
    add_cache_arguments,
    add_config_arguments,
    add_data_arguments,
    add_labels_argument,
    add_log_argument,
    add_model_arguments,
    add_out_argument,
    cache_folder,
    check_log_argument,
    check_runtime,
    check_weights_argument,
    config_changes,
    decode_options,
    log_callbacks,
    parse_ints,
    parse_labels_per_class,
    test_size,
)
from headstart.cli.common import EXIT_ERROR, PrintingCallback, join_world, print_reports
from headstart.errors import ConfigError, spell
from headstart.strategies.registry import strategy_names

# The demo must finish within 5 minutes on a 2-core CPU: small epochs for the
# gradient strategies, the bundled lite0 at 112 px, one seed.
DEMO_OVERRIDES = {"fine-tune": {"epochs": 3}, "scratch": {"epochs": 5, "patience": 0}}
DEMO_IMAGE_SIZE = 112


def add_parsers(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo", help="compare the strategies on the bundled Fashion-MNIST sample (~5 min)"
    )
    demo.add_argument("--backbone", default=DEFAULT_BACKBONE, help="a bundled backbone")
    demo.add_argument(
        "--image-size",
        type=int,
        default=DEMO_IMAGE_SIZE,
        help=f"input resolution in pixels (the demo runs at {DEMO_IMAGE_SIZE} to finish in "
        "about 5 minutes on 2 CPU cores; train and compare default to the backbone's own)",
    )
    demo.add_argument("--full", action="store_true", help="the complete Fashion-MNIST (slower)")
    add_out_argument(demo, "demo", makes_files=True)
    add_cache_arguments(demo)
    add_config_arguments(demo, only=("device", "batch_size"), title="where it runs")
    demo.set_defaults(run=run_demo)

    comparison = sub.add_parser(
        "compare", help="scratch vs feature-extraction vs fine-tune, across data sizes"
    )
    add_data_arguments(comparison)
    comparison.add_argument(
        "--strategies",
        default="scratch,feature-extraction,fine-tune",
        help="comma-separated; add semi-supervised to let the images not drawn at each size "
        "count as unlabelled ones",
    )
    add_labels_argument(comparison, "10,30,100,all", several=True)
    comparison.add_argument(
        "--seeds",
        default="0",
        help="comma-separated, e.g. 0,1,2: each seeds a run's draw and training as --seed "
        "does in train; the first also seeds the train/test split, shared by every run",
    )
    comparison.add_argument(
        "--budget",
        metavar="TIME",
        help="compare within TIME (90s, 10m, 1h or seconds): estimate every run on this "
        "machine and data, run those that fit, most informative first, stop at the budget "
        "keeping the finished runs; the rest are named in the report with their estimates",
    )
    add_model_arguments(comparison)
    comparison.set_defaults(backbone=None)  # so that --backbone with --backbones is seen
    comparison.add_argument(
        "--backbones",
        help="comma-separated timm names, or 'bundled': every run repeated per backbone, "
        "side by side on the same curves (instead of --backbone); ranks them too",
    )
    comparison.add_argument(
        "--rank",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rank backbone x input size x layers on the largest training draw and add a "
        "Ranking section to the report, predicted beside measured accuracy (default: on "
        "with --backbones, off otherwise)",
    )
    add_active_arguments(comparison)
    add_out_argument(comparison, "compare", makes_files=True)
    add_log_argument(comparison)
    add_cache_arguments(comparison)
    add_config_arguments(
        comparison,
        skip=("seed",),
        title="training settings, for every strategy that uses them (default: each one's own)",
    )
    comparison.set_defaults(run=run_compare)


# The settings --active takes (CompareSettings' own defaults apply when a flag is left out).
ACTIVE_FLAGS = {
    "active_rounds": "rounds of labelling (5)",
    "active_batch": "labels per round, in each arm (20)",
    "active_seed_per_class": "labels per class both arms start from (2)",
}


def add_active_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("active against random labelling")
    group.add_argument(
        "--active",
        action="store_true",
        help="add an 'active vs random' curve to the report: from a seed set of the training "
        "split, rounds of suggested labels against as many random ones, a linear probe on "
        "the cached features scored on the same test images (per seed)",
    )
    for name, words in ACTIVE_FLAGS.items():
        group.add_argument(f"--{name.replace('_', '-')}", type=int, metavar="N", help=words)


def active_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The CompareSettings fields --active and its flags give; a flag without --active
    is refused (it would change nothing)."""
    given = {name: getattr(args, name) for name in ACTIVE_FLAGS if getattr(args, name) is not None}
    if given and not args.active:
        flag = "--" + next(iter(given)).replace("_", "-")
        raise ConfigError(
            f"{flag} applies to the active-vs-random curve only.", hint="Add {active}."
        )
    return {"active": True, **given} if args.active else {}


class CompareCallback(PrintingCallback):
    """Run-level lines; each strategy's plan once; training lines as in `train`."""

    def __init__(self, words: dict[str, str] | None = None) -> None:
        super().__init__(words)
        self._plans_shown: set[str] = set()

    def on_plan(self, plan: Any) -> None:
        if plan.strategy not in self._plans_shown:
            self._plans_shown.add(plan.strategy)
            super().on_plan(plan)

    def on_run_start(self, run: str, index: int, total: int) -> None:
        print(f"\n[{index}/{total}] {run}", flush=True)

    def on_run_end(self, record: dict[str, Any], reused: bool) -> None:
        if record.get("status") != "ok":
            print(f"{record['id']}: FAILED ({record.get('error')})", flush=True)
            return
        how = "reused from an earlier run" if reused else f"{record['train_seconds']:.1f}s"
        print(
            f"{record['id']}: test accuracy {record['accuracy']:.1%}, balanced "
            f"{record['balanced_accuracy']:.1%} ({how})",
            flush=True,
        )


def run_comparison(
    train: Any,
    test: Any,
    out: Path,
    settings: Any,
    args: argparse.Namespace,
    description: str,
    budget: float | None = None,
) -> int:
    from headstart.evaluation.comparison import compare, load_results
    from headstart.evaluation.report import build_report, summary_sentences
    from headstart.parallel import world
    from headstart.train.callbacks import CallbackList

    started = time.perf_counter()
    # One tracked run for the comparison, a child per run; rank 0 logs under torchrun.
    loggers = log_callbacks(args, run_name=f"compare {out.name}") if world().is_main else []
    try:
        results = compare(
            train, test, out, settings, cache_dir=cache_folder(args),
            callback=CallbackList([CompareCallback(args.words), *loggers]),
            data_description=description, budget=budget,
        )  # fmt: skip
    except BaseException:  # an error or Ctrl-C: the tracked runs say they failed
        for logger in loggers:
            logger.close(failed=True)
        raise
    for logger in loggers:
        logger.close()
    if not world().is_main:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    paths = build_report(out, title=f"headstart: {description}")
    print("\nsummary:")
    for sentence in summary_sentences(load_results(out)):
        print(f"  {sentence}")
    print(
        f"\nreport: {paths['markdown']} and {paths['html']} ({time.perf_counter() - started:.0f}s)"
    )
    failed = [r["id"] for r in results["runs"] if r.get("status") != "ok"]
    if failed:
        print(f"headstart: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from headstart.backbones.registry import check_backbone_name
    from headstart.cli.rank import backbone_names
    from headstart.data.doctor import diagnose
    from headstart.data.layout import load_images
    from headstart.evaluation.comparison import CompareSettings, shared_overrides
    from headstart.strategies.estimates import format_seconds, parse_budget

    started = time.monotonic()
    budget = None if args.budget is None else parse_budget(args.budget)
    check_weights_argument(args.weights)
    check_log_argument(args)
    if args.backbones is not None and args.backbone is not None:
        raise ConfigError(
            "--backbone and --backbones both say which backbones to compare.",
            hint="Give one: {backbones} A,B puts several side by side, {backbone} A runs one.",
        )
    backbones = tuple(backbone_names(args.backbones)) if args.backbones is not None else ()
    if args.backbones is not None and not backbones:
        raise ConfigError(f"--backbones names no backbone this machine has: {args.backbones!r}.")
    backbone = backbones[0] if backbones else (args.backbone or DEFAULT_BACKBONE)
    check_backbone_name(backbone)
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    unknown = [name for name in strategies if name not in strategy_names()]
    if unknown or not strategies:
        raise ConfigError(
            f"--strategies takes names among {', '.join(strategy_names())}, comma-separated. "
            f"Got {args.strategies!r} instead."
        )
    seeds = parse_ints("--seeds", args.seeds)
    changes = config_changes(args)
    check_runtime(changes.get("device"))
    test_size(args)
    image_size = changes.pop("image_size", None)
    overrides, notes = shared_overrides(strategies, changes)
    settings = CompareSettings(
        strategies=strategies,
        labels_per_class=parse_labels_per_class(args.labels_per_class, several=True),
        seeds=seeds,
        backbone=backbone,
        backbones=backbones,
        weights=args.weights,
        image_size=image_size,
        overrides=overrides,
        **active_settings(args),
    )
    main = join_world()  # under torchrun every run trains on all ranks; rank 0 writes
    for note in notes:
        print(f"compare: {spell(note, args.words)}")
    # The first seed also draws the train/test split, as --seed does in train; every
    # run is scored on that one test set, so the runs compare.
    train, test = load_images(
        args.data,
        test_size=test_size(args),
        seed=seeds[0],
        strict=args.strict,
        options=decode_options(args),
    )
    print_reports(train, test, args.words)
    shown = ("unreadable", "imbalance")  # the load reports above named them
    for line in diagnose(train, test).brief(args.data, skip=shown, words=args.words):
        print(line)
    # With --backbones the question is "which backbone?": the ranking's prediction
    # belongs beside the measurement unless --no-rank says otherwise.
    ranked = args.rank if args.rank is not None else bool(backbones)
    if ranked:
        rank_for_report(train, settings, changes, args, write=main)
    if budget is not None:  # the budget is the command's: loading and ranking count
        spent = time.monotonic() - started
        if spent >= budget:
            raise ConfigError(
                f"--budget {format_seconds(budget)} was spent before any run: loading the "
                f"images{' and ranking' if ranked else ''} took "
                f"{format_seconds(spent)}. Give a longer --budget."
            )
        print(f"compare: {format_seconds(spent)} of the budget went to loading; the runs get "
              f"the {format_seconds(budget - spent)} left")  # fmt: skip
        budget -= spent
    return run_comparison(train, test, args.out, settings, args, f"{args.data}", budget=budget)


def rank_for_report(
    train: Any,
    settings: Any,
    changes: dict[str, Any],
    args: argparse.Namespace,
    *,
    write: bool = True,
) -> None:
    """Rank the compared backbones (each input size and layer set) on the largest
    training draw of the first seed, the images the largest runs train on, never the
    test part; writes ranking.json and ranking.png for the report. A ranking that cannot
    be made is said, and the comparison goes on."""
    from headstart.cli.rank import candidates_from, run_ranking
    from headstart.errors import DataError
    from headstart.evaluation.comparison import largest_draw
    from headstart.rank.ranking import LAYER_SETS, save_ranking

    k, draw = largest_draw(train, settings)
    sizes = [settings.image_size] if settings.image_size else None
    candidates = candidates_from(settings.compared_backbones, sizes, LAYER_SETS)
    size = "all" if k is None else k
    print(
        f"\nranking {len(candidates)} candidates on the {len(draw)} training images of the "
        f"largest draw ({size} per class, seed {settings.seeds[0]}); the test part is not "
        "looked at"
    )
    try:
        ranking = run_ranking(
            args, draw, candidates, device=changes.get("device", "auto"),
            batch_size=changes.get("batch_size", 64), seed=settings.seeds[0], top=8,
        )  # fmt: skip
    except DataError as exc:
        print(f"compare: no ranking in the report: {exc.render(args.words)}")
        return
    if not write:  # under torchrun: rank 0 writes
        return
    args.out.mkdir(parents=True, exist_ok=True)
    save_ranking(
        ranking, args.out, extra={"draw": {"labels_per_class": size, "seed": settings.seeds[0]}}
    )


def run_demo(args: argparse.Namespace) -> int:
    from headstart.data.idx import load_fashion_mnist, load_sample
    from headstart.evaluation.comparison import CompareSettings, shared_overrides

    if args.full:
        train, test = load_fashion_mnist()
        sizes: tuple[int | None, ...] = (10, 100)
        description = (
            f"Fashion-MNIST, full ({len(train)} training images to draw from, "
            f"{len(test)} test images)"
        )
    else:
        train, test = load_sample()
        sizes = (10, 30, 100)
        description = (
            f"bundled Fashion-MNIST sample ({len(train)} training and {len(test)} test images)"
        )
    strategies = ("scratch", "feature-extraction", "fine-tune")
    shared, _ = shared_overrides(strategies, config_changes(args))
    overrides = {
        name: {**DEMO_OVERRIDES.get(name, {}), **shared.get(name, {})} for name in strategies
    }
    settings = CompareSettings(
        strategies=strategies,
        labels_per_class=sizes,
        backbone=args.backbone,
        image_size=args.image_size,
        overrides=overrides,
    )
    print(
        f"demo: scratch vs feature-extraction vs fine-tune on the {description}, "
        f"at {args.image_size} px"
    )
    return run_comparison(train, test, args.out, settings, args, description)
