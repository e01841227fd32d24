"""The ``hwnas`` command line: parse, call the library, render. No logic of its own."""

from __future__ import annotations

import enum
import functools
import json
import random
import re
import tomllib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from hwnas.checks import signed_pct
from hwnas.errors import HwnasError, UsageError, check_out_path

if TYPE_CHECKING:  # imported where used: the CLI starts fast
    from hwnas.arch import Arch
    from hwnas.lut import LUT
    from hwnas.profiling.profile import ProfileSettings

app = typer.Typer(
    help="hwnas: hardware-aware NAS for mobile and edge networks. Latencies are milliseconds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)  # long lines stay whole (paths, commands)
# A profile whose whole-net model misses its own probe/calibration networks by more than this (mean
# %) was measured on a busy machine: 1-2 % on a quiet 2-core VM, 13.9 % beside a running search.
FIT_WARN_PCT = 5.0
# validate-lut notes a machine this much (%) faster or slower than during the profile (the shared VMs
# of this project drift 1-8 % within minutes, and 16 % between a profile and its validation once).
DRIFT_NOTE_PCT = 5.0
# hwnas profile warns when the machine's speed moved this much (%, 90th vs 10th percentile of its
# job-rounds, runner.speed_spread) during the profile: a VM whose host was busy ran 1.5x slower in stretches.
SPEED_WARN_PCT = 10.0
err = Console(stderr=True)
_state = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


class Backend(str, enum.Enum):
    onnxruntime = "onnxruntime"
    torch = "torch"


class Device(str, enum.Enum):
    cpu = "cpu"
    cuda = "cuda"


class Reading(str, enum.Enum):  # hwnas.profiling.runner.READINGS
    p10 = "p10"
    median = "median"


def user_errors(fn: F) -> F:
    """Print a user error as one line on stderr and exit non-zero; bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HwnasError as e:
            if _state["debug"]:
                raise
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted; finished work is kept (re-run the same command to resume)", highlight=False)
            raise typer.Exit(130) from None
        except OSError as e:  # a path the user gave: missing, a folder, read-only, a full disk, an unreadable image
            if _state["debug"]:
                raise
            where = f"{e.filename}: " if e.filename else ""
            err.print(
                f"[bold red]error:[/] {escape(where + (e.strerror or str(e)))}; check the path, its folder and "
                "its permissions (--debug shows where)",
                highlight=False, soft_wrap=True,
            )  # fmt: skip
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def options_given(ctx: typer.Context, exclude: set[str]) -> list[str]:
    """The options of ``ctx``'s command the user gave (on the command line or from the
    environment), other than those named in ``exclude`` (parameter names), as their flags."""
    given = {"COMMANDLINE", "ENVIRONMENT"}  # by name: typer ships its own copy of click's ParameterSource
    return [
        p.opts[0]
        for p in ctx.command.params
        if p.name not in exclude and getattr(ctx.get_parameter_source(p.name or ""), "name", None) in given
    ]


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    _state["debug"] = debug


@contextmanager
def progress_bar(
    what: str, total: int | None = None, show: bool = True, width: int = 60
) -> Iterator[Callable[[int, int, str], None]]:
    """A Rich progress bar on stderr (hidden if not ``show``); yields the ``progress(done, total,
    item)`` callback, ``item`` shown cut to ``width`` characters."""
    cols = [
        TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[item]}", style="dim"),
    ]  # fmt: skip
    with Progress(*cols, console=err, transient=False, disable=not show) as prog:
        task = prog.add_task(what, total=total, item="")

        def update(done: int, total: int, name: str) -> None:
            prog.update(task, completed=done, total=total, item=name[:width])

        yield update


def _print_refit(lut: Any) -> None:
    """Say what a LUT's refit on networks timed whole did (nothing where the profile had none)."""
    refit = lut.meta["model"].get("refit")
    if not refit:
        return
    cv, chosen = refit["cv_spearman"], refit["chosen"]
    head = f"refit on {refit['nets']} networks timed whole: "
    if chosen != "none":
        moved = (
            f"prices moved (ridge {chosen}; networks left out of the fit ranked at Spearman {cv['none']:.4f} "
            f"before, {cv[chosen]:.4f} after"
        )
        clamped = refit.get("clamped") or []
        out.print(head + moved + (f"; {len(clamped)} price(s) kept at 0)" if clamped else ")"), highlight=False)
    else:
        out.print(head + f"prices kept ({refit.get('reason', 'no refit chosen')})", highlight=False)


def _load_space(
    space: str,
    input_size: int | None,
    width_mult: float | None,
    in_channels: int | None = None,
    num_classes: int | None = None,
):
    from hwnas.space import load_space

    return load_space(space, input_size, width_mult).with_params(in_channels=in_channels, num_classes=num_classes)


SpaceOpt = Annotated[
    str,
    typer.Option(
        "--space", "-s", help="Space name (darts, proxyless, fbnet, tiny, tiny_darts) or path to a .toml space file."
    ),
]
InputSizeOpt = Annotated[
    int | None,
    typer.Option("--input-size", min=8, max=4096, help="Input height = width in pixels (default: the space's)."),
]
ChannelsOpt = Annotated[
    int | None,
    typer.Option("--in-channels", min=1, max=64, help="Input channels (default: the space's; 1 for Fashion-MNIST)."),
]
ClassesOpt = Annotated[
    int | None,
    typer.Option(
        "--num-classes", min=1, max=100000, help="Classifier outputs (default: the space's; 10 for Fashion-MNIST)."
    ),
]
WidthOpt = Annotated[
    float | None,
    typer.Option("--width-mult", min=0.05, max=4.0, help="Channel width multiplier (default: the space's)."),
]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", min=1, max=256, help="Intra-op threads, fixed for all timing.")
]
BatchOpt = Annotated[int | None, typer.Option("--batch", min=1, max=4096, help="Batch size timed.")]
RoundsOpt = Annotated[
    int | None,
    typer.Option(
        "--rounds",
        min=1,
        max=50,
        help="Time-separated rounds; a figure is the median over rounds of each round's reading.",
    ),
]


