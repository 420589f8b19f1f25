"""Tables of results on stderr, each fitted to the console's width: a number is never cut short."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from pixelreg.cli.app import console as CONSOLE


def fitted_table(
    title: str, headers: list[str], rows: list[list[str]], droppable: list[str], console: Console = CONSOLE
) -> Table:
    """A table that fits the console: the `droppable` columns go, first named first, until it
    does; what still does not fit folds onto more lines. A number is never cut short.
    """
    shown = list(headers)
    while True:
        table = Table(title=title, title_style="bold")
        for header in shown:
            first = header == headers[0]
            table.add_column(header, justify="left" if first else "right", overflow="fold", min_width=1)
        for row in rows:
            table.add_row(*(cell for header, cell in zip(headers, row, strict=True) if header in shown))
        gone = [header for header in droppable if header in shown]
        natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
        if natural <= console.width or not gone:
            if len(shown) < len(headers):
                table.caption = (
                    f"(not shown at this width: {', '.join(h for h in headers if h not in shown)})"
                )
            return table
        shown.remove(gone[0])


DETECTION_HEADERS = ["jaccard", "recall", "precision", "rmse px", "rmse/bound"]


def cells_of(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> list[list[str]]:
    """Table cells of `rows`: each column's value by its key, formatted by its format."""
    return [[shown(row[key], form) for key, form in columns] for row in rows]


def shown(value: Any, form: str) -> str:
    """A table cell: the value formatted, or a dash where there is none."""
    return "-" if value is None else format(value, form)


SHARES = ("exact", "recall_1px", "recall", "precision", "jaccard")  # shown as percentages


def metrics_table(report: dict[str, Any], console: Console = CONSOLE) -> Table:
    """The metrics of an evaluation, and of the classical baselines, as a table that fits."""
    counting = "thresholds" in report
    columns = ["n", "mean_px", "median_px", "rmse_px", "rmse_hits_px", "max_px", "exact", "recall_1px"]
    if counting:
        columns = ["n", "jaccard", "recall", "precision", "rmse_px", "efficiency", "fp", "fn"]
    groups = [
        (name, report["metrics"][name]) for name in ("all", "seen", "unseen") if name in report["metrics"]
    ]
    groups += [(f"every pixel, {name}", block) for name, block in report.get("positions", {}).items()]
    groups += [(f"{name} (classical)", block) for name, block in report.get("baselines", {}).items()]
    rows = []
    for name, block in groups:
        cells = [name, str(block["n"])]
        for key in columns[1:]:
            value = block[key]
            if value is None:
                cells.append("-")
            elif isinstance(value, int):
                cells.append(f"{value:,}")
            elif key == "efficiency":
                cells.append(f"{value:.1f}")
            else:
                cells.append(f"{value:.2%}" if key in SHARES else f"{value:.4f}")
        rows.append(cells)
    droppable = ["median_px", "max_px", "rmse_hits_px", "rmse_px", "recall_1px", "fp", "fn", "efficiency"]
    table = fitted_table(
        f"{report['model']} on split {report['split']!r}",
        ["group", *columns],
        rows,
        droppable,
        console=console,
    )
    notes = []
    if report.get("crlb"):
        ratios = ", ".join(f"{k} {shown(v, '.2f')}" for k, v in report["crlb"]["rmse_over_crlb"].items())
        alone = " (each spot alone)" if counting else ""
        notes.append(
            f"Cramér-Rao bound{alone} {shown(report['crlb']['crlb_px'], '.4f')} px; rmse / bound: {ratios}"
        )
    if counting:
        separation = report["recall_by_separation"]
        edges, found = separation["edges_px"], separation["methods"]["model"]
        bins = [f"{lo:g}-{hi:g}" for lo, hi in zip(edges, edges[1:], strict=False)] + [f">={edges[-1]:g}"]
        recalls = ", ".join(
            f"{label} px {shown(r, '.1%')} ({n:,})"
            for label, r, n in zip(bins, found["recall"], found["truths"], strict=True)
        )
        notes.append(f"model's recall by distance to the nearest other spot: {recalls}")
        chosen = ", ".join(f"{k} {shown(v, 'g')}" for k, v in report["thresholds"].items())
        notes.append(
            f"pairs within {report['tolerance_px']:g} px; efficiency at {report['pixel_size_nm']:g} nm "
            f"pixels; thresholds: {chosen}; model's merge radius {report['merge_radius_px']:g} px"
        )
    if table.caption:
        notes.append(str(table.caption))
    table.caption = "\n".join(notes) or None
    return table


