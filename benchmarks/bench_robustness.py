"""Robustness campaign (issue 10): rerun the attack campaign's kinds of cases and count outcomes.

Offline and bounded (about 3–5 minutes on 2 cores). Three families:

1. **cli**: the real `digitlab` entry point as subprocesses: bad flags, spec TOML files with
   every field given wrong types and unknown keys, `--spec`/`--runs-dir`/`--out` pointing
   to folders, FIFOs, devices and files, and a matrix of run folders crafted from one real
   run (trained once at the start with `--train-samples 500 --epochs 1`) against `runs`,
   `runs --json`, `evaluate`, `predict --index 0` and `serve`. Counted per case: a traceback
   (`Traceback (most recent call last)` in the output), an exit status other than 0, 2 or
   130 (1 is digitlab's "unexpected error, this is a bug" line), more than one `Error:`
   line, and a hang (killed at the case's time limit). A `serve` that starts (answers
   /health) is stopped and counted as started.
2. **http**: the app in-process (`digitlab.api.create_app` with Starlette's TestClient,
   server exceptions turned into 500s): JSON bombs, NaN/Infinity, wrong shapes, types and
   content types, empty bodies, pixel-heavy small PNGs, extra multipart fields, batches;
   then schemathesis (if installed) with a bounded number of examples. Counted: responses
   ≥ 500 and exceptions raised out of the client.
3. **data-loss**: SIGKILL at each step of the resume swap (`digitlab.runs.staged_run` with
   `DIGITLAB_TEST_CRASH_AT`), in a child that writes a new copy of a real run, and once
   each through a real `digitlab train --resume` followed by a new `digitlab train` in the
   same folder (what used to delete the only copy). Counted: the run missing or incomplete
   afterwards.

Besides the counts the issue's "Done when" names, `wrong outcome` counts cases whose result
was not the expected one without being a crash (say a bad run served, or a bad flag
accepted); they are listed for a reader to judge.

    .venv/bin/python benchmarks/bench_robustness.py            # table, then JSON
    .venv/bin/python benchmarks/bench_robustness.py --jobs 2 --json-out robustness.json
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

DIGITLAB = str(Path(sys.executable).with_name("digitlab"))
PYTHON = sys.executable
TRACEBACK = "Traceback (most recent call last)"
MEMORY_CAP = 6 << 30  # address space per subprocess: a /dev/zero read fails, not the machine
OK_EXITS = {0, 2, 130}
HUGE = 10**30


# ----------------------------------------------------------------------------------- results
@dataclass
class Outcome:
    family: str
    name: str
    command: str
    rc: int | None = None
    traceback: bool = False
    server_error: bool = False  # HTTP status >= 500, or an exception out of the client
    bad_exit: bool = False
    multi_error: bool = False
    hang: bool = False
    data_loss: bool = False
    wrong: str = ""  # expected something else (not a crash)
    first_line: str = ""  # the first line of the traceback / the failure, for the report
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return (
            self.traceback
            or self.server_error
            or self.bad_exit
            or self.multi_error
            or self.hang
            or self.data_loss
        )


@dataclass
class Context:
    root: Path
    good: Path  # the real run every crafted run is copied from
    env: dict[str, str]
    outcomes: list[Outcome] = field(default_factory=list)


def _capped(command: list[str]) -> list[str]:
    """`command` under `prlimit --as` (no `preexec_fn`: forking Python code out of this
    process, which holds JAX's threads, could deadlock)."""
    prlimit = shutil.which("prlimit")
    return [prlimit, f"--as={MEMORY_CAP}", "--", *command] if prlimit else command


def _env(root: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DIGITLAB_DEBUG",
            "DIGITLAB_TEST_CRASH_AT",
            "DIGITLAB_TUNE_STORAGE",
            "DIGITLAB_DATA_DIR",
        }
    }
    env |= {
        "DIGITLAB_RUNS_DIR": str(root / "default-runs"),
        "KERAS_BACKEND": "jax",
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
    }
    return env


def _first_traceback_line(text: str) -> str:
    """The exception line that ends a traceback (the last non-indented line after it)."""
    lines = text[text.find(TRACEBACK) :].splitlines()
    tail = [line for line in lines[1:] if line and not line.startswith(" ")]
    return tail[0][:200] if tail else lines[0][:200]


def classify(outcome: Outcome, output: str, expect: str) -> Outcome:
    """Fill in the counts from a finished command's combined output and exit status."""
    rc = outcome.rc
    errors = [line for line in output.splitlines() if line.strip().startswith("Error:")]
    if TRACEBACK in output:
        outcome.traceback = True
        outcome.first_line = _first_traceback_line(output)
    if rc not in OK_EXITS and not outcome.hang:
        outcome.bad_exit = True
        outcome.first_line = outcome.first_line or (errors[0] if errors else output[-200:])
    if len(errors) > 1:
        outcome.multi_error = True
        outcome.first_line = outcome.first_line or " | ".join(errors[:2])[:200]
    if not outcome.failed:
        if expect == "error" and rc != 2:
            outcome.wrong = f"expected exit 2 with one Error: line, got exit {rc}"
        elif expect == "ok" and rc != 0:
            outcome.wrong = f"expected exit 0, got {rc}: {(errors or [''])[0][:160]}"
    return outcome