@app.command()
@user_errors
def profile(
    ctx: typer.Context,
    space: SpaceOpt = "proxyless",
    device: Annotated[Device | None, typer.Option(help="cpu, or cuda (needs a GPU).")] = None,
    backend: Annotated[Backend | None, typer.Option(help="onnxruntime or torch (eager).")] = None,
    threads: ThreadsOpt = None,
    batch: BatchOpt = None,
    rounds: RoundsOpt = None,
    max_rounds: Annotated[
        int | None,
        typer.Option(
            "--max-rounds",
            min=1,
            max=50,
            help="Then more rounds of the networks, up to this many, while a whole network's median over rounds is uncertain by "
            "more than steady_pct (2 %; a noisy machine). Default 5; at --rounds or below, exactly --rounds.",
        ),
    ] = None,
    reading: Annotated[
        Reading | None,
        typer.Option(
            help="A round's reading of a model: the 10th percentile of its runs (default; a shared machine's slow "
            "stretches within a round leave it alone) or their median (a dedicated board). Blocks under 50 µs "
            "inside a network are read at the median either way (block_reading in a --target file)."
        ),
    ] = None,
    calib_nets: Annotated[
        int | None,
        typer.Option(
            "--calib-nets",
            min=0,
            max=500,
            help="Random networks measured whole to calibrate the whole-net model (besides the probe networks).",
        ),
    ] = None,
    refit_nets: Annotated[
        int | None,
        typer.Option(
            "--refit-nets",
            min=0,
            max=2000,
            help="Random networks timed whole whose times refit every price (default 0: none). 150 lifted DARTS @ 32 "
            "rank correlation against a fresh validation from 0.988-0.993 to 0.991-0.995, for about 0.7 s a network.",
        ),
    ] = None,
    input_size: InputSizeOpt = None,
    width_mult: WidthOpt = None,
    in_channels: ChannelsOpt = None,
    num_classes: ClassesOpt = None,
    spinning: Annotated[
        bool | None,
        typer.Option(
            "--spinning/--no-spinning",
            help="ONNX Runtime pool threads spin when idle (default: on with more than 1 thread, as ORT deploys; a 50 ms cool-down separates models).",
        ),
    ] = None,
    target: Annotated[
        Path | None, typer.Option(help="A target profile (profilers/*.toml) with these settings; flags override it.")
    ] = None,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="LUT CSV to write (default: latency_tables/<target>__<space>-<size>.csv)."),
    ] = None,
    emit_onnx: Annotated[
        Path | None,
        typer.Option(
            "--emit-onnx",
            help="Write the per-op models and probe networks for profilers/ort_runner.py to DIR instead of timing here.",
        ),
    ] = None,
    import_csv: Annotated[
        Path | None,
        typer.Option(
            "--import",
            help="Turn ort_runner.py's times.csv (beside its manifest; or give that folder) into a LUT. The space "
            "and settings are the manifest's; only --reading may be chosen anew.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing LUT (or an --emit-onnx folder's models).")] = False,
) -> None:
    """Measure a latency table (LUT) for every op a space can ask for, on this machine.

    Example: hwnas profile --space proxyless --device cpu --backend onnxruntime --threads 1
    """
    from hwnas.profiling.profile import ProfileSettings, check_target, default_lut_path, import_results
    from hwnas.profiling.profile import emit_onnx as emit
    from hwnas.profiling.profile import profile as run_profile
    from hwnas.profiling.runner import TimingSettings

    settings: dict[str, Any] = load_target(target) if target else {}
    given = {"device": device.value if device else None, "backend": backend.value if backend else None,
             "threads": threads, "batch": batch, "rounds": rounds, "max_rounds": max_rounds, "calib_nets": calib_nets,
             "refit_nets": refit_nets, "spinning": spinning, "reading": reading.value if reading else None}  # fmt: skip
    settings.update({k: v for k, v in given.items() if v is not None})
    settings["timing"] = TimingSettings(**settings.get("timing", {}))
    s = ProfileSettings(**settings)
    if import_csv is not None:
        unused = options_given(ctx, exclude={"import_csv", "out_path", "force", "reading"})
        if unused:
            raise UsageError(
                f"--import takes the space and settings from the --emit-onnx manifest and the runner's record, not "
                f"from {', '.join(unused)}; drop them (other threads: `python ort_runner.py FOLDER --threads N` on "
                "the target; another space or size: --emit-onnx again)"
            )
        if out_path is None:
            raise UsageError("--import needs --out for the LUT it writes")
        check_out_path(out_path, force)
        lut = import_results(import_csv, out_path, reading=reading.value if reading else None)
        out.print(f"wrote {out_path} ({len(lut.table)} keys, {lut.describe()})")
        _print_refit(lut)
        return
    sp = _load_space(space, input_size, width_mult, in_channels, num_classes)
    if emit_onnx is not None:
        if out_path is not None:
            raise UsageError(
                f"--emit-onnx writes no LUT, so --out has nothing to take: the runner writes {emit_onnx / 'times.csv'}, "
                "and `hwnas profile --import` takes --out"
            )
        if emit_onnx.exists() and not emit_onnx.is_dir():
            raise UsageError(f"--emit-onnx {emit_onnx} is a file; --emit-onnx takes the folder to write")
        if (emit_onnx / "manifest.json").exists() and not force:
            raise UsageError(
                f"{emit_onnx} already holds models and a manifest (a board's times.csv may rely on them); pass "
                "--force to overwrite them or choose another --emit-onnx folder"
            )
        n = emit(sp, s, emit_onnx)
        out.print(
            f"wrote {n} ONNX models and manifest.json to {emit_onnx}\n"
            f"next, on the target: python profilers/ort_runner.py {emit_onnx}\n"
            f"then: hwnas profile --import {emit_onnx / 'times.csv'} --out LUT.csv"
        )
        return
    check_target(s)  # before any output: --device cuda without a GPU is one line
    path = out_path or default_lut_path(sp, s)
    work = path.with_name(path.name + ".work")
    if not work.exists():
        check_out_path(path, force)
    with progress_bar(f"profile {sp.describe()}") as update:
        lut = run_profile(sp, s, path, update)
    model = lut.meta["model"]
    out.print(
        f"wrote {path}: {len(lut.table)} keys, {lut.describe()}, {lut.meta['profile_seconds']:.1f} s\n"
        f"whole-net model: predicted = {model['scale']:.4f} x sum + {model['overhead_ms']:.4f} ms "
        f"(fit on {len(model['nets'])} nets, mean error {model['fit_mape_pct']:.2f}%)"
        + (
            f"; {model['kernel_ms'] * 1e3:.2f} us per kernel removed from each block (the node profiler's own cost)"
            if model.get("kernel_ms")
            else ""
        )
        + (
            f"; each block priced {model['isolated_share'] * 100:.0f} % by its time alone, "
            f"{(1 - model['isolated_share']) * 100:.0f} % by its time in the networks (that predicted the "
            "profile's networks better when each was left out of the fit)"
            if model.get("isolated_share")
            else ""
        )
    )
    _print_refit(lut)
    spread = lut.meta.get("round_spread") or {}
    if spread.get("sd_pct") is not None:
        out.print(
            f"{spread['rounds']} rounds (of {spread['min_rounds']}-{spread['max_rounds']}): a whole network moved "
            f"{spread['sd_pct']:.1f} % from round to round after the speed correction, so its median is within "
            f"about ±{spread['se_pct']:.1f} %"
            + ("" if spread["steady"] else f" (more than the {spread['steady_pct']:g} % aimed at: a noisy machine)"),
            highlight=False,
        )
    speed = lut.meta.get("machine_speed")
    if speed and speed["p90"] / speed["p10"] - 1 >= SPEED_WARN_PCT / 100:
        err.print(
            f"warning: the machine's speed moved by {(speed['p90'] / speed['p10'] - 1) * 100:.0f} % during the profile "
            "(90th vs 10th percentile of its job-rounds): each reading was corrected for it, but the LUT's level is "
            "this machine's median speed over the run; profile on a quiet machine for figures to trust",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if (model.get("fit_mape_pct") or 0.0) > FIT_WARN_PCT:
        err.print(
            f"warning: the whole-net model misses the networks it was fitted on by {model['fit_mape_pct']:.1f} % on "
            f"average (a quiet machine gives about 1-2 %): something else ran meanwhile, or the host of a shared VM "
            f"was busy; re-run the profile on a quiet machine, and check with `hwnas validate-lut --lut {path}`",
            highlight=False,
            soft_wrap=True,
        )


def load_target(path: Path) -> dict[str, Any]:
    """Settings from a target profile TOML (keys of ProfileSettings; a [timing] table)."""
    from hwnas.profiling.profile import ProfileSettings

    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--target {path}: no such file (see profilers/ for examples)") from None
    except IsADirectoryError:
        raise UsageError(f"--target {path}: is a directory; pass a target profile TOML (see profilers/)") from None
    except OSError as e:
        raise UsageError(
            f"--target {path}: cannot be read ({e.strerror}); check the path and its permissions"
        ) from None
    except UnicodeDecodeError:
        raise UsageError(f"--target {path}: not a text file; a target profile is UTF-8 TOML (see profilers/)") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"--target {path}: not valid TOML ({e})") from None
    allowed = set(ProfileSettings.__dataclass_fields__) | {"name", "description"}
    extra = sorted(set(raw) - allowed)
    if extra:
        raise UsageError(f"--target {path}: unknown field(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}")
    raw.pop("name", None)
    raw.pop("description", None)
    _check_target_values(path, raw)
    return raw


