"""`digitlab predict`, `preprocess` and `calibrate`: a run's answers and how sure they are."""

from __future__ import annotations

from pathlib import Path

import typer

from digitlab.cli.app import app, console, print_json
from digitlab.cli.options import DataDirOption, JsonOption, RunArgument, RunsDirOption
from digitlab.errors import DigitlabError


# ------------------------------------------------------------------------------------- predict
@app.command("predict")
def predict(
    run: str = RunArgument,
    images: list[Path] | None = typer.Argument(None, help="Image files (PNG, JPEG, ...)."),
    index: list[str] | None = typer.Option(
        None, "--index", "-i", help="Test-split digits: 0, 0,1,2 or 0-9 (repeatable)."
    ),
    npy: Path | None = typer.Option(None, "--npy", help="A .npy array, N×28×28 or N×784."),
    raw: bool = typer.Option(
        False, "--raw", help="Images are already MNIST-like (white on black): only resize."
    ),
    runs_dir: Path | None = RunsDirOption,
    data_dir: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Predict digits with a trained run: test-set indices, a .npy array or image files.

    Images go through MNIST-style preprocessing (crop, 20 px box, centre of mass) unless
    `--raw`. One bad input doesn't sink the others: each good one is predicted, and each
    image or .npy file that can't be read gets a row (a JSON entry `{"input", "error"}`)
    with its reason; the exit status is then 2. Alone, a bad input is one `Error:` line.

    Examples:

    * `digitlab predict latest --index 0` (a 7)
    * `digitlab predict latest --index 0-9 --json`
    * `digitlab predict latest my_digit.png`
    * `digitlab predict latest three.png blank.png seven.png` (blank.png: "no digit found")
    * `digitlab predict latest --npy batch.npy`
    """
    from digitlab.prediction import gather_inputs, predict_inputs
    from digitlab.runs import load_run

    loaded = load_run(run, runs_dir)
    inputs = gather_inputs(loaded, images, index, npy=npy, raw=raw, data_dir=data_dir)
    prediction = predict_inputs(loaded, inputs)
    if as_json:
        print_json(prediction.to_list(inputs.truths))
    else:
        console.print(prediction.table(inputs.truths))
        first = prediction.verdicts[0] if prediction.verdicts else {}
        if first.get("confident", False) is None:
            console.print(
                f"no confidence thresholds in this run: `digitlab calibrate {run}` adds them"
            )
        elif first and first.get("prediction_set") is None:
            console.print(f"no prediction sets in this run: `digitlab calibrate {run}` adds them")
    if prediction.refused:
        total = len(prediction.probabilities) + len(prediction.refused)
        where = 'its "error" entry' if as_json else "its row"
        raise DigitlabError(
            f"{len(prediction.refused)} of {total} inputs could not be predicted; "
            f"each one's reason is in {where} above"
        )


# ---------------------------------------------------------------------------------- preprocess
@app.command("preprocess")
def preprocess(
    image: Path = typer.Argument(..., help="A photo, scan or drawing of one digit."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write what the model sees, enlarged, to this PNG."
    ),
    terminal: bool = typer.Option(False, "--terminal", help="Also draw it in the terminal."),
) -> None:
    """Turn an image into the 28×28 a model sees, the way MNIST was made.

    Grayscale, ink detection (dark on light or light on dark), threshold, crop, scale the
    long side to 20 px, centre by centre of mass in 28×28.

    Examples:

    * `digitlab preprocess my_digit.jpg --out seen.png`
    * `digitlab preprocess photo.png --terminal`
    """
    from digitlab import plots
    from digitlab.prediction import load_image_files
    from digitlab.preprocess import save_preview

    (digit,) = load_image_files([image])
    if terminal or out is None:
        typer.echo(plots.terminal_digit(digit))
    if out is not None:
        save_preview(digit, out)
        console.print(f"wrote {out}")


@app.command("calibrate")
def calibrate(
    run: str = RunArgument,
    runs_dir: Path | None = RunsDirOption,
    data_dir: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Calibrate a run's confidence verdict ("unsure", "not a digit") and its 95% prediction
    sets ("4 or 9"), and store them.

    New runs are calibrated when training ends; this adds them to an older run (whose
    predictions carry `confident: null` or `prediction_set: null`) or redoes them.
    Calibration uses the first half of the test split (writers the network never saw; the
    second half stays for measuring). config.json and confidence.npz are rewritten
    atomically.

    Example: `digitlab calibrate latest`
    """
    from digitlab.confidence import calibrate_run, calibration_message
    from digitlab.runs import load_run

    loaded = load_run(run, runs_dir)
    # a spinner on a terminal (nothing in a pipe): the first calibration on a set of training
    # digits trains the verifiers and the companion, for minutes
    with console.status(f"calibrating {loaded.name} (minutes the first time on its digits)"):
        thresholds = calibrate_run(loaded, data_dir=data_dir)
    if as_json:
        print_json({"run": str(loaded.path), "thresholds": thresholds})
        return
    console.print(calibration_message(loaded.name, thresholds))
