"""``lakecache example xray``: the chest X-ray scenario, end to end, on this machine."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from lakecache.cli.output import print_table


@click.group()
def example() -> None:
    """Worked examples that run end to end on this machine's lake and catalog."""


@example.command("xray")
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("xray-example"),
    show_default=True,
    help="Where the generated images, the flow file, the cache volume and the jobs' folders go.",
)
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    help="KEY=VALUE for the flow: profile=small|full, epochs=N, max_steps=N, seed=N, "
    "workers=N (DataLoader workers per task; default 0). Repeatable.",
)
@click.option(
    "--images",
    type=click.IntRange(60),
    default=240,
    show_default=True,
    help="Images to generate (60 or more: fewer leave some class with no training image).",
)
@click.option(
    "--size", type=click.IntRange(16), default=48, show_default=True, help="Image side in pixels."
)
@click.option(
    "--timeout", type=float, default=3600, show_default=True, help="Seconds to wait for the flow."
)
def xray(workdir: Path, params: tuple[str, ...], images: int, size: int, timeout: float) -> None:
    """Chest X-rays: commit, cache on-prem, split -> prepare -> train x2 -> pick -> evaluate.

    \b
    1. synthetic images in the NIH ChestX-ray14 layout (Data_Entry_2017.csv,
       images_NNN/images/*.png) are committed as dataset xray14;
    2. that commit is cached on site onprem (a volume in --dir if the site has none);
    3. the AI library's flow xray (copied to DIR/xray.yaml) runs on queue onprem,
       whose compute is on onprem: split by patient, resize, train a ResNet at
       two learning rates side by side, keep the better one by validation mean
       AUROC (dataset xray14-best), then score it once on the test split.
       Every task is a tracked job.
    On a CPU the default profile (small) takes a few minutes; --param
    profile=full is the GPU setting (ResNet-50, 224 px, batch 128, 10 epochs).
    The agent for onprem runs inside this command while the flow runs.
    """
    from lakecache.flows.spec import parse_overrides
    from lakecache.scenario import run_xray
    from lakecache.settings import Settings

    overrides = parse_overrides(params)
    settings = Settings.load()
    if settings.server_url and not settings.lake_url:
        from lakecache.errors import UserError

        raise UserError(
            "the example runs on this machine's lake and catalog, and only a server is set",
            hint="Unset LAKECACHE_SERVER (or log out) to use a local lake, or set LAKECACHE_LAKE.",
        )
    outcome = run_xray(
        workdir,
        settings=settings,
        images=images,
        size=size,
        overrides=overrides,
        timeout=timeout,
        say=lambda line: click.echo(line),
    )
    report(outcome)
    if outcome.state != "succeeded":
        raise SystemExit(1)


def report(outcome: Any) -> None:
    """Print the story of a finished scenario: tasks, AUROC, the choice, lineage, where to look."""
    click.echo(f"\nflow run {outcome.run_id}: {outcome.state}")
    print_table(
        ["task", "state", "took", "job", "tracking run"],
        [
            [
                t["name"],
                t["state"],
                "-" if t["seconds"] is None else f"{t['seconds']:.0f}s",
                t["job_id"] or "-",
                ",".join(str(r) for r in t["tracking_runs"]) or "-",
            ]
            for t in outcome.tasks
        ],
    )
    failed = [t for t in outcome.tasks if t["state"] == "failed"]
    for t in failed:
        click.echo(f"  {t['name']} failed: {t['reason']}; see `lakecache job logs {t['job_id']}`")
    if outcome.best:
        metric = outcome.best.get("metric", "mean_auroc")
        candidates = outcome.best.get("candidates", [])
        keys = {k for c in candidates for k in c.get("params", {})}
        # What tells the trainings apart: the params whose values differ (the learning rate).
        varying = sorted(
            k for k in keys if len({str(c.get("params", {}).get(k)) for c in candidates}) > 1
        )
        label = "mean AUROC" if metric == "mean_auroc" else metric
        click.echo(f"\nvalidation {label} of each training (it picks the model):")
        print_table(
            ["training", f"validation {label}"],
            [[_params(c.get("params", {}), varying), _fmt(c.get(metric))] for c in candidates],
        )
        best = outcome.best["best"]
        click.echo(
            f"best: {_params(best.get('params', {}), varying)} "
            f"(validation {_fmt(best.get(metric))}); "
            f"its model.pt is in dataset xray14-best@{(outcome.best_commit or '')[:12]}"
        )
    if outcome.evaluation:
        ev = outcome.evaluation
        per = ev.get("per_class_auroc", {})
        scored = [v for v in per.values() if isinstance(v, int | float) and not math.isnan(v)]
        click.echo(
            f"test split, scored once: mean AUROC {_fmt(ev.get('mean_auroc'))} on "
            f"{ev.get('images', '?')} images ({len(scored)}/{len(per)} classes scored)"
        )
    if outcome.lineage:
        click.echo(f"\nlineage (from dataset xray14@{outcome.dataset_commit[:12]}):")
        for line in outcome.lineage:
            click.echo(f"  {line}")
    click.echo("\nwhere to look:")
    for command, what in (
        (f"lakecache flow show {outcome.run_id}", "the DAG, each task's state and time"),
        ("lakecache run ls", "the tracking runs (params, metrics)"),
        ("lakecache data log xray14-best", "the chosen model, and the flow run that made it"),
    ):
        click.echo(f"  {command:<32} {what}")
    click.echo(
        f"  dashboard (lakecache server): /flows/{outcome.run_id}, /runs (AUROC plots per run),"
        " /datasets/xray14-best (its commits name the flow run and task that made them)"
    )
    if outcome.flow_file is not None:
        click.echo(f"  the flow file: {outcome.flow_file} (lakecache flow run it again)")


def _params(params: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k}={params.get(k)}" for k in keys) or "-"


def _fmt(v: object) -> str:
    if isinstance(v, int | float) and not math.isnan(v):
        return f"{v:.4f}"
    return "-"