def _check_target_values(path: Path, raw: dict[str, Any]) -> None:
    """Types and ranges of a target profile's values (bool is not a number, 2.5 is not a count)."""
    from dataclasses import fields

    from hwnas.checks import is_int, is_number
    from hwnas.profiling.runner import BLOCK_READINGS, READINGS, TimingSettings

    def bad(key: str, value: Any, want: str) -> UsageError:
        return UsageError(f"--target {path}: {key} must be {want}, got {value!r}")

    for key, lo, hi in (("threads", 1, 256), ("batch", 1, 4096), ("rounds", 1, 50), ("max_rounds", 1, 50),
                        ("calib_nets", 0, 500), ("refit_nets", 0, 2000), ("seed", 0, None)):  # fmt: skip  # the command-line options' bounds
        if key in raw and not is_int(raw[key], lo):
            raise bad(key, raw[key], f"an integer >= {lo}")
        if key in raw and hi is not None and raw[key] > hi:
            raise bad(key, raw[key], f"an integer <= {hi}")
    for key in ("backend", "device", "reading", "block_reading"):
        if key in raw and not isinstance(raw[key], str):
            raise bad(key, raw[key], "a string")
    for key, allowed in (("reading", READINGS), ("block_reading", BLOCK_READINGS)):
        if key in raw and raw[key] not in allowed:
            raise bad(key, raw[key], f"one of {', '.join(allowed)}")
    if "spinning" in raw and not isinstance(raw["spinning"], bool):
        raise bad("spinning", raw["spinning"], "true or false")
    if "steady_pct" in raw and not (is_number(raw["steady_pct"]) and raw["steady_pct"] > 0):
        raise bad("steady_pct", raw["steady_pct"], "a number above 0 (percent)")
    timing = raw.get("timing", {})
    if not isinstance(timing, dict):
        raise bad("timing", timing, "a table ([timing])")
    counts = {f.name for f in fields(TimingSettings) if f.type in (int, "int")}
    known = {f.name for f in fields(TimingSettings)}
    for key, v in timing.items():
        if key not in known:
            raise UsageError(f"--target {path}: unknown field timing.{key}; allowed: {', '.join(sorted(known))}")
        least = 1 if key in ("min_runs", "max_runs", "profile_runs") else 0  # a reading needs a run
        if key in counts and not is_int(v, least):
            raise bad(f"timing.{key}", v, f"a whole number >= {least}")
        if key not in counts and not (is_number(v) and v >= 0):
            raise bad(f"timing.{key}", v, "a number >= 0")


@app.command()
@user_errors
def sample(
    space: SpaceOpt = "proxyless",
    n: Annotated[int, typer.Option("--n", "-n", min=1, max=100000, help="How many architectures.")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 0,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for arch_000.json, ...")] = Path(
        "runs/samples"
    ),
    input_size: InputSizeOpt = None,
    width_mult: WidthOpt = None,
    in_channels: ChannelsOpt = None,
    num_classes: ClassesOpt = None,
    force: Annotated[bool, typer.Option(help="Overwrite existing files.")] = False,
) -> None:
    """Write N random valid architectures of a space as arch JSON, one file each (shaped as the
    LUT that prices them was profiled: the same --input-size, --width-mult, --in-channels and
    --num-classes).

    Example: hwnas sample --space proxyless --n 5 --seed 0 --out runs/samples
    """
    from hwnas.lut import atomic_write

    sp = _load_space(space, input_size, width_mult, in_channels, num_classes)
    rng = random.Random(seed)
    paths = [out_dir / f"arch_{i:03d}.json" for i in range(n)]
    clash = [p for p in paths if p.exists()]
    if clash and not force:
        raise UsageError(f"{clash[0]} exists; pass --force to overwrite or choose another --out")
    archs = [  # all drawn before any is written: a space that cannot be sampled leaves no files behind
        sp.sample(rng).with_info(sampled_from=sp.name, seed=seed, index=i, width_mult=sp.width_mult) for i in range(n)
    ]
    for p, arch in zip(paths, archs, strict=True):
        atomic_write(p, arch.to_json().encode())
    out.print(f"wrote {n} architectures of {sp.describe()} to {out_dir}")


def _is_onnx(path: Path) -> bool:
    return path.suffix.lower() == ".onnx"


def _arch_or_onnx(path: Path):
    """The arch of an arch JSON, or of an ONNX file written by ``hwnas export`` (its metadata)."""
    from hwnas.arch import Arch

    if _is_onnx(path):
        from hwnas.export import arch_from_onnx

        return arch_from_onnx(path)
    return Arch.load(path)


