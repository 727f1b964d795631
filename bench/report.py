"""Run every benchmark in bench/ and write BENCHMARKS.md: each figure with its peer, the ratio, the machine
and the exact command that produced it.

    python bench/report.py            # full runs (several minutes)
    python bench/report.py --quick    # smaller runs (about three minutes on two cores)
    python bench/report.py --only engine,coldstart --out BENCHMARKS.md

Each benchmark runs as its own process (so one that crashes is reported, not
fatal) and writes its JSON under ``bench/results/``; this script reads the
JSON back. Benchmarks it knows are turned into rows of figures; a new
``bench/*.py`` it does not know yet is still run and its printed table is
copied into the report verbatim.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"


@dataclass
class Figure:
    """One measured figure against its peer (another system, the other mode, or the target it must meet).

    ``ratio`` is oriented so that above 1 is better for corral (or meets the target)."""

    what: str
    value: float
    unit: str
    peer: str
    peer_value: float | None
    ratio: float | None
    note: str = ""


@dataclass
class Benchmark:
    name: str
    script: str
    full: list[str]
    quick: list[str]
    figures: Callable[[dict[str, Any]], list[Figure]]
    timeout_s: float = 1800.0


@dataclass
class Outcome:
    bench: Benchmark | None
    script: str
    command: list[str]
    seconds: float
    returncode: int
    stdout: str
    stderr: str
    data: dict[str, Any] | None = None
    figures: list[Figure] = field(default_factory=list)
    problem: str = ""


# ---------------------------------------------------------------- figures from each benchmark's JSON

def _engine(d: dict[str, Any]) -> list[Figure]:
    out = []
    threads = d.get("threads", "?")
    for row in d["rows"]:
        batch, backend = row["batch"], row["backend"]
        ours, ort = batch / row["corral_s"], batch / row["onnxruntime_s"]
        runs = "one run" if row.get("peer_runs", 1) == 1 else f"{row['peer_runs']} runs"
        out.append(Figure(f"{row['title']}, batch {batch}: corral ({backend}) predict_batch", ours, "img/s",
                          f"onnxruntime on the file, {threads} threads, {runs}", ort, ours / ort,
                          f"max abs diff {row['max_abs_diff']:.1e}; layout: {row['layout']}"))
    for backend, value in d.get("geomean", {}).items():
        rows = sum(1 for r in d["rows"] if r["backend"] == backend)
        out.append(Figure(f"geometric mean over {rows} rows ({backend})", value, "×", "target (issue 16)", 1.15,
                          value / 1.15, f"lowest row {d['lowest'][backend]:.2f}× (target ≥ 1.0)"))
    for row in d.get("int8_rows", []):
        quality = (f"top-1 agreement {row['top1_agreement']:.1%}" if "top1_agreement" in row
                   else f"output SNR {row['snr_db']:.1f} dB")
        verdict = "" if row["vs_float"] > 1 else "; 8 bits do not pay here"
        out.append(Figure(f"{row['title']}, batch {row['batch']}: int8 variant on corral ({row['backend']})",
                          row["batch"] / row["int8_s"], "img/s", "float onnxruntime on the file",
                          row["batch"] / row["onnxruntime_s"], row["vs_onnxruntime"],
                          f"{row['vs_float']:.2f}× corral's float compile; {quality} on "
                          f"{row['evaluation_items']} photos; {row['float_bytes'] / row['int8_bytes']:.2f}× smaller"
                          f"{verdict}"))
    return out


def _coverage(d: dict[str, Any]) -> list[Figure]:
    out = []
    for row in d["rows"]:
        ops = ", ".join(row["new_ops"]) or "none of the added ops"
        for backend, r in row["backends"].items():
            out.append(Figure(f"{row['title']} on {backend}, one image per prediction", r["ms_per_image"] / 1000,
                              "s", f"onnxruntime on the file, {d.get('threads', '?')} threads",
                              row["onnxruntime_ms_per_image"] / 1000, r["vs_onnxruntime"],
                              f"max diff {r['max_scaled_diff']:.1e} × max(1, |ref|); uses {ops}"))
    return out


def _coldstart(d: dict[str, Any]) -> list[Figure]:
    fresh, restart, warm = d["fresh"], d["restart"], d["warm"]
    model = f"multistyle26 @{d['variant']} {d['size']}²"
    parts = ", ".join(f"{k} {fresh[k]:.3f}" for k in ("locate", "download", "verify", "load", "compile",
                                                      "first_batch") if k in fresh)
    return [
        Figure(f"{model}: fresh worker, first result", fresh["first_result"], "s", "target (issue 5)", 2.0,
               2.0 / fresh["first_result"], f"seconds: {parts}"),
        Figure(f"{model}: restarted worker, ready before the first batch", restart["ready"], "s",
               "target (issue 5)", 0.3, 0.3 / restart["ready"], f"from the {restart.get('level', '?')}"),
        Figure(f"{model}: restarted worker vs fresh worker, ready", restart["ready"], "s", "fresh worker",
               fresh["ready"], fresh["ready"] / restart["ready"]),
        Figure(f"{model}: warm hit, ready", warm["ready"], "s", "restarted worker", restart["ready"],
               restart["ready"] / max(warm["ready"], 1e-9)),
        Figure(f"{model}: store builds the variant (once)", d["store_variant_build"], "s", "", None, None,
               f"{d.get('master_bytes', 0):,} B master → {d.get('variant_bytes', 0):,} B variant"),
    ]


def _queue(d: dict[str, Any]) -> list[Figure]:
    out = []
    runs = d.get("end_to_end") or []
    for e in runs if isinstance(runs, list) else [runs]:
        model = f"{e['model']} " if e.get("model") else ""
        out.append(Figure(f"{model}{e.get('images', '?')}-image job on one worker, {e.get('size', '?')}², "
                          f"batch {e.get('batch', '?')}", e["queue_img_s"], "img/s",
                          "engine predict_batch alone, given the same image files, same batch", e["engine_img_s"],
                          e.get("ratio", e["queue_img_s"] / e["engine_img_s"]),
                          f"target ratio ≥ {e.get('target', 0.9)}; ratio is the median of per-run ratios"
                          if "runs" in e else f"target ratio ≥ {e.get('target', 0.9)}"))
        if "ratio_decoded" in e:
            out.append(Figure(f"{model}same job, against the compute alone", e["queue_img_s"], "img/s",
                              "engine predict_batch on tensors decoded beforehand", e["engine_decoded_img_s"],
                              e["ratio_decoded"], "the stricter peer (no decoding on its side); no target"))
    s = d.get("submit")
    if s:
        out.append(Figure(f"submit a {s['images']:,}-image set", s["seconds"], "s", "target (issue 4)",
                          s.get("target_s", 3.0), s.get("target_s", 3.0) / s["seconds"]))
    c = d.get("concurrent")
    if c:
        on = c.get("on_jobs_s", c.get("batching_on_img_s"))
        off = c.get("off_jobs_s", c.get("batching_off_img_s"))
        sizes = c.get("batch_sizes_on")
        note = f"target ratio ≥ {c.get('target', 2.0)}"
        if sizes:
            note += "; batch sizes seen: " + ", ".join(f"{k}×{v}" for k, v in sizes.items())
        model = f"{c['model']}, " if c.get("model") else ""
        out.append(Figure(f"{c['jobs']} concurrent one-image jobs ({model}{c.get('size', '?')}²), batching on",
                          on, "jobs/s", "batching off (--max-batch 1)", off, c.get("speedup", on / off), note))
    return out


def _torch(d: dict[str, Any]) -> list[Figure]:
    out = []
    for row in d.get("cpu", []):
        what = f"multistyle26 {row['size']}², batch {row['batch']}: corral torch CPU predict_batch"
        out.append(Figure(what, row["images_per_s"], "img/s", "onnxruntime CPU, same threads",
                          row["ort_images_per_s"], row["vs_ort"], f"max abs diff {row['max_abs_diff_ort']:.1e}"))
        if row["batch"] > 1:
            out.append(Figure(f"multistyle26 {row['size']}², batch {row['batch']}: torch CPU predict_batch vs "
                              "for-loop", row["images_per_s"], "img/s", "for-loop of predict",
                              row["loop_images_per_s"], row["batch_vs_loop"]))
    for row in d.get("cuda", []):
        what = f"multistyle26 {row['size']}², batch {row['batch']} on {row['device']}"
        out.append(Figure(f"{what}: fp16", row["fp16_images_per_s"], "img/s", "fp32",
                          row["fp32_images_per_s"], row["fp16_images_per_s"] / row["fp32_images_per_s"],
                          f"fp16 max abs diff {row['fp16_max_abs_diff']:.1e}"))
        out.append(Figure(f"{what}: fp32 predict_batch vs for-loop", row["fp32_images_per_s"], "img/s",
                          "for-loop of predict", row["fp32_images_per_s"] / row["batch_vs_loop"],
                          row["batch_vs_loop"]))
    return out


def _compute_process(d: dict[str, Any]) -> list[Figure]:
    job, one, n = d["job"], d["one_image_jobs"], d["rounds"]
    return [
        Figure("200-image job (multistyle26 128²) over predict_batch, worker --compute process", job["process"],
               "× engine", "the same with --compute thread", job["thread"], job["ratio"],
               f"median of {n} interleaved pairs; process faster in {job['process_faster']}"),
        Figure("64 one-image jobs (multistyle26 32²), batching on, --compute process", one["process"], "jobs/s",
               "the same with --compute thread", one["thread"], one["ratio"],
               f"median of {n} interleaved pairs; process faster in {one['process_faster']}"),
    ]


def _memory(d: dict[str, Any]) -> list[Figure]:
    n = d["rounds"]
    return [Figure(f"multistyle26 {c['size']}², batch {c['batch']}: predict_batch, freed memory kept for reuse",
                   c["retained_img_s"], "img/s", "glibc's default allocator", c["default_img_s"], c["speedup"],
                   f"kernel {c['default_sys_ms']:.2f} → {c['retained_sys_ms']:.2f} ms/img; page faults "
                   f"{c['default_faults']:.0f} → {c['retained_faults']:.0f} per image; median of {n} interleaved "
                   f"turns, kept faster in {c['retained_faster']}")
            for c in d["cases"]]


def _e2e(d: dict[str, Any]) -> list[Figure]:
    out = []
    peers = {"celery": "Celery task per image + onnxruntime", "loop": "plain loop"}
    for s in d["sets"]:
        for peer, label in peers.items():
            where = ("worker started and warmed before its clock" if peer == "celery"
                     else "session made outside the clock")
            out.append(Figure(f"corral run (cold) vs {label}, {s['images']} photos at {s['size']}²",
                              s["corral_img_s"], "img/s", f"{label}, {d.get('threads', '?')} threads ({where})",
                              s[f"{peer}_img_s"], s[f"vs_{peer}"],
                              f"target ratio ≥ {s.get('targets', {}).get(peer, '?')}; median of {d['repeats']}: "
                              f"{s['corral_s']:.2f} s vs {s[f'{peer}_s']:.2f} s"
                              + (f"; corral's job alone (no start-up) {s['corral_job_img_s']:.1f} img/s"
                                 if s.get("corral_job_img_s") else "")))
    return out


KNOWN = [
    Benchmark("engine", "engine.py", [], ["--quick"], _engine),
    Benchmark("coldstart", "coldstart.py", [], [], _coldstart),
    Benchmark("coverage", "coverage.py", [], ["--quick"], _coverage),
    Benchmark("queue", "queue.py", ["--repeats", "9"], ["--images", "100", "--repeats", "1"], _queue),
    Benchmark("torch_backend", "torch_backend.py", [], ["--repeats", "2"], _torch),
    Benchmark("compute_process", "compute_process.py", [], ["--rounds", "2"], _compute_process),
    Benchmark("memory", "memory.py", [], ["--rounds", "2", "--images", "48"], _memory),
    Benchmark("e2e", "e2e.py", [], ["--quick"], _e2e),
]


# ---------------------------------------------------------------- running

def _help(script: Path) -> str:
    try:
        return subprocess.run([sys.executable, str(script), "--help"], check=False, capture_output=True, text=True,
                              timeout=120, cwd=ROOT).stdout
    except subprocess.TimeoutExpired:
        return ""


def _takes(help_text: str, flag: str) -> bool:
    return any(word.split("=")[0].strip(",[]") == flag for word in help_text.split())


def _output_flag(help_text: str) -> str | None:
    """The option the script takes for its JSON path (``--out`` or ``--json``)."""
    return next((flag for flag in ("--out", "--json") if _takes(help_text, flag)), None)


def _supported(args: list[str], help_text: str) -> list[str]:
    """``args`` without the options this version of the script does not take (and their values)."""
    kept: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg.startswith("--") and not _takes(help_text, arg):
            skip = i + 1 < len(args) and not args[i + 1].startswith("--")
            continue
        kept.append(arg)
    return kept


def run_one(script: Path, bench: Benchmark | None, quick: bool) -> Outcome:
    name = bench.name if bench else script.stem
    json_path = RESULTS / f"{name}.json"
    help_text = _help(script)
    args = _supported((bench.quick if quick else bench.full) if bench else [], help_text)
    flag = _output_flag(help_text)
    if flag:
        args = [*args, flag, str(json_path.relative_to(ROOT))]
    command = [sys.executable, str(script.relative_to(ROOT)), *args]
    json_path.unlink(missing_ok=True)
    print(f"running {shlex.join(_display(command))}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, check=False, capture_output=True, text=True, cwd=ROOT,
                              timeout=bench.timeout_s if bench else 1800)
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, stdout, stderr = -1, str(exc.stdout or ""), f"timed out after {exc.timeout} s"
    outcome = Outcome(bench, script.name, command, time.perf_counter() - started, code, stdout, stderr)
    if code != 0:
        outcome.problem = f"exit status {code}: {_tail(stderr)}"
        return outcome
    if flag and json_path.is_file():
        outcome.data = json.loads(json_path.read_text())
    if bench and outcome.data is not None:
        try:
            outcome.figures = bench.figures(outcome.data)
        except (KeyError, TypeError, AttributeError, ZeroDivisionError) as exc:
            outcome.problem = (f"its JSON no longer has the fields this report reads ({type(exc).__name__}: "
                               f"{exc}); its printed table is below. Update bench/report.py")
    elif bench:
        outcome.problem = f"wrote no JSON at {json_path.relative_to(ROOT)}; its printed table is below"
    return outcome


def _tail(text: str, lines: int = 6) -> str:
    return " / ".join(text.strip().splitlines()[-lines:])


def _display(command: list[str]) -> list[str]:
    """The command as a reader would type it from the checkout root."""
    exe = Path(command[0])
    try:
        shown = str(exe.relative_to(ROOT))
    except ValueError:
        shown = "python"
    return [shown, *command[1:]]


# ---------------------------------------------------------------- the machine

def machine() -> dict[str, str]:
    info = {"cores": str(os.cpu_count()), "cpu": platform.processor() or platform.machine(),
            "memory": "?", "gpu": "none", "os": platform.platform(), "python": platform.python_version()}
    if hasattr(os, "sched_getaffinity"):
        info["cores"] = f"{len(os.sched_getaffinity(0))} usable of {os.cpu_count()}"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory"] = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    except OSError:
        pass
    info["gpu"] = _gpu()
    return info


def _gpu() -> str:
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             check=False, capture_output=True, text=True, timeout=30)
        if smi.returncode == 0 and smi.stdout.strip():
            return "; ".join(line.strip() for line in smi.stdout.strip().splitlines())
    except (OSError, subprocess.TimeoutExpired):
        pass
    probe = ("import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "
             "'none (torch ' + torch.__version__ + ' sees no CUDA device)')")
    try:
        out = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True, timeout=120)
        if out.returncode == 0:
            return out.stdout.strip()
    except subprocess.TimeoutExpired:
        pass
    return "none (torch not installed)"


# ---------------------------------------------------------------- the report

def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    if unit == "s":
        if value < 1e-3:
            return f"{value * 1e6:.0f} µs"
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return f"{text} {unit}".strip()


def render(outcomes: list[Outcome], info: dict[str, str], quick: bool, total_s: float) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "`--quick` (smaller runs)" if quick else "full runs"
    lines = [
        "# Benchmarks",
        "",
        (f"Generated by `python bench/report.py{' --quick' if quick else ''}` on {stamp} ({mode}, "
        f"{total_s:.0f} s in all). Do not edit by hand: rerun the command."),
        "",
        ("**Caveat:** this machine is shared with other work while the benchmarks run (other test suites and "
        "builds on the same cores), so absolute figures are noisy and pessimistic; ratios measured within one "
        "benchmark (corral vs its peer, same process, same moment) are the more trustworthy numbers."),
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in info.items()),
        "",
        "## Figures",
        "",
        ("Ratio: corral's figure over its peer's, oriented so that above 1 means corral is faster "
        "(for times: the peer's time over corral's; for targets: target over measured time, or measured "
        "ratio for ratio targets)."),
        "",
    ]
    for o in outcomes:
        title = o.bench.name if o.bench else o.script
        lines += [f"### {title}", "", f"Command: `{shlex.join(_display(o.command))}` ({o.seconds:.0f} s)", ""]
        if o.problem:
            lines += [f"**Not reported:** {o.problem}", ""]
        if o.figures:
            lines += ["| figure | corral | peer | peer's figure | ratio | notes |", "|---|---:|---|---:|---:|---|"]
            for f in o.figures:
                ratio = f"{f.ratio:.2f}×" if f.ratio is not None else "–"
                lines.append(f"| {f.what} | {_num(f.value, f.unit)} | {f.peer or '–'} | "
                             f"{_num(f.peer_value, f.unit)} | {ratio} | {f.note} |")
            lines.append("")
        elif o.stdout.strip():
            lines += ["```", o.stdout.strip()[-4000:], "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs of every benchmark")
    parser.add_argument("--only", default="", help="comma-separated benchmark names (file stems) to run")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    known = {b.script: b for b in KNOWN}
    scripts = sorted(p for p in BENCH.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))
    if args.only:
        wanted = set(args.only.split(","))
        scripts = [s for s in scripts if s.stem in wanted]
    started = time.perf_counter()
    info = machine()
    load_before = os.getloadavg()
    outcomes = [run_one(s, known.get(s.name), args.quick) for s in scripts]
    info["load average (1 min) before / after"] = f"{load_before[0]:.2f} / {os.getloadavg()[0]:.2f}"
    args.out.write_text(render(outcomes, info, args.quick, time.perf_counter() - started))
    print(f"wrote {args.out}", file=sys.stderr)
    failed = [o.script for o in outcomes if o.problem]
    if failed:
        print(f"not reported: {', '.join(failed)} (see {args.out})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
