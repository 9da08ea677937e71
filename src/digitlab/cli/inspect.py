"""`digitlab serve`, `inspect` and `explain`: a run served over HTTP, and looked inside."""

from __future__ import annotations

from pathlib import Path

import typer

from digitlab.cli.app import app, console, print_json
from digitlab.cli.options import DataDirOption, JsonOption, RunArgument, RunsDirOption, port_option


# --------------------------------------------------------------------------------------- serve
@app.command("serve")
def serve(
    run: str = RunArgument,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; loopback by default."),
    port: int = port_option(8000),
    runs_dir: Path | None = RunsDirOption,
) -> None:
    """Serve a run over HTTP: the drawing page at /, the JSON API at /predict, docs at /docs.

    Examples:

    * `digitlab serve latest` then open http://127.0.0.1:8000
    * `curl -F file=@digit.png http://127.0.0.1:8000/predict`
    """
    import numpy as np

    from digitlab.api import run_server
    from digitlab.runs import load_run

    loaded = load_run(run, runs_dir)
    loaded.predict_proba(np.zeros((1, *loaded.image_shape), np.uint8))  # a bad model: one line
    run_server(  # announced only once the port is bound; a taken one is one line, exit 2
        loaded,
        host=host,
        port=port,
        on_listening=lambda url: console.print(f"serving {loaded.path} on {url}  (Ctrl-C stops)"),
    )


# ---------------------------------------------------------------------------- inspect, explain
@app.command("inspect")
def inspect_command(
    run: str = RunArgument,
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Folder for the pictures and inspect.json [default: RUN/inspect]."
    ),
    count: int = typer.Option(1000, "--count", "-n", help="Test digits to measure on."),
    runs_dir: Path | None = RunsDirOption,
    data_dir: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """What the network learned: first-layer weights, activation statistics, class averages,
    and, for a run that recorded its training, activations, gradients, update ratios and the
    noise scale over its epochs.

    Writes weights.png, activations.png, class_inputs.png and inspect.json, and
    activation_histograms.png and training_signals.png from the run's mechanisms.json.

    Examples:

    * `digitlab inspect latest`
    * `digitlab inspect latest --count 5000 --out inspect-seed`
    """
    from digitlab.insight import inspect as inspect_run
    from digitlab.insight.recording import NOT_RECORDED, save_recording_pictures
    from digitlab.runs import INSPECT_DIR, load_run

    loaded = load_run(run, runs_dir)
    # the training record first: inspecting rewrites the run's report, which inlines both
    recorded = save_recording_pictures(loaded, out or loaded.path / INSPECT_DIR)
    result = inspect_run(loaded, out, count=count, data_dir=data_dir)
    if as_json:
        print_json({**result.to_dict(), "training_record": [str(p) for p in recorded]})
        return
    result.print(console)
    for path in recorded:
        console.print(f"training record: {path}", highlight=False, markup=False)
    if not recorded:
        console.print(NOT_RECORDED, highlight=False, markup=False)


@app.command("explain")
def explain(
    run: str = RunArgument,
    image: Path | None = typer.Argument(None, help="An image file of one digit."),
    index: int | None = typer.Option(None, "--index", "-i", help="A test-split digit instead."),
    target: int | None = typer.Option(
        None, "--target", help="The class to explain [default: the predicted one]."
    ),
    method: str = typer.Option(
        "integrated", "--method", help="Saliency: integrated (gradients) or gradient."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="The PNG to write [default: RUN/inspect/explain-<name>.png]."
    ),
    raw: bool = typer.Option(
        False, "--raw", help="The image is already MNIST-like (white on black): only resize."
    ),
    runs_dir: Path | None = RunsDirOption,
    data_dir: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Why this answer: the digit as the model sees it, a saliency map, every layer's
    activations, and the top-3 classes.

    Examples:

    * `digitlab explain latest --index 0`
    * `digitlab explain latest my_digit.png --json`
    """
    from digitlab.insight import DigitChoice, explain_digit
    from digitlab.runs import load_run

    choice = DigitChoice(image, index, raw=raw)  # one image file or --index, else one line
    loaded = load_run(run, runs_dir)
    explained = explain_digit(
        loaded, choice, target=target, method=method, out=out, data_dir=data_dir
    )
    if as_json:
        print_json(explained.to_dict())
        return
    explained.print(console)