@app.command()
@user_errors
def predict(
    archs: Annotated[
        list[Path],
        typer.Argument(
            help="Arch JSON(s) (from hwnas sample or hwnas search), or ONNX files from hwnas export.",
            metavar="ARCH...",
        ),
    ],
    lut: Annotated[Path, typer.Option("--lut", "-l", help="LUT CSV from hwnas profile.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (with the per-block breakdown; a list for several archs).")
    ] = False,
) -> None:
    """Predict networks' latency on the LUT's target (an exported ONNX file: the arch in its metadata).

    Several archs: one line each (or a JSON list), the LUT read once; every file is read before
    anything is printed, so a bad one is named and nothing else is printed.

    Example: hwnas predict runs/samples/*.json --lut latency_tables/cpu-onnxruntime-t1__proxyless-224.csv
    """
    from hwnas.flops import count
    from hwnas.lut import LUT

    table = LUT.load(lut)
    nets = [(path, _arch_or_onnx(path)) for path in archs]
    results = [(path, a, table.predict(a)) for path, a in nets]  # any missing key fails before printing
    for note in dict.fromkeys(n for _, a, _ in results if (n := table.space_note(a))):
        err.print(note, highlight=False, soft_wrap=True)
    docs, details = [], []
    for path, a, p in results:
        cost = count(a)
        docs.append({"arch": str(path), "lut": str(lut), "lut_sha256": table.sha256, **p.to_dict(),
                     "macs": cost.macs, "params": cost.params})  # fmt: skip
        details.append(f"({len(p.blocks)} blocks, sum {p.sum_ms:.3f} ms; {cost.describe()})")
    if as_json:
        out.print_json(json.dumps(docs[0] if len(docs) == 1 else docs))
    elif len(results) == 1:
        out.print(f"{results[0][2].total_ms:.3f} ms predicted on {table.describe()}  {details[0]}")
    else:
        out.print(f"predicted on {table.describe()}:")
        width = max(len(str(path)) for path in archs)
        for (path, _, p), detail in zip(results, details, strict=True):
            out.print(f"{path!s:<{width}}  {p.total_ms:8.3f} ms  {detail}", markup=False)  # a path may hold [..]