def photometry_table(photometry: dict[str, Any], console: Console = CONSOLE) -> Table:
    """The camera model's scoring: rmse over the Poisson bound in each photon decile, then each
    method's bias, calibration and photometry."""
    deciles = photometry["deciles"]
    methods = photometry["methods"]
    cells = [
        [
            f"{low:,.0f}-{high:,.0f}",
            f"{spots:,}",
            shown(bound, ".4f"),
            *(shown(methods[name]["decile_rmse_over_bound"][d], ".3f") for name in methods),
        ]
        for d, (low, high, spots, bound) in enumerate(
            zip(
                deciles["photons_from"],
                deciles["photons_to"],
                deciles["spots"],
                deciles["bound_px"],
                strict=True,
            )
        )
    ]
    headers = ["photons", "spots", "bound px", *(f"{name} rmse/bound" for name in methods)]
    table = fitted_table(
        "by photon decile (Poisson bound, every parameter unknown)",
        headers,
        cells,
        ["spots"],
        console=console,
    )
    lines = []
    for name, block in methods.items():
        spread = block["error_over_uncertainty_std"]
        lines.append(
            f"{name}: rmse {shown(block['rmse_px'], '.4f')} px = {shown(block['rmse_over_bound'], '.3f')} x bound; "
            f"bias x {shown(block['bias_px']['x'], '+.4f')}, y {shown(block['bias_px']['y'], '+.4f')} px; "
            f"std(error / uncertainty) x {shown(spread['x'], '.3f')}, y {shown(spread['y'], '.3f')}; "
            f"photons rmse {shown(block['photons_rmse_relative'], '.2%')} "
            f"(bound {shown(photometry['photons_bound_relative'], '.2%')}), "
            f"background rmse {shown(block['background_rmse'], '.3f')} photons/px"
        )
    table.caption = "\n".join(lines)
    return table


def calibration_table(result: Any, console: Console = CONSOLE) -> Table:
    """`calibrate`'s estimates: value, how each was found, and its spread."""
    rows = [
        [name, f"{e.value:.4g}", e.how, "" if e.spread is None else f"{e.spread:.2g}", e.note]
        for name, e in result.estimates.items()
    ]
    return fitted_table(
        f"pixelreg calibrate: {result.frames} frames of {result.size[0]}x{result.size[1]}",
        ["parameter", "value", "how", "+-", "from"],
        rows,
        ["from"],
        console=console,
    )


def twin_table(twin: Any, console: Console = CONSOLE) -> Table:
    """The movie beside its simulated twin: each statistic of both, and whether they agree."""
    rows = [
        [s.name, f"{s.movie:.4g}", f"{s.twin:.4g}", s.unit, "yes" if s.agrees else "NO"]
        for s in twin.statistics
    ]
    return fitted_table(
        f"the movie and its simulated twin ({len(twin.movie)} frames of {twin.movie.shape[1]}x{twin.movie.shape[2]} each)",
        ["statistic", "movie", "twin", "unit", "agree"],
        rows,
        ["unit"],
        console=console,
    )


BENCH_HEADERS = {
    "parameters": "params",
    "train_seconds": "train s",
    "unseen_mean_px": "unseen mean px",
    "all_positions_exact": "every pixel exact",
    "images_per_second": "images/s",
}