def run_cli(
    family: str,
    name: str,
    args: list[str],
    ctx: Context,
    expect: str = "error",
    timeout: float = 120,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[Outcome, str]:
    """Run `digitlab ARGS` and classify it; `expect` is "error", "ok" or "any"."""
    command = [DIGITLAB, *map(str, args)]
    outcome = Outcome(family, name, " ".join(["digitlab", *map(str, args)]))
    start = time.monotonic()
    proc = subprocess.Popen(
        _capped(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=cwd or ctx.root,
        env=env or ctx.env,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        outcome.hang = True
        outcome.first_line = f"still running after {timeout:.0f} s"
    outcome.rc = proc.returncode
    outcome.seconds = time.monotonic() - start
    text = output.decode("utf-8", "replace")
    return classify(outcome, text, expect), text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_serve(name: str, run: str, runs_dir: Path, ctx: Context, expect: str) -> Outcome:
    """`digitlab serve RUN`: exits at once (classified as usual) or starts serving, in which
    case it is stopped and counted "started" (a bad run that starts is a wrong outcome)."""
    port = _free_port()
    args = ["serve", run, "--runs-dir", runs_dir, "--port", port]
    outcome = Outcome("cli", name, " ".join(["digitlab", *map(str, args)]))
    start = time.monotonic()
    log = ctx.root / f"serve-{port}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            _capped([DIGITLAB, *map(str, args)]),
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ctx.root,
            env=ctx.env,
            start_new_session=True,
        )
        started = False
        while time.monotonic() - start < 60:
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    started = r.status == 200
            except OSError:
                pass
            if started:
                break
            time.sleep(0.3)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT if started else signal.SIGKILL)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = log.read_text("utf-8", "replace")
    log.unlink()
    outcome.seconds = time.monotonic() - start
    if started:
        outcome.rc = 0
        if expect == "error":
            outcome.wrong = "a bad run started serving"
        return outcome
    if proc.returncode is not None and proc.returncode < 0 and not started:
        outcome.hang = True  # killed by us: neither refused nor served within 60 s
        outcome.first_line = "neither refused nor serving after 60 s"
    outcome.rc = proc.returncode
    return classify(outcome, text, expect)


# ------------------------------------------------------------------------------ the base run
def train_base_run(ctx_root: Path, env: dict[str, str]) -> Path:
    runs = ctx_root / "base"
    done = subprocess.run(
        [DIGITLAB, "train", "--train-samples", "500", "--epochs", "1", "--runs-dir", runs],
        capture_output=True,
        text=True,
        env=env,
        cwd=ctx_root,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"could not train the base run:\n{done.stdout}\n{done.stderr}")
    (path,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    return path


# ----------------------------------------------------------------------------- cli: flags
def flag_cases() -> list[tuple[str, list[str], str]]:
    """(name, args, expect) for `train` flags, the quick way: 200 digits, one epoch."""
    cases = [
        ("seed -1", ["--seed", "-1"], "error"),
        ("seed 2**70", ["--seed", str(2**70)], "error"),
        ("seed text", ["--seed", "x"], "error"),
        ("learning-rate inf", ["--learning-rate", "inf"], "error"),
        ("learning-rate nan", ["--learning-rate", "nan"], "error"),
        ("learning-rate -1", ["--learning-rate", "-1"], "error"),
        ("learning-rate 0", ["--learning-rate", "0"], "error"),
        ("learning-rate 1e400", ["--learning-rate", "1e400"], "error"),
        ("validation-split 1.5", ["--validation-split", "1.5"], "error"),
        ("validation-split 1", ["--validation-split", "1"], "error"),
        ("validation-split -0.1", ["--validation-split", "-0.1"], "error"),
        ("validation-split nan", ["--validation-split", "nan"], "error"),
        ("batch-size 0", ["--batch-size", "0"], "error"),
        ("batch-size 2**70", ["--batch-size", str(2**70)], "error"),
        ("optimizer unknown", ["--optimizer", "adamm"], "error"),
        ("loss unknown", ["--loss", "hinge2"], "error"),
        ("metrics unknown", ["--metrics", "acuracy"], "error"),
        ("metrics empty items", ["--metrics", ",,"], "error"),
        ("dataset unknown", ["--dataset", "cifar"], "error"),
        ("preset unknown", ["--preset", "nope"], "error"),
        ("schedule unknown", ["--learning-rate-schedule", "linear"], "error"),
        ("early-stopping -1", ["--early-stopping", "-1", "--validation-split", "0.1"], "error"),
        ("early-stopping without split", ["--early-stopping", "2"], "error"),
        ("train-samples 0", ["--train-samples", "0", "--epochs", "1"], "error"),
        ("train-samples -5", ["--train-samples", "-5", "--epochs", "1"], "error"),
        ("train-samples 2**70", ["--train-samples", str(2**70), "--epochs", "1"], "error"),
        ("name with slashes", ["--name", "../../x/y"], "any"),
    ]
    out = []
    for name, args, expect in cases:
        extra = [] if "--train-samples" in args else ["--train-samples", "200"]
        extra += [] if "--epochs" in args else ["--epochs", "1"]
        out.append((name, [*args, *extra], expect))
    for value in ("0", "-1", "2.5", "ten", str(2**70)):
        out.append((f"epochs {value}", ["--epochs", value, "--train-samples", "200"], "error"))
    return out


# ------------------------------------------------------------------------------ cli: specs
WRONG_VALUES = {  # TOML literals of each wrong kind
    "string": '"ten"',
    "float": "2.5",
    "list": '["a", 1]',
    "table": "{ a = 1 }",
    "bool": "true",
    "huge-int": str(2**70),
    "negative": "-3",
}
TRAIN_FIELDS = [
    "epochs",
    "batch_size",
    "learning_rate",
    "validation_split",
    "optimizer",
    "seed",
    "metrics",
    "loss",
    "early_stopping",
    "train_samples",
    "dataset",
    "learning_rate_schedule",
]
TOP_FIELDS = ["name", "input", "layers", "description"]
LAYER_FIELDS = ["type", "units", "activation", "rate"]
SEED_LAYERS = '[[layers]]\ntype = "Dense"\nunits = 16\nactivation = "relu"\n'


def spec_text(where: str, key: str, value: str) -> str:
    if where == "top":
        return f"{key} = {value}\n{'' if key == 'layers' else SEED_LAYERS}"
    if where == "train":
        return f"{SEED_LAYERS}[train]\n{key} = {value}\n"
    layer = {"type": '"Dense"', "units": "16", "activation": '"relu"'} | {key: value}
    if key == "rate":
        layer["type"] = '"Dropout"'
        layer.pop("units")
        layer.pop("activation")
    body = "".join(f"{k} = {v}\n" for k, v in layer.items())
    return f"[[layers]]\n{body}"


def spec_cases(folder: Path) -> list[tuple[str, list[str], str]]:
    """Every spec field with every wrong kind of value (most through `summary`, which
    validates the same way `train` does without training; some through `train`)."""
    folder.mkdir()
    cases = []
    n = 0
    fields = (
        [("train", k) for k in TRAIN_FIELDS]
        + [("top", k) for k in TOP_FIELDS]
        + [("layer", k) for k in LAYER_FIELDS]
    )
    kinds = list(WRONG_VALUES)
    for i, (where, key) in enumerate(fields):  # 3 of the 7 wrong kinds per field, in turn
        for kind in (kinds[(i * 3 + j) % len(kinds)] for j in range(3)):
            value = WRONG_VALUES[kind]
            if kind == "negative" and key not in {
                "epochs",
                "batch_size",
                "seed",
                "units",
                "learning_rate",
                "rate",
                "train_samples",
            }:
                continue
            path = folder / f"{where}-{key}-{kind}.toml"
            path.write_text(spec_text(where, key, value))
            # "float" is fine for learning_rate/validation_split/rate; a description may be
            # anything text-like: accept either answer there, but never a crash
            valid = (kind == "float" and key in {"learning_rate"}) or (
                kind == "string" and key in {"name", "description"}
            )
            expect = "any" if valid else "error"
            n += 1
            if n % 6 == 0 and key not in {"epochs", "train_samples"}:  # a sample via train
                args = [
                    "train",
                    "--spec",
                    path,
                    "--train-samples",
                    "200",
                    "--epochs",
                    "1",
                    "--runs-dir",
                    folder / "runs",
                ]
            else:
                args = ["summary", "--spec", path]
            cases.append((f"spec {where}.{key} = {kind}", args, expect))
    unknown = {
        "unknown top key": f'nmae = "x"\n{SEED_LAYERS}',
        "unknown train key": f"{SEED_LAYERS}[train]\nepoch = 3\n",
        "unknown layer key": '[[layers]]\ntype = "Dense"\nunit = 16\n',
        "unknown section": f"{SEED_LAYERS}[trian]\nepochs = 3\n",
        "input typo": f'input = "imgae"\n{SEED_LAYERS}',
        "units bomb": '[[layers]]\ntype = "Dense"\nunits = 100000000\n',
        "metrics as a string": f'{SEED_LAYERS}[train]\nmetrics = "accuracy"\n',
        "no layers": "[train]\nepochs = 1\n",
        "layer type unknown": '[[layers]]\ntype = "Lambda"\n',
        "invalid toml": "[[layers]\ntype = \n",
        "empty file": "",
        "binary junk": None,
        "deeply nested arrays": "x = " + "[" * 5000 + "]" * 5000 + "\n",
    }
    for name, text in unknown.items():
        path = folder / (re.sub(r"\W+", "-", name) + ".toml")
        if text is None:
            path.write_bytes(os.urandom(2048))
        else:
            path.write_text(text)
        cases.append((f"spec {name}", ["summary", "--spec", path], "error"))
    return cases


def special_paths(folder: Path) -> dict[str, Path]:
    """A folder, a FIFO, a symlink to /dev/zero, a sparse 200 MB file, a missing path."""
    folder.mkdir()
    (folder / "a-folder").mkdir()
    os.mkfifo(folder / "a-fifo")
    (folder / "zero").symlink_to("/dev/zero")
    with (folder / "sparse").open("wb") as handle:
        handle.truncate(200 << 20)
    (folder / "a-file").write_text("x")
    return {
        "a folder": folder / "a-folder",
        "a FIFO": folder / "a-fifo",
        "a symlink to /dev/zero": folder / "zero",
        "a sparse 200 MB file": folder / "sparse",
        "a missing path": folder / "missing",
    }


def path_cases(ctx: Context) -> list[tuple[str, list[str], str]]:
    folder = ctx.root / "paths"
    special = special_paths(folder)
    good_runs = ctx.good.parent
    quick = ["--train-samples", "200", "--epochs", "1"]
    cases = []
    for what, path in special.items():
        cases.append((f"--spec {what}", ["summary", "--spec", path], "error"))
        cases.append(
            (
                f"--space {what}",
                [
                    "tune",
                    "--space",
                    path,
                    "--trials",
                    "1",
                    "--train-samples",
                    "200",
                    "--runs-dir",
                    folder / "tune-runs",
                ],
                "error",
            )
        )
    for what in ("a FIFO", "a symlink to /dev/zero", "a folder", "a sparse 200 MB file"):
        cases.append(
            (
                f"train --spec {what}",
                ["train", "--spec", special[what], *quick, "--runs-dir", folder / "r"],
                "error",
            )
        )
        cases.append((f"preprocess {what}", ["preprocess", special[what]], "error"))
        cases.append((f"predict image {what}", ["predict", ctx.good, special[what]], "error"))
        cases.append(
            (f"predict --npy {what}", ["predict", ctx.good, "--npy", special[what]], "error")
        )
    (folder / "runs-file").write_text("x")
    for what, runs_dir in (
        ("a file", folder / "runs-file"),
        ("under /proc", "/proc/digitlab-x"),
        ("/dev/null", "/dev/null"),
        ("under a file", folder / "a-file" / "r"),
    ):
        cases.append(
            (f"train --runs-dir {what}", ["train", *quick, "--runs-dir", runs_dir], "error")
        )
        cases.append((f"runs --runs-dir {what}", ["runs", "--runs-dir", runs_dir], "any"))
        cases.append(
            (
                f"evaluate latest --runs-dir {what}",
                ["evaluate", "latest", "--runs-dir", runs_dir],
                "error",
            )
        )
    cases.append(("show --out a folder", ["show", "0", "--out", special["a folder"]], "error"))
    image = folder / "digit.png"
    _png(28, 28, image)
    cases.append(
        ("preprocess --out a folder", ["preprocess", image, "--out", special["a folder"]], "error")
    )
    cases.append(("preprocess a text file", ["preprocess", folder / "a-file"], "error"))
    cases.append(
        (
            "preprocess a huge-pixel PNG",
            ["preprocess", _png(8000, 8000, folder / "big.png")],
            "error",
        )
    )
    for port in ("70000", "0", "-1"):
        cases.append((f"serve --port {port}", ["serve", ctx.good, "--port", port], "error"))
    np_dir = folder / "npy"
    np_dir.mkdir()
    cases += _npy_cases(ctx, np_dir)
    for index in ("-1", "10000", str(2**70), "a-b", "5-2"):
        expect = "any" if index == "5-2" else "error"
        cases.append((f"predict --index {index}", ["predict", ctx.good, "--index", index], expect))
    cases.append(("show --grid 0x0", ["show", "--grid", "0x0", "--out", folder / "g.png"], "error"))
    cases.append(("show index huge", ["show", str(2**70)], "error"))
    cases.append(("show --label 99", ["show", "0", "--label", "99"], "error"))
    cases.append(("data info cifar", ["data", "info", "--dataset", "cifar"], "error"))
    journal = folder / "garbage.journal"
    journal.write_bytes(b"\x00garbage\xff" * 200)
    cases.append(
        (
            "tune garbage journal",
            [
                "tune",
                "--storage",
                journal,
                "--trials",
                "1",
                "--train-samples",
                "200",
                "--runs-dir",
                folder / "tune-runs",
            ],
            "error",
        )
    )
    cases += _tune_storage_cases(folder, special)
    for flag, value in (
        ("--trials", "-1"),
        ("--workers", "0"),
        ("--timeout", "soon"),
        ("--validation-split", "2"),
        ("--train-samples", "-3"),
    ):
        cases.append(
            (
                f"tune {flag} {value}",
                [
                    "tune",
                    flag,
                    value,
                    "--trials",
                    "1",
                    # the bad value must be the one that counts: a later flag would override it
                    *(["--train-samples", "200"] if flag != "--train-samples" else []),
                    "--runs-dir",
                    folder / "tune-runs",
                ],
                "error",
            )
            if flag != "--trials"
            else (
                f"tune {flag} {value}",
                ["tune", flag, value, "--train-samples", "200", "--runs-dir", folder / "tune-runs"],
                "error",
            )
        )
    for what, args in (
        ("resume a missing run", ["--resume", "nope"]),
        ("resume --epochs -1", ["--resume", ctx.good, "--epochs", "-1"]),
        ("resume --preset cnn", ["--resume", ctx.good, "--preset", "cnn"]),
        ("resume already done", ["--resume", ctx.good, "--epochs", "1"]),
    ):
        cases.append((what, ["train", *args, "--runs-dir", good_runs], "error"))
    return cases


def _cut_off_journal(path: Path, tail: bytes) -> Path:
    """Study 'cut' with one complete trial, then `tail` without a newline: what a kill in the
    middle of Optuna's append leaves (issue 19, item 6)."""
    import optuna

    from digitlab.config import TrainConfig
    from digitlab.search_space import SearchSpace, spec_for_trial
    from digitlab.tune.storages import open_storage, quiet_optuna

    quiet_optuna()
    study = optuna.create_study(study_name="cut", storage=open_storage(path), direction="maximize")
    trial = study.ask()
    spec_for_trial(trial, SearchSpace(epochs=1), TrainConfig())  # as `tune --epochs 1` draws
    study.tell(trial, 0.5)
    with path.open("ab") as handle:
        handle.write(tail)
    return path


def _tune_storage_cases(folder: Path, special: dict[str, Path]) -> list[tuple[str, list[str], str]]:
    """`--storage` at a FIFO, a folder or /dev/zero is refused by every command that takes it,
    before opening it (item 9: `tune` waited on a FIFO for ever); a journal whose last line a
    kill cut off is read on, and one ending in something else is refused (6)."""
    out = folder / "tune-storage"
    out.mkdir()
    commands = {
        "tune": ["tune", "--trials", "1", "--train-samples", "200", "--runs-dir", out / "runs"],
        "tune report": ["tune", "report", "--out", out / "report"],
        "tune dashboard": ["tune", "dashboard", "--port", str(_free_port())],
    }
    cases = []
    for what in ("a FIFO", "a folder", "a symlink to /dev/zero"):
        for name, args in commands.items():
            case = [*args, "--storage", special[what]]
            cases.append((f"{name} --storage {what}", case, "error"))
    torn = b'{"op_code":8,"worker_id":"w","trial_id":0,"user_attr":{"fail'
    for name, args in commands.items():
        if name == "tune dashboard":
            continue  # it would serve (until killed) once the journal reads
        journal = _cut_off_journal(out / f"cut-{name.replace(' ', '-')}.journal", torn)
        extra = ["--epochs", "1"] if name == "tune" else []
        case = [*args, *extra, "--study", "cut", "--storage", journal]
        cases.append((f"{name} on a cut-off journal", case, "ok"))
        journal = _cut_off_journal(out / f"notes-{name.replace(' ', '-')}.journal", b"my notes")
        case = [*args, "--study", "cut", "--storage", journal]
        cases.append((f"{name} on a journal ending in notes", case, "error"))
    return cases


def _npy_cases(ctx: Context, folder: Path) -> list[tuple[str, list[str], str]]:
    import numpy as np

    arrays = {
        "npy object array (pickle)": np.array([{"a": 1}], dtype=object),
        "npy wrong shape": np.zeros((3, 5, 5), np.uint8),
        "npy NaN": np.full((1, 28, 28), np.nan),
        "npy complex": np.zeros((1, 784), complex),
        "npy 0 images": np.zeros((0, 28, 28), np.uint8),
        "npy negative": np.full((1, 784), -5.0),
    }
    cases = []
    for name, array in arrays.items():
        path = folder / (re.sub(r"\W+", "-", name) + ".npy")
        np.save(path, array, allow_pickle=True)
        cases.append((name, ["predict", ctx.good, "--npy", path], "error"))
    junk = folder / "junk.npy"
    junk.write_bytes(b"\x93NUMPY\x01\x00" + os.urandom(500))
    cases.append(("npy garbage header", ["predict", ctx.good, "--npy", junk], "error"))
    return cases


def _png(width: int, height: int, path: Path | None = None) -> Path | bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (width, height), 255).save(buffer, format="PNG")
    if path is None:
        return buffer.getvalue()
    path.write_bytes(buffer.getvalue())
    return path


# ------------------------------------------------------------------------ cli: crafted runs
def _json_edit(run: Path, name: str, edit) -> None:
    path = run / name
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _set(path: str, value):
    """An edit setting a dotted field (or deleting it when value is DELETE)."""

    def edit(data):
        *parents, last = path.split(".")
        for key in parents:
            data = data[int(key)] if isinstance(data, list) else data[key]
        if value is DELETE:
            del data[last]
        elif isinstance(data, list):
            data[int(last)] = value
        else:
            data[last] = value

    return edit


DELETE = object()
TYPE_VALUES = {
    "string": "x",
    "float": 1.5,
    "list": [1],
    "table": {},
    "bool": True,
    "huge-int": HUGE,
    "null": None,
    "missing": DELETE,
}
CONFIG_FIELDS = [
    "name",
    "created",
    "status",
    "epochs_done",
    "spec",
    "preprocessing",
    "dataset",
    "seed",
    "thresholds",
    "spec.train.epochs",
    "spec.layers",
    "spec.layers.0.units",
    "spec.input",
    "preprocessing.shape",
    "preprocessing.scale",
    "dataset.name",
    "dataset.class_names",
    "dataset.test_samples",
]
METRICS_FIELDS = ["test_accuracy", "train_seconds", "test_loss", "epoch_seconds"]


def _write_file_breakage(target: Path, how: str) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()
    if how == "invalid JSON":
        target.write_text("{ not json")
    elif how == "deeply nested JSON":
        target.write_text("[" * 100_000 + "]" * 100_000)
    elif how == "huge int":
        target.write_text('{"epochs_done": ' + "9" * 5000 + "}")
    elif how == "binary junk":
        target.write_bytes(os.urandom(4096))
    elif how == "empty":
        target.write_bytes(b"")
    elif how == "a JSON list":
        target.write_text("[1, 2, 3]")
    elif how == "a folder":
        target.mkdir()
    elif how == "a FIFO":
        os.mkfifo(target)
    elif how == "symlink to /dev/zero":
        target.symlink_to("/dev/zero")
    elif how == "symlink loop":
        target.symlink_to(target.name)
    elif how == "oversized sparse":
        with target.open("wb") as handle:
            handle.truncate(11 << 20 if target.suffix == ".json" else (2 << 30) + 1)
    elif how == "missing":
        pass
    else:
        raise AssertionError(how)


FILE_BREAKAGES = [
    "invalid JSON",
    "deeply nested JSON",
    "huge int",
    "binary junk",
    "empty",
    "a JSON list",
    "a folder",
    "a FIFO",
    "symlink to /dev/zero",
    "symlink loop",
    "oversized sparse",
    "missing",
]
MODEL_BREAKAGES = [
    "garbage zip",
    "valid zip of junk",
    "truncated",
    "empty",
    "a folder",
    "a FIFO",
    "symlink to /dev/zero",
    "oversized sparse",
    "missing",
    "lambda bytecode layer",
    "os.system activation",
]
HISTORY_BREAKAGES = [
    "garbage values",
    "binary junk",
    "missing",
    "a folder",
    "a FIFO",
    "symlink to /dev/zero",
    "oversized sparse",
]


def _break_model(model: Path, how: str) -> None:
    if how in {
        "a folder",
        "a FIFO",
        "symlink to /dev/zero",
        "oversized sparse",
        "missing",
        "empty",
    }:
        _write_file_breakage(model, how)
    elif how == "garbage zip":
        model.write_bytes(b"PK\x03\x04" + os.urandom(2000))
    elif how == "valid zip of junk":
        model.unlink()
        with zipfile.ZipFile(model, "w") as archive:
            archive.writestr("config.json", "{not json")
            archive.writestr("model.weights.h5", os.urandom(100))
    elif how == "truncated":
        data = model.read_bytes()
        model.write_bytes(data[: len(data) // 2])
    elif how in {"lambda bytecode layer", "os.system activation"}:
        with zipfile.ZipFile(model) as archive:
            files = {name: archive.read(name) for name in archive.namelist()}
        config = json.loads(files["config.json"])
        if how == "lambda bytecode layer":
            layer = {
                "module": "keras.layers",
                "class_name": "Lambda",
                "config": {
                    "name": "evil",
                    "function": {"class_name": "__lambda__", "config": {"code": "4wEAAAAAAAAA"}},
                },
            }
        else:
            layer = {
                "module": "keras.layers",
                "class_name": "Dense",
                "config": {
                    "name": "d",
                    "units": 100,
                    "activation": {
                        "module": "os",
                        "class_name": "system",
                        "config": f"touch {model.parent}/pwned",
                    },
                },
            }
        config["config"]["layers"][1] = layer
        files["config.json"] = json.dumps(config).encode()
        with zipfile.ZipFile(model, "w") as archive:
            for name, data in files.items():
                archive.writestr(name, data)
    else:
        raise AssertionError(how)


def breakages() -> list[tuple[str, object, bool]]:
    """(name, how, full): `full` breakages go to every command, the others to `runs`,
    `runs --json` and one of evaluate/predict/serve in turn."""
    out: list[tuple[str, object, bool]] = []
    for what in FILE_BREAKAGES:
        out.append((f"config.json {what}", ("config.json", what), True))
    for what in ("invalid JSON", "a FIFO", "symlink to /dev/zero", "missing", "a JSON list"):
        out.append((f"metrics.json {what}", ("metrics.json", what), what == "a FIFO"))
    for what in HISTORY_BREAKAGES:
        out.append(
            (f"history.csv {what}", ("history.csv", what), what in {"garbage values", "a FIFO"})
        )
    for what in MODEL_BREAKAGES:
        out.append((f"model.keras {what}", ("model.keras", what), True))
    out.append(("short class_names", _set("dataset.class_names", ["0", "1"]), True))
    out.append(("preprocessing shape 28x28x1", _set("preprocessing.shape", [28, 28, 1]), True))
    out.append(("layers units 1e8", _set("spec.layers.0.units", 10**8), True))
    kinds = list(TYPE_VALUES)
    for i, key in enumerate(CONFIG_FIELDS):  # 2 of the 8 wrong kinds per field, in turn
        for kind in (kinds[(i + j) % len(kinds)] for j in range(0, len(kinds), 4)):
            edit = _set(key, TYPE_VALUES[kind])
            out.append((f"config.{key} {kind}", ("config.json", edit), False))
    for i, key in enumerate(METRICS_FIELDS):
        for kind in (kinds[(i + j) % len(kinds)] for j in range(0, len(kinds), 4)):
            edit = _set(key, TYPE_VALUES[kind])
            out.append((f"metrics.{key} {kind}", ("metrics.json", edit), False))
    return out


def make_broken(ctx: Context, runs_dir: Path, name: str, how) -> Path:
    runs_dir.mkdir(parents=True)
    shutil.copytree(ctx.good, runs_dir / ctx.good.name)
    broken = runs_dir / "broken"
    shutil.copytree(ctx.good, broken)
    if callable(how):
        _json_edit(broken, "config.json", how)
        return broken
    filename, what = how
    target = broken / filename
    if callable(what):
        _json_edit(broken, filename, what)
    elif filename == "model.keras":
        _break_model(target, what)
    elif filename == "history.csv" and what == "garbage values":
        target.write_text("epoch,loss\n1,lots\nx,y,z\n")
    else:
        _write_file_breakage(target, what)
    return broken


def crafted_run_case(ctx: Context, index: int, name: str, how, full: bool) -> list[Outcome]:
    runs_dir = ctx.root / "crafted" / f"{index:03d}"
    outcomes = []
    try:
        make_broken(ctx, runs_dir, name, how)
        good = ctx.good.name
        listings = [["runs", "--json", "--runs-dir", runs_dir]]
        if full:
            listings.insert(0, ["runs", "--runs-dir", runs_dir])
        for args in listings:
            outcome, text = run_cli("cli", f"crafted: {name}: {args[1]}", args, ctx, "ok", 60)
            if outcome.rc == 0 and "--json" in args and not outcome.failed:
                try:
                    rows = {Path(r["run"]).name: r["status"] for r in json.loads(text)}
                    if rows.get(good) != "complete":
                        outcome.wrong = f"the good run is listed as {rows.get(good)}"
                except (ValueError, KeyError, TypeError) as exc:
                    outcome.wrong = f"runs --json printed no JSON list: {exc}"
            outcomes.append(outcome)
        commands = ["evaluate", "predict", "serve"]
        chosen = commands if full else [commands[index % 3]]
        for command in chosen:
            if command == "serve":
                outcome = run_serve(f"crafted: {name}: serve", "broken", runs_dir, ctx, "error")
            else:
                args = [command, "broken", "--runs-dir", runs_dir]
                args += ["--index", "0"] if command == "predict" else ["--json"]
                outcome, _ = run_cli("cli", f"crafted: {name}: {command}", args, ctx, "any", 120)
            outcomes.append(outcome)
        if (runs_dir / "broken" / "pwned").exists():
            outcomes[-1].wrong = "code in model.keras ran (pwned marker written)"
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)
    return outcomes


def all_broken_in_one_folder(ctx: Context, cases) -> list[Outcome]:
    """Every crafted run side by side with the good one: `runs` still lists the good run as
    complete, and `predict latest` picks it."""
    runs_dir = ctx.root / "crafted-all"
    runs_dir.mkdir()
    shutil.copytree(ctx.good, runs_dir / ctx.good.name)
    for i, (name, how, _) in enumerate(cases):
        scratch = ctx.root / "crafted-tmp" / f"{i}"
        broken = make_broken(ctx, scratch, name, how)
        os.replace(broken, runs_dir / f"broken-{i:03d}")
        shutil.rmtree(scratch)
    out = []
    outcome, text = run_cli(
        "cli",
        "crafted: all in one folder: runs --json",
        ["runs", "--json", "--runs-dir", runs_dir],
        ctx,
        "ok",
        120,
    )
    if outcome.rc == 0 and not outcome.failed:
        rows = {Path(r["run"]).name: r["status"] for r in json.loads(text)}
        if rows.get(ctx.good.name) != "complete":
            outcome.wrong = f"the good run is listed as {rows.get(ctx.good.name)}"
    out.append(outcome)
    outcome, text = run_cli(
        "cli",
        "crafted: all in one folder: predict latest",
        ["predict", "latest", "--index", "0", "--json", "--runs-dir", runs_dir],
        ctx,
        "ok",
        120,
    )
    out.append(outcome)
    shutil.rmtree(runs_dir, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------ http
def http_campaign(good: Path) -> list[Outcome]:
    import numpy as np
    from fastapi.testclient import TestClient
    from PIL import Image

    from digitlab.api import MAX_BATCH, create_app

    def png(image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    huge_rgba = png(Image.new("RGBA", (4096, 4096), (255, 255, 255, 255)))
    huge_gray = png(Image.new("L", (4096, 4096), 255))
    digit = Image.new("L", (280, 280), 255)
    from PIL import ImageDraw

    ImageDraw.Draw(digit).line([(80, 40), (200, 40), (120, 240)], fill=0, width=18)
    digit_png = png(digit)

    def png_header(width: int, height: int) -> bytes:
        import struct
        import zlib

        def chunk(kind: bytes, data: bytes) -> bytes:
            return (
                struct.pack(">I", len(data))
                + kind
                + data
                + struct.pack(">I", zlib.crc32(kind + data))
            )

        ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))

    J = "application/json"
    row = "[" + ",".join(["0"] * 27 + ["255"]) + "]"
    pix784 = "[" + ",".join(["0"] * 783 + ["255"]) + "]"
    json_bodies = {
        "int of 5000 digits": '{"pixels": ' + "9" * 5000 + "}",
        "int of 5000 digits in list": '{"pixels": [' + "1" * 5000 + "]}",
        "nested 1000 deep": '{"pixels": ' + "[" * 1000 + "]" * 1000 + "}",
        "nested 100000 deep": '{"pixels": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "nested objects 5000 deep": '{"pixels": ' + '{"a":' * 5000 + "1" + "}" * 5000 + "}",
        "NaN": '{"pixels": NaN}',
        "Infinity": '{"pixels": Infinity}',
        "784 NaN": '{"pixels": [' + ",".join(["NaN"] * 784) + "]}",
        "784 -Infinity": '{"pixels": [' + ",".join(["-Infinity"] * 784) + "]}",
        "784 of 1e400": '{"pixels": [' + ",".join(["1e400"] * 784) + "]}",
        "783 numbers": '{"pixels": [' + ",".join(["1"] * 783) + "]}",
        "27 rows": '{"pixels": [' + ",".join([row] * 27) + "]}",
        "28x28x1": '{"pixels": [' + ",".join(["[" + ",".join(["[1]"] * 28) + "]"] * 28) + "]}",
        "ragged rows": '{"pixels": [' + ",".join([row] * 27 + ["[1]"]) + "]}",
        "strings": '{"pixels": [' + ",".join(['"1"'] * 784) + "]}",
        "booleans": '{"pixels": [' + ",".join(["true"] * 784) + "]}",
        "nulls": '{"pixels": [' + ",".join(["null"] * 784) + "]}",
        "objects": '{"pixels": [' + ",".join(["{}"] * 784) + "]}",
        "negative": '{"pixels": [' + ",".join(["-1"] * 784) + "]}",
        "256": '{"pixels": [' + ",".join(["256"] * 784) + "]}",
        "huge ints": '{"pixels": [' + ",".join([str(2**70)] * 784) + "]}",
        "all zeros": '{"pixels": [' + ",".join(["0"] * 784) + "]}",
        "floats 0-1": '{"pixels": [' + ",".join(["0.5"] * 784) + "]}",
        "good ints": '{"pixels": ' + pix784 + "}",
        "pixels null": '{"pixels": null}',
        "pixels a string": '{"pixels": "abc"}',
        "pixels a number": '{"pixels": 7}',
        "pixels empty list": '{"pixels": []}',
        "no pixels key": '{"pixel": []}',
        "top-level list": "[1, 2]",
        "top-level string": '"x"',
        "null": "null",
        "empty body": "",
        "truncated": '{"pixels": [1, 2',
        "invalid utf-8": b'{"pixels": "\xff\xfe"}',
        "utf-16": '{"pixels": [1]}'.encode("utf-16"),
        "BOM": b"\xef\xbb\xbf" + ('{"pixels": ' + pix784 + "}").encode(),
        "duplicate keys": '{"pixels": [1], "pixels": ' + pix784 + "}",
        "long string": '{"pixels": "' + "a" * 1_000_000 + '"}',
    }
    batch_bodies = {
        "images not a list": '{"images": 3}',
        "0 images": '{"images": []}',
        "65 images": '{"images": [' + ",".join([pix784] * 65) + "]}",
        "64 good images": '{"images": [' + ",".join([pix784] * 64) + "]}",
        "one bad among good": '{"images": [' + pix784 + ', "x"]}',
        "int of 5000 digits": '{"images": [' + "9" * 5000 + "]}",
        "nested 1000 deep": '{"images": ' + "[" * 1000 + "]" * 1000 + "}",
        "NaN image": '{"images": [NaN]}',
        "images of null": '{"images": [null, null]}',
    }
    requests = []  # (name, method, url, kwargs)
    for name, body in json_bodies.items():
        requests.append(
            (
                f"/predict JSON {name}",
                "POST",
                "/predict",
                {"content": body, "headers": {"content-type": J}},
            )
        )
    for name, body in batch_bodies.items():
        requests.append(
            (
                f"/predict/batch JSON {name}",
                "POST",
                "/predict/batch",
                {"content": body, "headers": {"content-type": J}},
            )
        )
    good_json = '{"pixels": ' + pix784 + "}"
    for kind in (
        "text/plain",
        "application/json; charset=utf-16",
        "",
        "multipart/form-data",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "image/png",
        "application/json;;;",
        "APPLICATION/JSON",
    ):
        requests.append(
            (
                f"/predict content-type {kind!r}",
                "POST",
                "/predict",
                {"content": good_json, "headers": {"content-type": kind}},
            )
        )
    requests.append(("/predict no content-type", "POST", "/predict", {"content": good_json}))
    requests.append(
        (
            "/predict bad content-length",
            "POST",
            "/predict",
            {"content": good_json, "headers": {"content-type": J, "content-length": "abc"}},
        )
    )
    uploads = {
        "digit": digit_png,
        "4096x4096 solid RGBA PNG": huge_rgba,
        "4096x4096 solid gray PNG": huge_gray,
        "header 100000x100000": png_header(100_000, 100_000),
        "header 4096x4096, no data": png_header(4096, 4096),
        "empty file": b"",
        "text": b"hello",
        "random bytes": os.urandom(5000),
        "truncated PNG": digit_png[: len(digit_png) // 2],
        "1x1 PNG": png(Image.new("L", (1, 1), 0)),
        "1x100000 PNG": png(Image.new("L", (1, 10_000), 255)),
        "GIF animated": _gif(),
        "all black": png(Image.new("L", (280, 280), 0)),
    }
    for name, data in uploads.items():
        requests.append(
            (
                f"/predict upload {name}",
                "POST",
                "/predict",
                {"files": {"file": ("x.png", data, "image/png")}},
            )
        )
    requests.append(
        (
            "/predict upload in field 'image'",
            "POST",
            "/predict",
            {"files": {"image": ("x.png", digit_png, "image/png")}},
        )
    )
    requests.append(
        (
            "/predict two files",
            "POST",
            "/predict",
            {
                "files": [
                    ("file", ("a.png", digit_png, "image/png")),
                    ("file", ("b.png", digit_png, "image/png")),
                ]
            },
        )
    )
    for n in (5, 100, 2000):
        requests.append(
            (
                f"/predict upload + {n} extra fields",
                "POST",
                "/predict",
                {
                    "files": {"file": ("x.png", digit_png, "image/png")},
                    "data": {f"f{i}": "v" for i in range(n)},
                },
            )
        )
    requests.append(
        ("/predict only text fields", "POST", "/predict", {"files": {"note": (None, "hi")}})
    )
    requests.append(
        (
            "/predict odd filename",
            "POST",
            "/predict",
            {"files": {"file": ("../../\x00ä.png", digit_png, "image/png")}},
        )
    )
    for count, data, label in (
        (64, digit_png, "digits"),
        (64, huge_gray, "4096² PNGs"),
        (3, huge_rgba, "4096² RGBA PNGs"),
        (65, digit_png, "digits"),
        (2, png_header(100_000, 100_000), "bomb headers"),
    ):
        requests.append(
            (
                f"/predict/batch {count} {label}",
                "POST",
                "/predict/batch",
                {"files": [("files", (f"{i}.png", data, "image/png")) for i in range(count)]},
            )
        )
    for index in ("-1", "10000", str(2**70), "abc", "1.5", "0"):
        requests.append(
            (f"/random-test-digit?index={index}", "GET", f"/random-test-digit?index={index}", {})
        )
    for method, url in (
        ("GET", "/predict"),
        ("PUT", "/predict/batch"),
        ("GET", "/nope"),
        ("GET", "/health"),
        ("GET", "/model"),
        ("GET", "/openapi.json"),
        ("GET", "/"),
        ("GET", "/static/../../etc/passwd"),
    ):
        requests.append((f"{method} {url}", method, url, {}))

    outcomes = []
    with TestClient(create_app(str(good)), raise_server_exceptions=False) as client:
        for name, method, url, kwargs in requests:
            outcome = Outcome("http", name, f"{method} {url}")
            start = time.monotonic()
            try:
                response = client.request(method, url, **kwargs)
                outcome.rc = response.status_code
                if response.status_code >= 500:
                    outcome.server_error = True
                    outcome.first_line = f"{response.status_code}: {response.text[:160]}"
            except Exception as exc:
                outcome.server_error = True
                outcome.first_line = f"{type(exc).__name__}: {str(exc)[:160]}"
            outcome.seconds = time.monotonic() - start
            outcomes.append(outcome)
    del np, MAX_BATCH
    return outcomes


def _gif() -> bytes:
    from PIL import Image

    frames = [Image.new("L", (50, 50), v) for v in (0, 128, 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def schemathesis_campaign(good: Path, max_examples: int) -> tuple[list[Outcome], str]:
    """Schemathesis against /openapi.json in-process; one Outcome per operation, counting the
    5xx answers its `not_a_server_error` check saw."""
    try:
        import schemathesis
        import schemathesis.engine
        from schemathesis.engine import Status, events
    except ImportError:
        return [], "not installed"
    from digitlab.api import create_app

    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(str(good)))
    schema.config.generation.update(
        modes=["positive", "negative"], max_examples=max_examples, deterministic=True
    )
    schema.config.checks.update(included_check_names=["not_a_server_error"])
    per_operation: dict[str, Outcome] = {}
    calls = 0
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            label = event.recorder.label
            outcome = per_operation.setdefault(label, Outcome("schemathesis", label, label))
            for checks in event.recorder.checks.values():
                for check in checks:
                    calls += 1
                    if check.status == Status.FAILURE:
                        outcome.server_error = True
                        outcome.first_line = outcome.first_line or str(
                            check.failure_info.failure.title if check.failure_info else ""
                        )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            outcome = Outcome("schemathesis", "engine error", "schemathesis")
            outcome.server_error = True
            outcome.first_line = repr(event)[:200]
            per_operation[f"error {len(per_operation)}"] = outcome
    return list(per_operation.values()), f"{calls} checked responses, max_examples={max_examples}"


# ------------------------------------------------------------------------------- data loss
CRASHER = textwrap.dedent(
    """
    import os, shutil, signal, sys
    from pathlib import Path
    from digitlab.runs import staged_run
    final, step = Path(sys.argv[1]), sys.argv[2]
    with staged_run(final) as staging:
        for item in final.iterdir():
            if item.is_file() and item.name != "config.json":
                shutil.copy2(item, staging / item.name)
        (staging / "generation").write_text("new")
        if step == "mid-write":
            os.kill(os.getpid(), signal.SIGKILL)
        shutil.copy2(final / "config.json", staging / "config.json")  # written last
    """
)


def _check_run_kept(
    ctx: Context, runs_dir: Path, name: str, label: str, how: str, killed: bool
) -> list[Outcome]:
    """After a kill: recover (what the next train does first), then `digitlab runs --json`
    must list the run as complete, with a model that loads (`predict --index 0`)."""
    outcome = Outcome("data-loss", label, how)
    if not killed:
        outcome.wrong = "the crash point was not reached (the child was not killed)"
    listing, text = run_cli(
        "data-loss",
        f"{label}: runs --json",
        ["runs", "--json", "--runs-dir", runs_dir],
        ctx,
        "ok",
        60,
    )
    status = None
    if listing.rc == 0:
        try:
            status = {Path(r["run"]).name: r["status"] for r in json.loads(text)}.get(name)
        except (ValueError, KeyError, TypeError):
            status = None
    if status != "complete":
        outcome.data_loss = True
        left = sorted(p.name for p in runs_dir.iterdir())
        outcome.first_line = f"run {name} listed as {status}; folder holds {left}"
    else:
        predicted, _ = run_cli(
            "data-loss",
            f"{label}: predict",
            ["predict", runs_dir / name, "--index", "0", "--json"],
            ctx,
            "ok",
            120,
        )
        if predicted.rc != 0:
            outcome.data_loss = True
            outcome.first_line = f"the kept run does not predict: exit {predicted.rc}"
        return [outcome, listing, predicted]
    return [outcome, listing]


def swap_crash_case(ctx: Context, step: str, repeat: int) -> list[Outcome]:
    runs_dir = ctx.root / "swap" / f"{step}-{repeat}"
    runs_dir.mkdir(parents=True)
    final = runs_dir / ctx.good.name
    shutil.copytree(ctx.good, final)
    env = {**ctx.env, "DIGITLAB_TEST_CRASH_AT": step}
    done = subprocess.run(
        [PYTHON, "-c", CRASHER, str(final), step], env=env, capture_output=True, check=False
    )
    killed = done.returncode == -signal.SIGKILL
    recovered = subprocess.run(
        [
            PYTHON,
            "-c",
            "import sys; from digitlab.runs import recover; recover(sys.argv[1])",
            str(runs_dir),
        ],
        env=ctx.env,
        capture_output=True,
        text=True,
        check=False,
    )
    label = f"staged_run killed at {step} #{repeat}"
    outcomes = _check_run_kept(
        ctx,
        runs_dir,
        final.name,
        label,
        f"DIGITLAB_TEST_CRASH_AT={step} python -c CRASHER; recover()",
        killed,
    )
    if recovered.returncode != 0:
        outcomes[0].traceback = TRACEBACK in recovered.stderr
        outcomes[0].bad_exit = True
        outcomes[0].first_line = recovered.stderr.strip().splitlines()[-1][:200]
    shutil.rmtree(runs_dir, ignore_errors=True)
    return outcomes


def resume_crash_case(ctx: Context, step: str) -> list[Outcome]:
    """A real `digitlab train --resume` killed at `step`, then a new `digitlab train` in the
    same folder (which used to delete the stale staging folder holding the only copy)."""
    runs_dir = ctx.root / "resume" / step
    runs_dir.mkdir(parents=True)
    final = runs_dir / ctx.good.name
    shutil.copytree(ctx.good, final)
    env = {**ctx.env, "DIGITLAB_TEST_CRASH_AT": step}
    args = ["train", "--resume", final.name, "--epochs", "2", "--runs-dir", runs_dir]
    resumed, _ = run_cli(
        "data-loss", f"train --resume killed at {step}", args, ctx, "any", 180, env=env
    )
    killed = resumed.rc == -signal.SIGKILL
    resumed.bad_exit = False if killed else resumed.bad_exit  # the kill is the point
    after, _ = run_cli(
        "data-loss",
        f"train after a killed resume ({step})",
        ["train", "--train-samples", "200", "--epochs", "1", "--runs-dir", runs_dir],
        ctx,
        "ok",
        180,
    )
    outcomes = _check_run_kept(
        ctx,
        runs_dir,
        final.name,
        f"train --resume killed at {step}",
        f"DIGITLAB_TEST_CRASH_AT={step} digitlab {' '.join(map(str, args))}; digitlab train ...",
        killed,
    )
    shutil.rmtree(runs_dir, ignore_errors=True)
    return [resumed, after, *outcomes]


# ------------------------------------------------------------------------------- reporting
COLUMNS = (
    "cases",
    "tracebacks",
    "5xx",
    "non-0/2 exits",
    "multi-Error",
    "hangs",
    "data loss",
    "wrong outcome",
)


# ---------------------------------------------------- experiments and two writers (issue 19)
EXPERIMENT_HEAD = 'question = "?"\n[budget]\nepochs = 1\ntrain_samples = {n}\nseeds = 1\n{extra}'
VARIANT = '[[variants]]\nname = "{}"\n{}\n'
EXPERIMENT_VARIANTS = {  # name: (budget lines, variants after one plain "ok", expected)
    "a fast (image-input) variant": ("", VARIANT.format("f", 'preset = "fast"'), "ok"),
    "an ema_momentum variant": ("", VARIANT.format("e", "train = {ema_momentum = 0.99}"), "ok"),
    "a split leaving nothing to fit": ("validation_split = 0.9999\n", "", "error"),
    "a batch larger than the digits": ("", VARIANT.format("b", "train.batch_size = 512"), "error"),
    "a Densee layer": ("", VARIANT.format("d", 'layers = [{type = "Densee"}]'), "error"),
    "a Conv2D on flat input": (
        "",
        VARIANT.format(
            "c",
            'layers = [{type = "Conv2D", filters = 4, kernel_size = 3}, {type = "Flatten"}, '
            '{type = "Dense", units = 10}]',
        ),
        "error",
    ),
    "batch_size = 0": ("", VARIANT.format("z", "train = {batch_size = 0}"), "error"),
    "two datasets": ("", VARIANT.format("m", 'train = {dataset = "fashion-mnist"}'), "error"),
    "comparisons = [['ok']]": ("", 'comparisons = [["ok"]]\n', "error"),
}


def _experiment_file(folder: Path, name: str, budget: str, variants: str) -> Path:
    path = folder / f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.toml"
    head = EXPERIMENT_HEAD.format(n=400, extra=budget)
    if variants.startswith("comparisons"):
        head, variants = variants + head, '[[variants]]\nname = "b"\n'
    path.write_text(head + '[[variants]]\nname = "ok"\n' + variants)
    return path


def experiment_cases(ctx: Context) -> list[Outcome]:
    """Experiment files the second campaign broke (issue 19, items 3, 4, 5, 12, 13, 17): each
    trains and saves, or is refused in one line, leaving no experiment folder behind."""
    folder = ctx.root / "experiments-19"
    folder.mkdir(exist_ok=True)
    outcomes = []
    for name, (budget, variants, expect) in EXPERIMENT_VARIANTS.items():
        runs = folder / f"runs-{len(outcomes)}"
        path = _experiment_file(folder, name, budget, variants)
        args = ["experiment", path, "--runs-dir", runs]
        outcome, _ = run_cli("cli", f"experiment with {name}", args, ctx, expect, 300)
        left = sorted(p.name for p in (runs / "experiments").glob("*"))
        if expect == "error" and left:
            outcome.wrong = f"refused, but left experiment folders behind: {left}"
        outcomes.append(outcome)
    return outcomes


def _edited_copy(base: Path, into: Path, edit) -> Path:
    folder = into / base.name
    shutil.copytree(base, folder)
    edit(folder)
    return folder


def _edit_json(path: Path, change) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def experiment_resume_cases(ctx: Context) -> list[Outcome]:
    """--resume on an edited experiment folder is refused in one line (items 14, 17), and two
    `--resume` of one folder at once never train the same cells twice (item 2)."""
    folder = ctx.root / "experiments-19-resume"
    folder.mkdir()
    toml = folder / "base.toml"
    toml.write_text(EXPERIMENT_HEAD.format(n=300, extra="") + '[[variants]]\nname = "a"\n')
    args = ["experiment", toml, "--runs-dir", folder / "base"]
    first, _ = run_cli("cli", "experiment base", args, ctx, "ok", 300)
    found = sorted((folder / "base" / "experiments").glob("*"))
    if first.rc != 0 or not found:
        return [first]
    base = found[0]
    edits = {
        "experiment.json removed": lambda f: (f / "experiment.json").unlink(),
        "learning_rate_policy cubic": lambda f: _edit_json(
            f / "experiment.json", lambda r: r.update(learning_rate_policy="cubic")
        ),
        "a variant renamed": lambda f: _edit_json(
            f / "experiment.json", lambda r: r["definition"]["variants"][0].update(name="b")
        ),
    }
    outcomes = [first]
    for i, (name, edit) in enumerate(edits.items()):
        edited = _edited_copy(base, folder / f"edit-{i}", edit)
        args = ["experiment", toml, "--resume", edited]
        outcomes.append(run_cli("cli", f"experiment --resume, {name}", args, ctx, "error")[0])
    outcomes.append(_two_resumes(ctx, toml, base))
    return outcomes


def _two_resumes(ctx: Context, toml: Path, base: Path) -> Outcome:
    """Two `experiment --resume FOLDER --seeds 3` at once: one trains seeds 1 and 2, the other
    is refused (or, had they not overlapped, finds nothing to do); every run listed once."""
    outcome = Outcome("data-loss", "two experiment --resume of one folder at once", f"{toml} x2")
    args = [DIGITLAB, "experiment", str(toml), "--resume", str(base), "--seeds", "3"]
    procs = [
        subprocess.Popen(_capped(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, cwd=ctx.root, env=ctx.env)
        for _ in range(2)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=600)[0].decode("utf-8", "replace") for p in procs]
    outcome.rc = max(p.returncode for p in procs)
    runs = sorted(p.name for p in (base / "runs").iterdir() if not p.name.startswith("."))
    variants = json.loads((base / "experiment.json").read_text())["variants"]
    listed = [run for variant in variants for run in variant["runs"]]
    if TRACEBACK in "".join(outputs) or any(p.returncode not in OK_EXITS for p in procs):
        outcome.traceback = TRACEBACK in "".join(outputs)
        outcome.bad_exit = True
        outcome.first_line = " | ".join(o.strip().splitlines()[-1][:120] for o in outputs if o)
    elif len(runs) != 3 or sorted(listed) != runs:
        outcome.data_loss = True
        outcome.first_line = f"runs/ holds {runs}, the record lists {listed}"
    return outcome


def two_writers_case(ctx: Context) -> list[Outcome]:
    """Two `train --name same` started together in one folder: both runs are kept (item 2:
    the folder name was chosen check-then-create, and the swap replaced an existing one)."""
    runs_dir = ctx.root / "two-writers"
    outcome = Outcome("data-loss", "two train --name same at once", f"train x2 in {runs_dir}")
    args = [DIGITLAB, "train", "--name", "same", "--train-samples", "300", "--epochs", "1",
            "--runs-dir", str(runs_dir)]  # fmt: skip
    procs = [
        subprocess.Popen(_capped(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, cwd=ctx.root, env=ctx.env)
        for _ in range(2)
    ]  # fmt: skip
    for proc in procs:
        proc.communicate(timeout=600)
    outcome.rc = max(p.returncode for p in procs)
    kept = sorted(p.name for p in runs_dir.iterdir() if (p / "config.json").is_file())
    if outcome.rc != 0:
        outcome.bad_exit = True
        outcome.first_line = f"exit statuses {[p.returncode for p in procs]}"
    elif len(kept) != 2:
        outcome.data_loss = True
        outcome.first_line = f"two runs trained, {len(kept)} kept: {kept}"
    return [outcome]


# ------------------------------------------ outputs, crafted run files, board, serve (issue 19)
def _make_node(path: Path, kind: str) -> bool:
    """A FIFO, or a character device with /dev/null's numbers; False where mknod is refused."""
    import stat

    if kind == "a FIFO":
        os.mkfifo(path)
        return True
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        return False
    return True


def _node_kept(path: Path, kind: str) -> bool:
    import stat

    mode = os.lstat(path).st_mode
    return stat.S_ISFIFO(mode) if kind == "a FIFO" else stat.S_ISCHR(mode)


def _writers(folder: Path, runs: Path) -> dict[str, tuple[list, Path]]:
    """Every command that writes, as (arguments, the path it writes), in `folder`; `runs`
    holds two copies of the base run, "a" and "b" (item 1)."""
    image, journal, x = folder / "digit.png", folder / "study.journal", folder / "x"
    return {
        "show --out": (["show", "0", "--out", x], x),
        "show --grid --out": (["show", "--grid", "2x2", "--out", x], x),
        "preprocess --out": (["preprocess", image, "--out", x], x),
        "explain --out": (["explain", "a", image, "--runs-dir", runs, "--out", x], x),
        "explain (its default PNG)": (
            ["explain", "a", image, "--runs-dir", runs],
            runs / "a" / "inspect" / "explain-digit.png",
        ),
        "inspect --out": (["inspect", "a", "--count", "10", "--runs-dir", runs, "--out", x], x),
        "compare --out": (["compare", "a", "b", "--runs-dir", runs, "--out", x], x),
        "report (report.html)": (["report", "a", "--runs-dir", runs], runs / "a" / "report.html"),
        "evaluate (its pictures)": (
            ["evaluate", "a", "--runs-dir", runs],
            runs / "a" / "confusion_matrix.png",
        ),
        "calibrate (confidence.npz)": (
            ["calibrate", "a", "--runs-dir", runs],
            runs / "a" / "confidence.npz",
        ),
        "train --runs-dir": (
            ["train", "--train-samples", "200", "--epochs", "1", "--runs-dir", x],
            x,
        ),
        "tune report --out": (
            ["tune", "report", "--study", "cut", "--storage", journal, "--out", x],
            x,
        ),
        "tune --runs-dir": (
            ["tune", "--trials", "1", "--train-samples", "200", "--runs-dir", x],
            x,
        ),
        "experiment --runs-dir": (["experiment", "dropout", "--quick", "--runs-dir", x], x),
    }


def output_case(ctx: Context, index: int, name: str, kind: str) -> list[Outcome]:
    """A command that writes, pointed at a FIFO or a device node: refused in one line, and
    the node is still there, untouched (item 1: the atomic rename replaced it)."""
    folder = ctx.root / "outputs-19" / f"{index:02d}"
    runs = folder / "runs"
    for copy in ("a", "b"):
        shutil.copytree(ctx.good, runs / copy)
    _png(28, 28, folder / "digit.png")
    if name.startswith("tune report"):
        _cut_off_journal(folder / "study.journal", b"")  # one complete trial, whole
    args, target = _writers(folder, runs)[name]
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    if not _make_node(target, kind):
        return []  # mknod needs root; the FIFO case still runs
    outcome, _ = run_cli("cli", f"{name} at {kind}", args, ctx, "error", 180)
    if not _node_kept(target, kind):
        outcome.data_loss = True
        outcome.first_line = f"{target} ({kind}) was replaced"
    shutil.rmtree(folder, ignore_errors=True)
    return [outcome]


def crafted_file_cases(ctx: Context) -> list[Outcome]:
    """Run files and images the second campaign crafted (items 7, 8, 15, 16): a history of inf
    or 1e308 is drawn; a ragged confusion matrix is one line for report, inspect and
    calibrate; an image or confidence.npz that is not a file is named for what it is."""
    folder = ctx.root / "crafted-19"
    outcomes = []
    for i, value in enumerate(("inf", "1e308", "-1e308")):
        runs = folder / f"history-{i}"
        for copy in ("a", "b"):
            shutil.copytree(ctx.good, runs / copy)
        rows = "\n".join(f"{e},{value},0.5,{value},{value}" for e in (1, 2))
        (runs / "a" / "history.csv").write_text(f"epoch,loss,accuracy,val_loss,mae\n{rows}\n")
        for args in (["compare", "a", "b", "--out", runs / "cmp"], ["report", "a"]):
            name = f"{args[0]} on a history of {value}"
            outcomes.append(run_cli("cli", name, [*args, "--runs-dir", runs], ctx, "ok")[0])
    runs = folder / "ragged"
    shutil.copytree(ctx.good, runs / "a")
    metrics = json.loads((runs / "a" / "metrics.json").read_text())
    metrics["confusion_matrix"] = [[1, 2], [3]]
    (runs / "a" / "metrics.json").write_text(json.dumps(metrics))
    for command in (["report", "a"], ["inspect", "a", "--count", "10"], ["calibrate", "a"]):
        name = f"{command[0]} on a ragged confusion matrix"
        outcomes.append(run_cli("cli", name, [*command, "--runs-dir", runs], ctx, "error")[0])
    images = special_paths(folder / "images")
    for what in ("a FIFO", "a folder", "a symlink to /dev/zero"):
        outcome, text = run_cli(
            "cli", f"explain an image that is {what}", ["explain", ctx.good, images[what]], ctx
        )
        if not outcome.failed and "not found" in text:
            outcome.wrong = "said 'not found' for a path that is there"
        outcomes.append(outcome)
    runs = folder / "npz-folder"
    shutil.copytree(ctx.good, runs / "a")
    with contextlib.suppress(FileNotFoundError):
        (runs / "a" / "confidence.npz").unlink()
    (runs / "a" / "confidence.npz").mkdir()
    outcome, text = run_cli(
        "cli", "calibrate, confidence.npz a folder", ["calibrate", "a", "--runs-dir", runs], ctx
    )
    if not outcome.failed and "pass a file name" in text:
        outcome.wrong = "told to pass a file name, not that confidence.npz is a folder"
    outcomes.append(outcome)
    shutil.rmtree(folder, ignore_errors=True)
    return outcomes


def _until_url(proc: subprocess.Popen, seconds: float) -> tuple[str, str]:
    """Read `proc`'s output until it prints a URL (returned, with all it printed), or not."""
    seen, deadline = "", time.monotonic() + seconds
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline and proc.poll() is None:
        chunk = proc.stdout.read() or b""
        seen += chunk.decode("utf-8", "replace")
        if match := re.search(r"http://\S+", seen):
            return match.group(0), seen
        time.sleep(0.2)
    return "", seen


def _start_server(ctx: Context, args: list[str]) -> subprocess.Popen:
    """`digitlab ARGS` as a server in its own session (killed by group), output in one pipe."""
    return subprocess.Popen(_capped([DIGITLAB, *args]), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ctx.root,
                            env=ctx.env, start_new_session=True)  # fmt: skip


def board_case(ctx: Context) -> list[Outcome]:
    """`digitlab board DIR` where runs' tensorboard/ is a file or a FIFO names them (item 18)."""
    runs = ctx.root / "board-19"
    for name in ("a-file", "a-fifo"):
        (runs / name).mkdir(parents=True)
    (runs / "a-file" / "tensorboard").write_text("x")
    os.mkfifo(runs / "a-fifo" / "tensorboard")
    shutil.copytree(ctx.good, runs / "good")  # a real run: the board shows runs with events
    args = ["board", str(runs), "--port", str(_free_port())]
    start = time.monotonic()
    outcome = Outcome(
        "cli", "board with a tensorboard/ file and FIFO", "digitlab " + " ".join(args)
    )
    proc = _start_server(ctx, args)
    url, seen = _until_url(proc, 90)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    outcome.seconds = time.monotonic() - start
    outcome.rc = 0 if url else proc.returncode
    if not url:
        return [classify(outcome, seen, "ok")]
    skipped = [line for line in seen.splitlines() if line.startswith("skipped ")]
    if sorted(line.split(":")[0] for line in skipped) != ["skipped a-fifo", "skipped a-file"]:
        outcome.wrong = f"served without naming both runs it skipped: {skipped}"
    return [outcome]


def slow_headers_case(ctx: Context) -> list[Outcome]:
    """`digitlab serve`: a client that never finishes its headers is disconnected (item 10;
    the bound is 2 × api.server.HEADER_TIMEOUT, 20 s: not closed in 60 s is a hang)."""
    port = _free_port()
    args = ["serve", str(ctx.good), "--port", str(port)]
    start = time.monotonic()
    outcome = Outcome(
        "http", "serve: a client that never finishes its headers", "digitlab " + " ".join(args)
    )
    proc = _start_server(ctx, args)
    try:
        url, seen = _until_url(proc, 90)
        if not url:
            outcome.rc = proc.returncode
            return [classify(outcome, seen, "ok")]
        time.sleep(1)  # announced when bound; the app loads its model right after
        outcome.rc = 0
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.settimeout(60)
            client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            try:
                while client.recv(4096):
                    pass
            except TimeoutError:
                outcome.hang = True
                outcome.first_line = "a connection with half its headers open after 60 s"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        outcome.seconds = time.monotonic() - start
    return [outcome]


def issue19_output_jobs(ctx: Context) -> list:
    """This section's jobs: one per command that writes and kind of node, then the others."""
    names = list(_writers(Path("folder"), Path("runs")))
    kinds = ("a FIFO", "a device node")
    jobs = [
        lambda i=i, n=name, k=kind: output_case(ctx, i, n, k)
        for i, (name, kind) in enumerate((n, k) for n in names for k in kinds)
    ]
    return [*jobs, lambda: crafted_file_cases(ctx), lambda: board_case(ctx),
            lambda: slow_headers_case(ctx)]  # fmt: skip


def summarize(outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for o in outcomes:
        row = table.setdefault(o.family, dict.fromkeys(COLUMNS, 0))
        row["cases"] += 1
        row["tracebacks"] += o.traceback
        row["5xx"] += o.server_error
        row["non-0/2 exits"] += o.bad_exit
        row["multi-Error"] += o.multi_error
        row["hangs"] += o.hang
        row["data loss"] += o.data_loss
        row["wrong outcome"] += bool(o.wrong)
    table["total"] = {c: sum(r[c] for r in table.values()) for c in COLUMNS}
    return table


def markdown(table: dict[str, dict[str, int]]) -> str:
    lines = ["| family | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for family, row in table.items():
        lines.append(f"| {family} | " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


def _guarded(job) -> list[Outcome]:
    """Run one job; a bug in this script becomes a counted "harness" outcome, not a crash."""
    try:
        return job()
    except Exception as exc:
        outcome = Outcome("harness", "bench_robustness.py itself", repr(job))
        outcome.traceback = True
        outcome.first_line = f"{type(exc).__name__}: {exc}"[:200]
        return [outcome]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="Subprocess cases run at once.")
    parser.add_argument(
        "--schemathesis-examples",
        type=int,
        default=10,
        help="Examples per operation and phase (0 skips schemathesis).",
    )
    parser.add_argument("--repeats", type=int, default=2, help="Kills per swap step.")
    parser.add_argument("--json-out", type=Path, help="Also write the results here.")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch folder.")
    options = parser.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "jax")

    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="digitlab-robustness-"))
    env = _env(root)
    print(f"scratch {root}; training the base run ...", flush=True)
    good = train_base_run(root, env)
    ctx = Context(root, good, env)
    outcomes: list[Outcome] = []

    jobs = []  # callables returning lists of Outcome
    for name, args, expect in flag_cases():
        runs = root / "flag-runs" / re.sub(r"\W+", "-", name)
        jobs.append(
            lambda n=name, a=args, e=expect, r=runs: [
                run_cli("cli", f"train {n}", ["train", *a, "--runs-dir", r], ctx, e)[0]
            ]
        )
    for name, args, expect in spec_cases(root / "specs"):
        jobs.append(lambda n=name, a=args, e=expect: [run_cli("cli", n, a, ctx, e)[0]])
    for name, args, expect in path_cases(ctx):
        jobs.append(lambda n=name, a=args, e=expect: [run_cli("cli", n, a, ctx, e, 90)[0]])
    jobs.append(lambda: [run_serve("serve a good run", str(good), good.parent, ctx, "ok")])
    crafted = breakages()
    for i, (name, how, full) in enumerate(crafted):
        jobs.append(lambda i=i, n=name, h=how, f=full: crafted_run_case(ctx, i, n, h, f))
    jobs.append(lambda: all_broken_in_one_folder(ctx, crafted))
    jobs += [lambda: experiment_cases(ctx), lambda: experiment_resume_cases(ctx)]  # issue 19
    jobs.append(lambda: two_writers_case(ctx))
    jobs += issue19_output_jobs(ctx)  # issue 19: outputs, crafted files, board, serve
    slow = [lambda s=step: resume_crash_case(ctx, s) for step in ("before-swap", "between-renames")]
    for step in ("mid-write", "before-swap", "between-renames", "none"):
        for repeat in range(options.repeats):
            jobs.append(lambda s=step, r=repeat: swap_crash_case(ctx, s, r))
    jobs = slow + jobs  # the slow ones first, so the workers finish together
    print(f"{len(jobs)} jobs on {options.jobs} workers ...", flush=True)
    with futures.ThreadPoolExecutor(options.jobs) as pool:
        pending = [pool.submit(_guarded, job) for job in jobs]
        http = http_campaign(good)  # in this process, meanwhile
        schema_outcomes, schema_note = (
            schemathesis_campaign(good, options.schemathesis_examples)
            if options.schemathesis_examples > 0
            else ([], "skipped")
        )
        for done, future in enumerate(pending, 1):
            outcomes += future.result()
            for o in future.result():
                if o.failed:
                    print(f"  FAILED [{o.family}] {o.name}: {o.first_line}", flush=True)
            if done % 50 == 0:
                print(
                    f"  {done}/{len(pending)} jobs, {time.monotonic() - started:.0f} s", flush=True
                )
    outcomes += http + schema_outcomes

    table = summarize(outcomes)
    elapsed = time.monotonic() - started
    print(
        f"\nRobustness campaign, {datetime.now():%Y-%m-%d %H:%M}, {elapsed:.0f} s, "
        f"schemathesis: {schema_note}\n"
    )
    print(markdown(table))
    failures = [o for o in outcomes if o.failed]
    wrong = [o for o in outcomes if o.wrong and not o.failed]
    for title, rows in (("FAILURES", failures), ("wrong outcomes", wrong)):
        if rows:
            print(f"\n{title}:")
            for o in rows:
                detail = o.first_line if o.failed else o.wrong
                print(f"- [{o.family}] {o.name}: `{o.command[:300]}` (exit {o.rc}): {detail}")
    result = {
        "date": f"{datetime.now():%Y-%m-%d %H:%M}",
        "seconds": round(elapsed),
        "schemathesis": schema_note,
        "summary": table,
        "failures": [o.__dict__ for o in failures],
        "wrong_outcomes": [o.__dict__ for o in wrong],
    }
    print("\n" + json.dumps(result, indent=1, default=str))
    if options.json_out:
        options.json_out.write_text(json.dumps(result, indent=1, default=str))
    if not options.keep:
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