@app.command()
@user_errors
def measure(
    models: Annotated[
        list[Path],
        typer.Argument(
            help="Arch JSON(s), or ONNX files (ONNX Runtime only; --lut needs ones from hwnas export, whose metadata "
            "holds the arch).",
            metavar="MODEL...",
        ),
    ],
    device: Annotated[Device | None, typer.Option(help="cpu or cuda (default: the LUT's, else cpu).")] = None,
    backend: Annotated[
        Backend | None, typer.Option(help="onnxruntime or torch (default: the LUT's, else onnxruntime).")
    ] = None,
    threads: ThreadsOpt = None,
    batch: BatchOpt = None,
    rounds: RoundsOpt = None,
    lut: Annotated[
        Path | None,
        typer.Option("--lut", "-l", help="Take the settings from this LUT and print its prediction beside."),
    ] = None,
    references: Annotated[
        bool,
        typer.Option(
            "--references/--no-references",
            help="With --lut: time the networks the LUT's profile timed whole (probe and calibration) in the same "
            "rounds, and give the network's time also at the machine speed of the profile (the figure its "
            "prediction compares with).",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (a list for several models).")] = False,
) -> None:
    """Build (or load) whole networks and time them end to end, with the same settings as a LUT.

    Several models are timed in the same rounds (each round in its own order), so their figures
    compare with each other; with --lut the LUT's reference networks (its probe and calibration
    networks) are timed once beside them all.

    Example: hwnas measure runs/samples/arch_000.json --device cpu --backend onnxruntime --threads 1
    """
    from hwnas.lut import LUT
    from hwnas.measure import device_note, measure_beside, settings_from_lut
    from hwnas.profiling.profile import ProfileSettings, check_target

    over = {"device": device.value if device else None, "backend": backend.value if backend else None,
            "threads": threads, "batch": batch, "rounds": rounds}  # fmt: skip
    table = LUT.load(lut) if lut else None
    s = (
        settings_from_lut(table, **over)
        if table
        else ProfileSettings(**{k: v for k, v in over.items() if v is not None})
    )
    check_target(s)
    note = device_note(table, s) if table else None
    if note:
        err.print(note, highlight=False)
    refs = _reference_nets(table) if table is not None and references else []
    with ExitStack() as stack:
        loaded = [_timing_input(m, table, s, stack) for m in models]  # every file read before anything is timed
        for n in dict.fromkeys(n for _, _, n in loaded if n):
            err.print(n, highlight=False, soft_wrap=True)
        with progress_bar("measure") as update:
            times, drift = measure_beside([t for t, _, _ in loaded], refs, s, update)
    docs = []
    for model, ms, (_, pred, _) in zip(models, times, loaded, strict=True):
        then = ms / drift if drift else None
        docs.append({"model": str(model), "measured_ms": ms, "predicted_ms": pred, "settings": asdict(s),
                     "drift": drift, "measured_at_profile_speed_ms": then, "references": len(refs)})  # fmt: skip
    if as_json:
        out.print_json(json.dumps(docs[0] if len(docs) == 1 else docs))
        return
    how = f"({s.backend}, {s.device}, {s.threads} thread(s), batch {s.batch}, {s.reading} of runs)"
    speed = (
        f"its {len(refs)} reference networks, timed alongside, ran {signed_pct(drift - 1)} % vs then" if drift else ""
    )

    def figures(d: dict[str, Any], at: str) -> str:
        """The network's time at the profile's speed and the prediction beside, as far as known."""
        then, pred = d["measured_at_profile_speed_ms"], d["predicted_ms"]
        text = f"; {then:.3f} ms {at}" if then is not None else ""
        if pred is not None:
            text += f"; predicted {pred:.3f} ms ({signed_pct(pred / (then or d['measured_ms']) - 1)}%)"
        return text

    if len(docs) == 1:
        line = f"{docs[0]['measured_ms']:.3f} ms measured {how}"
        out.print(line + figures(docs[0], f"at the profile's machine speed ({speed})"))
        return
    out.print(f"measured {how}" + (f"; at the profile's machine speed: {speed}" if speed else "") + ":")
    width = max(len(str(m)) for m in models)
    for model, d in zip(models, docs, strict=True):
        out.print(
            f"{model!s:<{width}}  {d['measured_ms']:8.3f} ms" + figures(d, "at the profile's speed"), markup=False
        )
    if len(docs) >= 3 and all(d["predicted_ms"] is not None for d in docs):  # the LUT on these networks
        from hwnas.measure import Fidelity

        f = Fidelity([d["predicted_ms"] for d in docs], times, drift, None).summary()
        c = f.get("corrected", f)
        at = " at the profile's speed" if drift else ""
        out.print(
            f"prediction vs measured{at}: MAPE "
            f"{c['mape_pct']:.2f} %, max {c['max_error_pct']:.2f} %, {c['within_5pct'] * 100:.0f} % within ±5 %, "
            f"Spearman {c['spearman']:.4f} ({len(docs)} networks)"
        )


def _timing_input(
    model: Path, table: LUT | None, s: ProfileSettings, stack: ExitStack
) -> tuple[Any, float | None, str | None]:
    """What ``measure`` times for ``model`` (an arch, or a loader of an ONNX file, its temporary copy
    kept open on ``stack``), the LUT's prediction for it and a note on its space, as far as known."""
    from hwnas.measure import onnx_loader

    if not _is_onnx(model):
        a = _arch_or_onnx(model)
        return a, (table.predict(a).total_ms if table else None), (table.space_note(a) if table else None)
    from hwnas.export import arch_from_metadata, read_metadata, timing_copy

    meta = read_metadata(model)  # one line if missing or not ONNX
    pred = None
    if table is not None:  # the prediction needs the arch: from the metadata of hwnas export
        fix = "measure it without --lut, or pass the arch JSON"
        pred = table.predict(arch_from_metadata(meta, str(model), fix)).total_ms
    # a dynamic batch axis is timed at the settings' batch
    load = onnx_loader(stack.enter_context(timing_copy(model, s.batch)), s, shown=model)
    load()  # a file ONNX Runtime cannot load is one line now, not under a progress bar
    return load, pred, None


def _reference_nets(table: LUT) -> list[tuple[Arch, float]]:
    """The LUT's probe and calibration networks and their recorded times
    (:func:`hwnas.measure.reference_nets`); none, with a note, when the LUT's space file is not at
    hand."""
    from hwnas.measure import reference_nets
    from hwnas.profiling.profile import space_from_meta

    try:
        return reference_nets(space_from_meta(table.meta), table)
    except HwnasError as e:
        err.print(f"note: no reference networks ({e}); the figure is this machine's speed now", highlight=False)
        return []


@app.command()
@user_errors
def export(
    out_path: Annotated[
        Path, typer.Option("--out", "-o", help="ONNX file to write (with --check-only: the file to check).")
    ],
    arch: Annotated[
        Path | None,
        typer.Argument(help="Arch JSON (hwnas search or sample); optional with --check-only."),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option("--weights", "-w", help="Weights from hwnas train (default: untrained, random init)."),
    ] = None,
    lut: Annotated[
        Path | None,
        typer.Option("--lut", "-l", help="Record and print this LUT's prediction; time with its settings."),
    ] = None,
    check_only: Annotated[
        bool,
        typer.Option(
            "--check-only", help="Re-verify an existing file instead (with --weights: output parity with torch)."
        ),
    ] = False,
    force: Annotated[bool, typer.Option(help="Overwrite an existing ONNX file.")] = False,
    time_it: Annotated[
        bool, typer.Option("--time/--no-time", help="Time the ONNX file and the torch network end to end.")
    ] = True,
    device: Annotated[
        Device | None, typer.Option(help="cpu or cuda for timing (default: the LUT's, else cpu).")
    ] = None,
    threads: ThreadsOpt = None,
    batch: BatchOpt = None,
    rounds: RoundsOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the random init when no --weights are given.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Export a derived network to ONNX, verified against torch, with its arch in the metadata.

    Example: hwnas export runs/proxyless-binary-5ms/arch.json --weights runs/proxyless-binary-5ms/train/best.pt -o model.onnx --lut latency_tables/cpu-onnxruntime-t1__proxyless-224-1ch-10cls.csv
    """
    from hwnas.arch import Arch
    from hwnas.export import PARITY_ATOL, check_model, export_model, time_result
    from hwnas.lut import LUT
    from hwnas.measure import device_note, settings_from_lut
    from hwnas.profiling.profile import ProfileSettings, check_target

    if check_only:
        r = check_model(out_path, Arch.load(arch) if arch else None, weights)
        if as_json:
            out.print_json(json.dumps(r.to_dict()))
            return
        lines = [f"checked {out_path}:", *(f"  ok: {c}" for c in r.checked)]
        lines += [f"  not checked: {u}" for u in r.unchecked]
        out.print("\n".join(lines), highlight=False)
        return
    if arch is None:
        raise UsageError("export needs the arch JSON: hwnas export ARCH -o MODEL.onnx (only --check-only goes without)")
    check_out_path(out_path, force, "-o")  # before any work
    a = Arch.load(arch)
    table = LUT.load(lut) if lut else None
    over = {"device": device.value if device else None, "threads": threads, "batch": batch, "rounds": rounds}
    given = {k: v for k, v in over.items() if v is not None}
    s = settings_from_lut(table, **over) if table else ProfileSettings(**given)
    if time_it:
        check_target(s)
        note = device_note(table, s) if table else None
        if note:
            err.print(note, highlight=False)
    r = export_model(a, out_path, weights, table, force, seed)
    for n in r.notes:
        err.print(n, highlight=False)
    if time_it:
        refs = _reference_nets(table) if table is not None else []
        with progress_bar("time ONNX Runtime and torch") as update:
            time_result(r, s, update, refs)
    if as_json:
        out.print_json(json.dumps(r.to_dict()))
        return
    w = r.weights
    if r.trained:
        acc = f", test accuracy {w['test_acc'] * 100:.2f}%" if w.get("test_acc") is not None else ""
        wdesc = f"trained weights {w['file']} (epoch {w['epoch']}{acc})"
    else:
        wdesc = f"UNTRAINED weights (random init, seed {seed}; pass --weights from hwnas train)"
    c, h = r.arch.input[0], r.arch.input[1]
    lines = [
        f"wrote {r.path} ({r.bytes / 1e6:.2f} MB, ONNX opset {r.opset}, input batch x {c} x {h} x {h}, batch axis dynamic)",
        f"  network: {r.arch.kind} arch of space {r.arch.space}, {wdesc}",
        f"  batch norm: {r.bn_folded} folded into convolutions, {r.bn_left} left in the graph",
        f"  verified: onnx.checker ok; ONNX Runtime vs torch max |diff| {r.max_abs_diff:.2g} <= {PARITY_ATOL:g} "
        f"at batch {', '.join(map(str, r.batches))}",
        f"  cost: {r.macs / 1e6:.1f} M MACs, {r.params / 1e6:.3f} M params",
    ]
    if r.measured_ms is not None and r.torch_ms is not None:
        measured = r.measured_ms if s.backend == "onnxruntime" else r.torch_ms
        lat = f"  latency ({s.backend}, {s.device}, {s.threads} thread(s), batch {s.batch}): measured {measured:.3f} ms"
        if r.drift:  # compare the prediction and the budget with the network at the profile's speed
            measured /= r.drift
            lat += f" ({measured:.3f} ms at the profile's machine speed: its reference networks ran {signed_pct(r.drift - 1)} %)"
        if r.predicted_ms is not None:
            lat += f", predicted {r.predicted_ms:.3f} ms ({signed_pct(r.predicted_ms / measured - 1)}%)"
        if r.budget_ms is not None:
            lat += f", budget {r.budget_ms:.3f} ms (measured {'within' if measured <= r.budget_ms else 'OVER'})"
        lines.append(lat)
        lines.append(
            f"  ONNX Runtime {r.measured_ms:.3f} ms vs torch eager {r.torch_ms:.3f} ms: ORT/torch {r.measured_ms / r.torch_ms:.2f}x"
        )
    else:
        if r.predicted_ms is not None:
            lines.append(f"  predicted {r.predicted_ms:.3f} ms on {r.lut} (not timed: --no-time)")
        if r.budget_ms is not None:
            lines.append(f"  budget {r.budget_ms:.3f} ms")
    lines.append(f"  metadata: {', '.join('hwnas.' + k for k in r.meta)}")
    out.print("\n".join(lines), highlight=False)


@app.command("validate-lut")
@user_errors
def validate_lut(
    lut: Annotated[Path, typer.Option("--lut", "-l", help="LUT CSV to check.")],
    space: Annotated[str | None, typer.Option("--space", "-s", help="Space to sample (default: the LUT's).")] = None,
    nets: Annotated[int, typer.Option("--nets", min=3, max=10000, help="Random networks to measure.")] = 50,
    seed: Annotated[
        int, typer.Option(help="Seed of the random networks (use one the profile did not calibrate on).")
    ] = 1000,
    rounds: RoundsOpt = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the report and per-net figures as JSON here.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --json file.")] = False,
    also: Annotated[
        list[Path] | None,
        typer.Option(
            "--also",
            metavar="<path>",
            help="An earlier --json report of the same networks (same space, size, --seed, --nets), from another "
            "occasion: also judge the LUT against all measurements combined. Repeatable.",
        ),
    ] = None,
) -> None:
    """Fidelity report: N random networks, measured end to end vs predicted by the LUT.

    Example: hwnas validate-lut --lut latency_tables/cpu-onnxruntime-t1__proxyless-224.csv --nets 50
    """
    from hwnas.lut import LUT, atomic_write, meta_path
    from hwnas.measure import (
        LEVEL_EVERY,
        VALIDATION_ROUNDS,
        device_note,
        earlier_measurement,
        fidelity,
        report_fields,
        settings_from_lut,
        validation_archs,
    )
    from hwnas.profiling.profile import space_from_meta

    if json_out:
        if json_out.resolve() in {lut.resolve(), meta_path(lut).resolve()}:
            raise UsageError(f"--json {json_out} is the LUT itself; name another file for the report")
        check_out_path(json_out, force, "--json")  # before minutes of measuring
    table = LUT.load(lut)
    m = table.meta
    sp = space_from_meta({**m, "space_source": space} if space else m)  # --space: the LUT's space, another file
    s = settings_from_lut(table, rounds=rounds or max(VALIDATION_ROUNDS, int(table.meta.get("rounds", 3))))
    archs = validation_archs(sp, nets, seed)
    recorded = report_fields(sp, archs, s)
    seen: set[Path] = set()
    for p in also or []:
        if p.resolve() in seen:
            raise UsageError(f"--also {p} is given twice; each earlier measurement counts once")
        if json_out and p.resolve() == json_out.resolve():
            raise UsageError(f"--also {p} is also the --json report; name another file for the report")
        seen.add(p.resolve())
    earlier = [
        earlier_measurement(p, recorded["archs_sha256"], seed, nets, recorded["target"]) for p in also or []
    ]  # before minutes of measuring
    note = device_note(table, s)
    if note:
        err.print(note, highlight=False)
    with progress_bar(f"measure {nets} nets") as update:
        f = fidelity(sp, table, archs, s, update)
    r = f.summary()
    combined = f.against(earlier, table, sp) if earlier else None
    t = Table(title=f"LUT fidelity: {table.describe()}")
    t.add_column("figure")
    t.add_column("raw", justify="right")
    t.add_column("drift-corrected", justify="right")
    pct = "{:.2f} %".format
    share = lambda v: f"{v * 100:.0f} %"  # noqa: E731
    corr = "{:.4f}".format
    figures = (
        ("MAPE", "mape_pct", pct), ("max |error|", "max_error_pct", pct), ("within ±5%", "within_5pct", share),
        ("within ±10%", "within_10pct", share), ("Spearman", "spearman", corr), ("Kendall", "kendall", corr),
        ("mean bias", "bias_pct", "{:+.2f} %".format),
    )  # fmt: skip

    def figure_rows(fig: dict[str, Any]) -> list[tuple[str, str, str]]:  # raw, and drift-corrected where known
        c = fig.get("corrected", {})
        return [(name, fmt(fig[key]), fmt(c[key]) if key in c else "n/a") for name, key, fmt in figures if key in fig]

    rows = [
        ("networks", f"{r['nets']}", ""),
        *figure_rows(r),
        ("machine drift since profile", f"{(r['drift'] - 1) * 100:+.2f} %" if r.get("drift") else "n/a", ""),
        ("measured range", f"{r['measured_range_ms'][0]:.3f} - {r['measured_range_ms'][1]:.3f} ms", ""),
        ("profile time", f"{r['profile_seconds']:.1f} s" if r["profile_seconds"] is not None else "n/a", ""),
    ]  # fmt: skip
    rep = r.get("repeatability")
    if rep:
        rho = f"{rep['spearman']:.4f}" if rep["spearman"] is not None else "n/a"
        rows.append((
            "repeatability (even vs odd rounds)",
            f"{rep['mean_diff_pct']:.2f} % mean, {rep['max_diff_pct']:.2f} % max, Spearman {rho}", "",
        ))  # fmt: skip
        if rep.get("spearman_ceiling") is not None:  # what this measurement's own noise leaves of rank
            rows.append(("Spearman of a perfect LUT", f"about {rep['spearman_ceiling']:.4f}", ""))
    raw = r.get("as_timed")
    if raw:
        raw_rep = raw.get("repeatability")
        rows.append((
            "as timed (no speed correction)",
            f"MAPE {raw['mape_pct']:.2f} %, Spearman {raw['spearman']:.4f}"
            + (f", repeatability {raw_rep['mean_diff_pct']:.2f} % mean" if raw_rep else ""), "",
        ))  # fmt: skip
    for row in rows:
        t.add_row(*row)
    out.print(t)
    if combined:
        ag = combined["agreement"]
        k = ag["measurements"]
        t2 = Table(title=f"against {k} measurements combined (this one, --also)")
        t2.add_column("figure")
        t2.add_column("raw", justify="right")
        t2.add_column("drift-corrected", justify="right")
        for row in figure_rows(combined):
            t2.add_row(*row)
        ceil = " / ".join("n/a" if v is None else f"{v:.4f}" for v in (ag["ceiling_one"], ag["ceiling_combined"]))
        t2.add_row("measurements vs each other", f"Spearman {ag['spearman_min']:.4f}-{ag['spearman_max']:.4f}", "")
        t2.add_row("perfect LUT: one / all", f"about {ceil}", "")
        lv = combined.get("level")
        if lv:  # where the drift-corrected column's level was read
            t2.add_row(
                "level (drift) read on",
                f"all {k} measurements" if lv["from"] == LEVEL_EVERY
                else f"this one only ({sum(d is None for d in lv['drifts'])} without this LUT's references)",
                "",
            )  # fmt: skip
        out.print(t2)
    if rep and rep["mean_diff_pct"] >= 2.0:
        err.print(
            f"note: the measurements disagree with themselves by {rep['mean_diff_pct']:.1f} % on average (even vs "
            "odd rounds): errors of that order are this machine's noise, not the LUT's; measure on a quieter "
            "machine or with more --rounds",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    drift = r.get("drift")
    if drift and abs(drift - 1) * 100 >= DRIFT_NOTE_PCT:
        err.print(
            f"note: this machine runs {abs(drift - 1) * 100:.1f} % {'slower' if drift > 1 else 'faster'} now than "
            "when the LUT was profiled (its reference networks, re-measured in the same rounds): the raw figures "
            "include that, the drift-corrected ones leave it out; profile and validate in one quiet stretch",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if json_out:
        doc = {
            "lut": str(lut),
            "lut_sha256": table.sha256,  # what hwnas report matches against the run's LUT
            "seed": seed,
            **recorded,  # which networks, measured how: what --also matches a later report against
            **r,
            **({"combined": {**combined, "also": [str(p) for p in also or []]}} if combined else {}),
            **f.record(),
        }
        atomic_write(json_out, (json.dumps(doc, indent=2) + "\n").encode())


class StrategyName(str, enum.Enum):
    softmax = "softmax"
    binary = "binary"
    gumbel = "gumbel"


class LossName(str, enum.Enum):
    add = "add"
    mul_log = "mul-log"
    hinge = "hinge"


@app.command()
@user_errors
def search(
    lut: Annotated[
        Path,
        typer.Option(
            "--lut", "-l", help="LUT of the target (hwnas profile ... --in-channels/--num-classes of the data set)."
        ),
    ],
    latency_budget: Annotated[
        str,
        typer.Option(
            "--latency-budget",
            "-b",
            help="Budget: 20ms, '20 ms', 0.02s, 20000us; a bare number means ms; p50 = the median latency of random networks of the space on this LUT.",
        ),
    ],
    space: SpaceOpt = "proxyless",
    strategy: Annotated[
        StrategyName, typer.Option(help="softmax (DARTS), binary (ProxylessNAS) or gumbel (FBNet; --hard: GDAS).")
    ] = StrategyName.binary,
    hard: Annotated[bool, typer.Option("--hard", help="gumbel: straight-through hard samples (GDAS).")] = False,
    budget_floor: Annotated[
        float,
        typer.Option(
            "--budget-floor", min=0.0, max=1.0, help="Derive within \\[floor x budget, budget]; 0 only keeps <= budget."
        ),
    ] = 0.9,
    unrolled: Annotated[
        bool, typer.Option("--unrolled", help="Second-order architecture gradient (DARTS; ~7x slower steps).")
    ] = False,
    loss: Annotated[
        LossName,
        typer.Option(help="Latency term: hinge (lam adapts by dual ascent), add, or mul-log (FBNet/ProxylessNAS)."),
    ] = LossName.hinge,
    epochs: Annotated[int, typer.Option(min=1, max=10000)] = 3,
    warmup_epochs: Annotated[
        int | None,
        typer.Option(
            "--warmup-epochs",
            min=0,
            max=10000,
            help="The first N of --epochs train only the weights (ProxylessNAS's warm-up). Default: a third of --epochs (rounded down) for binary and gumbel --hard, else 0.",
        ),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", min=1, max=4096, help="Global batch; under torchrun each process runs its share of it."
        ),
    ] = 32,
    lr: Annotated[
        float | None,
        typer.Option(
            min=1e-6,
            max=10.0,
            help="Weights learning rate (SGD, cosine). Default 0.01 for binary and gumbel --hard (one sampled path per step), else 0.05.",
        ),
    ] = None,
    share_weights: Annotated[
        bool | None,
        typer.Option(
            "--share-weights/--separate-weights",
            help="Candidates of a layer share conv weights (kernel centre, leading channels). Default: shared for binary and gumbel --hard.",
        ),
    ] = None,
    arch_lr: Annotated[
        float | None,
        typer.Option(
            "--arch-lr",
            min=1e-6,
            max=10.0,
            help="Architecture learning rate (Adam). Default 0.01 for binary and gumbel --hard, else 0.003.",
        ),
    ] = None,
    dataset: Annotated[
        str, typer.Option(help="fashion-mnist (default, offline from Debian's package), cifar10 or imagefolder.")
    ] = "fashion-mnist",
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where the data set's files are.")] = None,
    limit: Annotated[
        int | None, typer.Option(min=4, help="Use at most this many training images (both halves).")
    ] = 2000,
    input_size: InputSizeOpt = None,
    width_mult: WidthOpt = None,
    seed: Annotated[int, typer.Option(help="Seed; a CPU search with the same seed writes the same arch.json.")] = 0,
    device: Annotated[
        Device, typer.Option(help="Train the supernet on cpu or cuda (under torchrun: each process's GPU).")
    ] = Device.cpu,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory (default: runs/<space>-<strategy>-<budget>).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run directory's checkpoint.")] = False,
    force: Annotated[bool, typer.Option(help="Overwrite an existing run directory's arch.json.")] = False,
) -> None:
    """Differentiable hardware-aware search under a latency budget; writes RUN/arch.json.

    Example: hwnas search --space proxyless --strategy binary --latency-budget 5ms --lut latency_tables/cpu-onnxruntime-t1__proxyless-224-1ch-10cls.csv

    Data-parallel: torchrun --nproc-per-node 4 -m hwnas search ... (only rank 0 writes and reports).
    """
    from hwnas.budget import format_ms, parse_budget_ms
    from hwnas.distributed import env_rank
    from hwnas.lut import LUT
    from hwnas.search import SearchConfig, run_search

    pct = re.fullmatch(r"\s*[pP](\d+(?:\.\d+)?)\s*", latency_budget)
    budget = 0.0 if pct else parse_budget_ms(latency_budget)
    if pct and not 0 < float(pct.group(1)) < 100:
        raise UsageError(f"--latency-budget {latency_budget.strip()}: a percentile budget is p1 to p99")
    table = LUT.load(lut)
    tag = f"p{pct.group(1)}" if pct else format_ms(budget).replace(" ", "")
    run = out_dir or Path("runs") / f"{Path(space).stem}-{strategy.value}-{tag}"
    if (run / "arch.json").exists() and not (force or resume):
        raise UsageError(
            f"{run / 'arch.json'} exists; pass --force to overwrite, --resume to continue, or another --out"
        )
    main = env_rank() == 0  # under torchrun only rank 0 reports; everywhere else this is the one process
    if resume and main and not (run / "checkpoint.pt").exists():
        err.print(f"note: no checkpoint.pt in {run} yet; starting from the beginning", highlight=False)
    cfg = SearchConfig(
        space=space, strategy=strategy.value, hard=hard, unrolled=unrolled, loss=loss.value, budget_ms=budget,
        budget_floor=budget_floor,
        budget_pct=float(pct.group(1)) if pct else None, epochs=epochs, warmup_epochs=warmup_epochs,
        batch_size=batch_size, lr=lr, arch_lr=arch_lr, dataset=dataset, data_dir=str(data_dir) if data_dir else None,
        limit=limit, input_size=input_size if input_size is not None else int(table.meta["input_size"]),
        width_mult=width_mult, seed=seed, device=device.value, share_weights=share_weights,
    )  # fmt: skip
    with progress_bar("search", epochs, show=main, width=200) as bar:

        def update(st: dict[str, Any]) -> None:
            info = (
                f"loss {st['loss']:.3f} acc {st['train_acc']:.3f} E[lat] {st['e_lat_ms']:.3f}/{st['budget_ms']:.3f} ms "
                f"lam {st['lam']:.3f} tau {st['tau']:.2f}"
            )
            bar(st["epoch"], epochs, info)

        arch = run_search(
            cfg,
            table,
            run,
            update,
            resume=resume,
            note=lambda m: err.print(m, highlight=False, markup=False, soft_wrap=True),
        )
    i = arch.info
    if not main:
        return
    out.print(
        f"wrote {run / 'arch.json'}: predicted {i['predicted_ms']:.3f} ms <= budget {i['budget_ms']:.3f} ms on {table.describe()} "
        f"(fastest possible {i['min_latency_ms']:.3f} ms; derived {i['derived_ms']:.3f} ms, {i['budget_swaps']} swap(s) to fit the budget)\n"
        f"accuracy was learned at the data set's {i['trained_at_px']} px; latency is priced at the deployment input "
        f"{arch.input[1]} px. History: {run / 'history.csv'}"
    )


@app.command()
@user_errors
def train(
    arch: Annotated[Path, typer.Argument(help="Arch JSON (from hwnas search or hwnas sample).")],
    epochs: Annotated[int, typer.Option(min=1, max=10000)] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=4096)] = 64,
    lr: Annotated[float, typer.Option(min=1e-6, max=10.0, help="Learning rate (SGD, momentum 0.9, cosine).")] = 0.025,
    dataset: Annotated[
        str, typer.Option(help="fashion-mnist (default, offline from Debian's package), cifar10 or imagefolder.")
    ] = "fashion-mnist",
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where the data set's files are.")] = None,
    limit: Annotated[
        int | None, typer.Option(min=4, help="Use at most this many training images (default: all).")
    ] = None,
    test_limit: Annotated[
        int | None, typer.Option("--test-limit", min=1, help="Test images used (default: all).")
    ] = None,
    cells: Annotated[
        int | None, typer.Option(min=3, help="DARTS: cells in the trained net (default: the arch's).")
    ] = None,
    channels: Annotated[
        int | None, typer.Option(min=1, help="DARTS: initial channels C (default: the arch's).")
    ] = None,
    auxiliary: Annotated[
        float, typer.Option(min=0.0, max=10.0, help="DARTS: auxiliary head loss weight (0: off; DARTS uses 0.4).")
    ] = 0.0,
    drop_path: Annotated[
        float, typer.Option("--drop-path", min=0.0, max=0.99, help="DARTS: final drop-path probability (DARTS: 0.2).")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed; a CPU run with the same seed ends with the same weights.")] = 0,
    device: Annotated[Device, typer.Option(help="Train on cpu or cuda (a GPU).")] = Device.cpu,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output directory (default: <arch's directory>/train).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the output directory's last.pt.")] = False,
    force: Annotated[bool, typer.Option(help="Start over in an output directory that holds a run.")] = False,
) -> None:
    """Train a derived network from scratch; writes best.pt (for hwnas export), result.json with the test accuracy.

    Example: hwnas train runs/quickstart/arch.json --epochs 30
    """
    from hwnas.arch import Arch
    from hwnas.train import TrainConfig, run_train

    a = Arch.load(arch)
    run = out_dir or arch.parent / "train"
    held = [n for n in ("last.pt", "best.pt", "result.json") if (run / n).exists()]
    if held and not (force or resume):
        raise UsageError(
            f"{run} holds a training run ({', '.join(held)}); pass --resume to continue it, --force to start over, or another --out"
        )
    if resume and not (run / "last.pt").exists():
        err.print(f"note: no last.pt in {run} yet; starting from the beginning", highlight=False)
    cfg = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, dataset=dataset, data_dir=str(data_dir) if data_dir else None,
        limit=limit, test_limit=test_limit, cells=cells, channels=channels, auxiliary=auxiliary, drop_path=drop_path,
        seed=seed, device=device.value,
    )  # fmt: skip
    with progress_bar("train", epochs, width=200) as bar:

        def update(st: dict[str, Any]) -> None:
            info = f"loss {st['loss']:.3f} acc {st['train_acc']:.3f} val {st['val_acc']:.3f} (best {st['best_val_acc']:.3f})"
            bar(st["epoch"], epochs, info)

        res = run_train(a, cfg, run, update, resume=resume)
    out.print(
        f"test accuracy {res.test_acc:.4f} (best epoch {res.best_epoch}, validation {res.best_val_acc:.4f}; "
        f"{res.params / 1e6:.3f} M params; {res.seconds:.0f} s)\n"
        f"wrote {run / 'best.pt'} and {run / 'result.json'}; next: hwnas export {arch} --weights {run / 'best.pt'} -o model.onnx"
    )


@app.command()
@user_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of hwnas search (holds arch.json).")],
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="HTML file to write (replaced if there); the PNGs go beside it. Default: RUN_DIR/report/report.html.",
        ),
    ] = None,
) -> None:
    """One self-contained HTML report of a run: probabilities, latency vs budget, curves, the derived net, fidelity.

    Example: hwnas report runs/quickstart
    """
    from hwnas.report import build_report

    if out_path is not None and not out_path.is_dir() and out_path.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"-o {out_path}: the report is one HTML file; name one ending in .html (PNGs go beside it)")
    r = build_report(run_dir, out_path)
    out.print(f"wrote {r.html} ({len(r.images)} pictures embedded, PNGs beside it)", highlight=False)
    for line in (*r.problems, *r.notes):
        err.print(f"note: {line}", highlight=False)
    for m in r.missing:
        out.print(f"  not in this run: {m}", highlight=False)


@app.command()
@user_errors
def spaces() -> None:
    """List the shipped search spaces.

    Example: hwnas spaces
    """
    from hwnas.space import builtin_spaces, load_space

    t = Table(title="search spaces (search_spaces/*.toml)")
    for c in ("name", "kind", "input", "layers / cells", "choices", "LUT keys"):
        t.add_column(c)
    for name in builtin_spaces():
        sp = load_space(name)
        if sp.kind == "blocks":
            slots = sp.slots()
            shape, choices = f"{len(slots)} layers", str(max(len(s.choices) for s in slots))
        else:
            shape, choices = f"{sp.raw['layers']} cells x {sp.raw['nodes']} nodes", str(len(sp.cell_ops))
        t.add_row(name, sp.kind, f"{sp.input_size}px", shape, choices, str(len(sp.calls())))
    out.print(t)


@app.command()
@user_errors
def ops() -> None:
    """List the registered ops and their parameters.

    Example: hwnas ops
    """
    from hwnas.ops import get_op, registered_ops

    t = Table(title="registered ops")
    for c in ("op", "params", "priced", "what"):
        t.add_column(c)
    for name in registered_ops():
        spec = get_op(name)
        t.add_row(name, ", ".join(spec.params), "yes" if spec.priced else "no (free)", spec.doc)
    out.print(t)