def bench_table(rows: list[dict[str, Any]], console: Console = CONSOLE) -> Table:
    """Bench rows as a table that fits."""
    columns = ["holdout", "model", "parameters", "train_seconds", "unseen_mean_px", "unseen_exact"]
    columns += ["all_positions_exact", "images_per_second"]
    cells = []
    for row in rows:
        line = []
        for column in columns:
            value = row[column]
            if value is None:
                line.append("-")
            elif column.endswith("exact"):
                line.append(f"{value:.2%}")
            elif isinstance(value, float):
                line.append(f"{value:.4f}" if column.endswith("px") else f"{value:.1f}")
            else:
                line.append(f"{value:,}" if isinstance(value, int) else str(value))
        cells.append(line)
    headers = [BENCH_HEADERS.get(column, column.replace("_", " ")) for column in columns]
    return fitted_table(
        "pixelreg bench holdouts", headers, cells, ["params", "images/s", "train s"], console=console
    )


def precision_table(results: dict[str, Any], console: Console = CONSOLE) -> Table:
    """The precision grid as a table: rmse over the bound, pixel locking, training seconds."""

    columns = [
        ("blur", "g"),
        ("brightness", "g"),
        ("method", ""),
        ("crlb_px", ".4f"),
        ("rmse_over_crlb", ".3f"),
    ]
    columns += [("rmse_common_over_crlb", ".3f"), ("rmse_hits_over_crlb", ".3f"), ("recall_1px", ".2%")]
    columns += [("bias_px", ".4f"), ("train_seconds", ".0f")]
    cells = cells_of(results["rows"], columns)
    headers = ["blur", "brightness", "method", "bound px", "rmse/bound", "common/bound", "found/bound"]
    headers += ["found", "bias px", "train s"]
    droppable = ["found/bound", "train s", "bound px", "found"]
    table = fitted_table("pixelreg bench precision", headers, cells, droppable, console=console)
    legend = (
        "rmse over every spot; over the spots every model and the fit found (common); over the "
        "spots this method found within 1 px (found)"
    )
    table.caption = legend if table.caption is None else f"{legend}\n{table.caption}"
    return table


def density_table(results: dict[str, Any], console: Console = CONSOLE) -> Table:
    """The density bench as a table: each method's detection scores at each density."""

    columns = [("points", ""), ("mean_spots", ".1f"), ("method", ""), ("jaccard", ".2%"), ("recall", ".2%")]
    columns += [("precision", ".2%"), ("rmse_px", ".4f"), ("rmse_over_crlb", ".2f"), ("efficiency", ".1f")]
    cells = cells_of(results["rows"], columns)
    headers = ["spots", "mean", "method", *DETECTION_HEADERS, "efficiency"]
    table = fitted_table(
        "pixelreg bench density", headers, cells, ["mean", "rmse/bound", "precision"], console=console
    )
    legend = (
        f"pairs within {results['tolerance_px']:g} px; efficiency at {results['pixel_size_nm']:g} nm pixels; "
        "rmse over the pairs, against the bound of a spot alone; models trained on "
        + ", ".join(
            f"{row['trained_on']} spots (for {row['points']})" for row in results["rows"] if row["trained_on"]
        )
    )
    table.caption = legend if table.caption is None else f"{legend}\n{table.caption}"
    return table


def movie_table(results: dict[str, Any], console: Console = CONSOLE) -> Table:
    """The movie bench: speed and scores of each method on the same frames."""
    cells = [
        [
            name,
            f"{row['frames_per_second']:.2f}",
            f"{row['mpx_per_second']:.2f}",
            shown(row["jaccard"], ".2%"),
            shown(row["rmse_px"], ".4f"),
            shown(row["efficiency"], ".1f"),
        ]
        for name, row in results["methods"].items()
    ]
    table = fitted_table(
        "pixelreg bench movie",
        ["method", "frames/s", "Mpx/s", "jaccard", "rmse px", "efficiency"],
        cells,
        [],
        console=console,
    )
    legend = (
        f"{results['frames']} frames of {results['size']}x{results['size']}, "
        f"{results['spots_per_frame']:.0f} spots per frame"
    )
    if "speedup" in results:
        trackpy = results["methods"]["trackpy"]
        python = trackpy.get("python_engine_frames_per_second", trackpy["frames_per_second"])
        legend += (
            f"; pixelreg {results['speedup']:.2f}x trackpy's frames/s (its python engine, "
            f"{python:.2f} frames/s, as `pip install trackpy` runs it; goal {results['speedup_goal']:g}x, "
            f"met: {'yes' if results['goal_met'] else 'no'})"
        )
    if "speedup_over_numba" in results:
        legend += f", {results['speedup_over_numba']:.2f}x trackpy with numba's"
    stages = results.get("stages_ms_per_frame")
    if stages:
        legend += "\npixelreg's time per frame: " + ", ".join(f"{k} {v:.1f} ms" for k, v in stages.items())
    network = results.get("network")
    if network:
        legend += (
            f"\nthe network: {network['gflop_per_frame']:.2f} GFLOP a frame in {network['ms_per_frame']:.1f} ms, "
            f"{network['gflops']:.1f} GFLOP/s against {network['matmul_gflops']:.1f} for a float32 "
            f"matrix product ({network['threads']} threads)"
        )
    for name, row in results["methods"].items():
        for worker, rate in row.get("workers", {}).items():
            legend += f"\n{name}: worker {worker} {rate['frames_per_second']:.2f} frames/s busy"
    table.caption = legend
    return table


def perf_table(results: dict[str, Any], console: Console = CONSOLE) -> Table:
    """Performance figures as a table that fits."""
    rows = [
        ["generate, images/s", f"{results['generate_images_per_second']:,}"],
        ["numpy argmax, images/s", f"{results['argmax_images_per_second']:,}"],
    ]
    for name, m in results["models"].items():
        rows.append([f"{name}: train, images/s", f"{m['train_images_per_second']:,}"])
        rows.append(
            [f"{name}: inference, 1024 images a call, images/s", f"{m['inference_images_per_second']:,}"]
        )
    seconds = results["default_train_seconds_to_unseen_exact"]
    epochs = results["default_train_epochs_to_unseen_exact"]
    rows.append(
        [
            "default train: seconds to exact on unseen",
            "-" if seconds is None else f"{seconds} (epoch {epochs})",
        ]
    )
    rss = results["train_peak_rss_mb"]
    rows.append([f"train --n {rss['n']:,} --epochs 1: peak RSS, MB", f"{rss['mb']:,}"])
    title = f"pixelreg bench perf ({results['device']}, {results['threads']} threads)"
    return fitted_table(title, ["measure", "value"], rows, [], console=console)


def _scored_cells(method: str, row: dict[str, Any]) -> list[str]:
    """A method's detection scores, rmse over the bound and same-spot rmse, as table cells."""
    same = row.get("same_spots")
    return [
        method,
        shown(row["jaccard"], ".2%"),
        shown(row["recall"], ".2%"),
        shown(row["precision"], ".2%"),
        shown(row["rmse_px"], ".4f"),
        shown(row.get("rmse_over_bound"), ".2f"),
        "" if same is None else f"{same['theirs_px']} vs {same['ours_px']}",
    ]


def calibration_bench_table(name: str, result: dict[str, Any], console: Console = CONSOLE) -> Table:
    """One foreign movie of `bench calibration`: each method's scores, and what calibrate
    estimated against the renderer's truth."""
    cells = [
        [
            *_scored_cells(method, row),
            shown(row.get("photons_over_truth"), ".3f"),
            shown(row["frames_per_second"], ".1f"),
        ]
        for method, row in result["methods"].items()
    ]
    table = fitted_table(
        f"{name}: {result['frames']} frames of {result['size']}x{result['size']} "
        f"(calibrated on and scored after the first {result['tuning_frames']})",
        ["method", *DETECTION_HEADERS, "same spots: theirs vs ours", "photons / true", "frames/s"],
        cells,
        [],
        console=console,
    )
    truth, estimates = result["truth"], result["calibration"]["estimates"]
    pairs = [
        ("sigma", "blur"),
        ("baseline", "baseline"),
        ("e_per_adu", "e_per_adu"),
        ("read_noise", "read_noise"),
        ("photons_min", "photons"),
        ("photons_max", "photons_max"),
        ("background_min", "background_photons"),
        ("background_max", "background_photons_max"),
        ("spots_per_frame", "spots_per_frame"),
    ]
    compared = ", ".join(
        f"{key} {truth[key]:.4g} -> {estimates[name]['value']:.4g}" for key, name in pairs if key in truth
    )
    table.caption = f"true -> calibrated: {compared}; goal met: {'yes' if result['goal_met'] else 'no'}"
    return table


def psf_bench_table(result: dict[str, Any], console: Console = CONSOLE) -> Table:
    """`bench psf`: each method's scores on the pupil movie, each model's phase bias, and the goals."""
    cells = [
        [
            *_scored_cells(method, row),
            shown(result["phase_bias"].get(method, {}).get("worst_px"), ".4f"),
            shown(row.get("photons_over_truth"), ".3f"),
        ]
        for method, row in result["methods"].items()
    ]
    table = fitted_table(
        f"pupil PSF: {result['frames']} frames of {result['size']}x{result['size']} "
        f"(calibrated on and scored after the first {result['tuning_frames']})",
        [
            "method",
            *DETECTION_HEADERS,
            "same spots: theirs vs beads",
            "worst phase bias px",
            "photons / true",
        ],
        cells,
        [],
        console=console,
    )
    goals = result["goals"]
    table.caption = (
        f"rmse / bound: movie PSF {goals['movie_rmse_over_bound']} (goal 1.3: "
        f"{'met' if goals['movie_rmse_goal_met'] else 'missed'}), beads {goals['beads_rmse_over_bound']} "
        f"(goal 1.15: {'met' if goals['beads_rmse_goal_met'] else 'missed'}); beats the peers: movie "
        f"{'yes' if goals['movie_beats_peers'] else 'no'}, beads {'yes' if goals['beads_beats_peers'] else 'no'}; "
        f"phase bias within 0.01 px: {'yes' if goals['bias_goal_met'] else 'no'}"
    )
    return table


def psf_isolated_table(result: dict[str, Any], console: Console = CONSOLE) -> Table:
    """`bench psf` on the isolated spots of its sparse movie: each model's and each PSF's ML
    fit's rmse over the bound and mean offset, free of neighbours."""
    cells = [
        [
            method,
            str(row["spots"]),
            shown(row["rmse_px"], ".4f"),
            shown(row["rmse_over_bound"], ".3f"),
            ", ".join(f"{v:+.4f}" for v in row["mean_offset_px"]),
            ", ".join(f"{v:.4f}" for v in row["offset_error_px"]),
            shown(row.get("photons_over_truth"), ".3f"),
        ]
        for method, row in result["isolated"].items()
    ]
    return fitted_table(
        "pupil PSF, isolated spots of a sparse movie (none within 10 px)",
        ["method", "spots", "rmse px", "rmse/bound", "mean offset x, y px", "+- px", "photons / true"],
        cells,
        [],
        console=console,
    )


def depth_tables(result: dict[str, Any], console: Console = CONSOLE) -> list[Table]:
    """`bench 3d`: each method's rmse against the 3D bound by depth on isolated spots, and its
    scores on the dense movie, with the goals."""
    tables = []
    for method, rows in result["by_depth"].items():
        cells = [
            [
                f"{row['z_nm']:+.0f}",
                str(row["spots"]),
                shown(row["rmse_lateral_nm"], ".2f"),
                shown(row["bound_lateral_nm"], ".2f"),
                shown(row["lateral_over_bound"], ".3f"),
                shown(row["rmse_axial_nm"], ".2f"),
                shown(row["bound_axial_nm"], ".2f"),
                shown(row["axial_over_bound"], ".3f"),
                f"{row['bias_z_nm']:+.1f} +- {row['bias_z_error_nm']:.1f}",
            ]
            for row in rows
        ]
        whole = result["isolated"][method]
        table = fitted_table(
            f"{method}: isolated spots by true depth ({whole['spots']} of {whole['of']} found)",
            ["z nm", "spots", "lateral nm", "bound", "ratio", "axial nm", "bound", "ratio", "z bias nm"],
            cells,
            [],
            console=console,
        )
        table.caption = (
            f"all: lateral {whole['rmse_lateral_nm']} nm ({whole['lateral_over_bound']} x bound), "
            f"axial {whole['rmse_axial_nm']} nm ({whole['axial_over_bound']} x bound)"
        )
        tables.append(table)
    cells = [
        [
            method,
            shown(row["jaccard"], ".2f"),
            shown(row["recall"], ".3f"),
            shown(row["precision"], ".3f"),
            shown(row["rmse_lateral_nm"], ".1f"),
            shown(row["rmse_axial_nm"], ".1f"),
            shown(row["efficiency_lateral"], ".2f"),
            shown(row["efficiency_axial"], ".2f"),
            f"{row['same_spots']['rmse_lateral_nm']:.1f} / {row['same_spots']['rmse_axial_nm']:.1f} "
            f"({row['same_spots']['spots']})",
            shown(row["frames_per_second"], ".2f"),
        ]
        for method, row in result["dense"].items()
    ]
    table = fitted_table(
        f"dense movie: {result['dense_spots_per_frame']} emitters a 64x64 frame (2 per square micrometre)",
        ["method", "Jaccard", "recall", "precision", "lateral nm", "axial nm", "E lat", "E ax",
         "same spots lat / ax nm", "frames/s"],
        cells,
        [],
        console=console,
    )  # fmt: skip
    goals = result["goals"]
    table.caption = (
        f"worst bin / bound: lateral {goals['worst_lateral_over_bound']}, axial {goals['worst_axial_over_bound']} "
        f"(goal 1.15: {'met' if goals['bound_goal_met'] else 'missed'}); no worse than the ML fit in every bin: "
        f"{'yes' if goals['no_worse_than_ml_fit_every_bin'] else 'no'}; dense Jaccard gain "
        f"{goals['dense_jaccard_gain_points']} points (goal 15 with lower rmse: "
        f"{'met' if goals['dense_goal_met'] else 'missed'})"
    )
    tables.append(table)
    return tables


def post_tables(result: dict[str, Any], console: Console = CONSOLE) -> list[Table]:
    """`bench post`: each experiment's residual drift beside RCC at Picasso's settings, then the
    merge, FRC and NeNA figures with the goals."""
    tables = []
    for name, e in result["experiments"].items():
        cells = [
            [method, f"{row['segment_frames']:,}", f"{row['residual_nm']:.2f}"]
            for method, row in e["drift"].items()
        ]
        table = fitted_table(
            f"{name}: residual drift ({e['localizations']:,} localizations, {e['frames']:,} frames, "
            f"drift {e['drift_span_nm'][0]:g} x {e['drift_span_nm'][1]:g} nm)",
            ["method", "segment frames", "residual rms nm"],
            cells,
            [],
            console=console,
        )
        table.caption = (
            "Picasso-like: pixelreg's RCC at Picasso's settings (1-px bins, fixed segments), not Picasso"
        )
        tables.append(table)
    cells = []
    for name, e in result["experiments"].items():
        m, frc = e["merge"], e["frc_nm"]
        cells.append(
            [
                name,
                f"{m['rows']:,} / {m['true_events']:,} ({m['rows_over_events']:.3f})",
                f"{m['rmse_nm']:.2f} / {m['combined_bound_nm']:.2f} ({m['rmse_over_bound']:.3f})",
                " / ".join(shown(frc[k], ".1f") for k in ("raw", "corrected", "true drift")),
                f"{e['nena_nm']:.2f} / {e['true_mean_precision_nm']:.2f} ({e['nena_over_mean']:.3f})",
            ]
        )
    table = fitted_table(
        "merge, resolution",
        [
            "experiment",
            "rows / events",
            "rmse / bound nm",
            "FRC raw / corrected / true nm",
            "NeNA / mean precision nm",
        ],
        cells,
        [],
        console=console,
    )
    missed = [
        f"{name}: {goal}" for name, goals in result["goals"].items() for goal, met in goals.items() if not met
    ]
    table.caption = "goals: " + ("all met" if not missed else "missed " + "; ".join(missed))
    tables.append(table)
    if "movie" in result:
        m = result["movie"]
        frc = m["frc_nm"]
        cells = [
            [
                f"{m['localizations']:,} / {m['true_localizations']:,}",
                f"{m['recall']:.3f} / {m['precision']:.3f}",
                f"{m['rmse_nm']:.2f}",
                f"{m['error_over_uncertainty']:.2f}",
                f"{m['photons_over_truth']:.2f}",
                f"{m['drift']['residual_nm']:.2f}",
                f"{m['merge']['rows']:,} / {m['merge']['true_events']:,} ({m['merge']['rows_over_events']:.3f})",
                " / ".join(shown(frc[k], ".1f") for k in ("raw", "corrected", "true drift")),
                f"{m['nena_nm']:.2f}",
            ]
        ]
        tables.append(
            fitted_table(
                "the chain from a movie: the filaments through a pupil PSF, calibrated, trained, predicted",
                ["localizations / true", "recall / precision", "rmse nm", "error / uncertainty", "photons / true",
                 "residual drift nm", "rows / events", "FRC raw / corrected / true nm", "NeNA nm"],
                cells,
                [],
                console=console,
            )
        )  # fmt: skip
    return tables


def track_table(results: dict[str, Any], console: Console = CONSOLE) -> Table:
    """`bench track`: each experiment's pipelines (links, tracks, D) beside the true
    trajectories'."""
    cells = []
    for name, result in results.items():
        true_d = result["diffusion_true"]
        given = result["diffusion_true_over_given"]
        cells.append(
            [
                f"{name}: true trajectories",
                f"{result['spots']:,}",
                f"{result['particles']:,}",
                f"{result['true_links']:,}",
                "-",
                f"{true_d[0]:.4f} ({given[0]:.3f} of given)",
                f"{true_d[1]:.4f} ({given[1]:.3f} of given)",
                f"NN {result['nearest_neighbour_px']:g}",
            ]
        )
        for pipeline in ("trackpy", "pixelreg"):
            row = result[pipeline]
            cells.append(
                [
                    f"{name}: {pipeline}",
                    f"{row['localizations']:,}",
                    f"{row['tracks']:,}",
                    f"{row['correct_links']:,} / {row['links']:,}",
                    f"{row['correct_share']:.2%}",
                    f"{row['diffusion_0']:.4f} ({row['diffusion_0_over_true']:.3f})",
                    f"{row['diffusion_1']:.4f} ({row['diffusion_1_over_true']:.3f})",
                    f"{row['search_range_px']:g}",
                ]
            )
    return fitted_table(
        "tracks (D in px²/frame; ratio to the true trajectories'; NN: median nearest neighbour, px)",
        [
            "movie: pipeline",
            "localizations",
            "tracks",
            "correct / links",
            "correct",
            "D slow",
            "D fast",
            "search px",
        ],
        cells,
        [],
        console=console,
    )


def archive_table(report: dict[str, Any], console: Console = CONSOLE) -> Table:
    """`predict --workers/--scheduler/--resume`: frames/s per worker and in all, and where the
    workers' time went."""
    cells = [
        [who, f"{row['frames']:,}", f"{row['busy_seconds']:.1f}", f"{row['frames_per_second'] or 0:.2f}"]
        for who, row in report["workers"].items()
    ]
    cells.append(
        [
            "all (wall time)",
            f"{report['frames']:,}",
            f"{report['seconds']:.1f}",
            f"{report['frames_per_second'] or 0:.2f}",
        ]
    )
    stages = report["stage_seconds"]
    total = max(sum(stages.values()), 1e-9)
    where = ", ".join(
        f"{stage} {seconds:.1f} s ({seconds / total:.0%})" for stage, seconds in stages.items() if seconds
    )
    table = fitted_table(
        "chunks localized (frames/s per worker over its busy time; in all over the wall time)",
        ["worker", "frames", "seconds", "frames/s"],
        cells,
        [],
        console=console,
    )
    table.caption = f"where the workers' time went: {where}"
    return table
