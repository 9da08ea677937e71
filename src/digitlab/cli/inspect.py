"""`digitlab serve`, `inspect` and `explain`: a run served over HTTP, and looked inside."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from digitlab.cli.app import app, console, print_json
from digitlab.cli.options import DataDirOption, JsonOption, RunArgument, RunsDirOption, port_option
from digitlab.errors import DigitlabError


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
    from digitlab.api import run_server
    from digitlab.runs import load_run

    loaded = load_run(run, runs_dir)
    loaded.model  # noqa: B018  load it now: a bad model is refused here, in one line
    run_server(  # announced only once the port is bound; a taken one is one line, exit 2
        loaded,
        host=host,
        port=port,
        on_listening=lambda url: console.print(f"serving {loaded.path} on {url}  (Ctrl-C stops)"),
    )


# ------------------------------------------------------------ inspect, explain, calibrate (helper)
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
    """What the network learned: first-layer weights, activation statistics, class averages.

    Writes weights.png, activations.png, class_inputs.png and inspect.json.

    Examples:

    * `digitlab inspect latest`
    * `digitlab inspect latest --count 5000 --out inspect-seed`
    """
    from digitlab.insight import inspect as inspect_run
    from digitlab.runs import load_run

    loaded = load_run(run, runs_dir)
    result = inspect_run(loaded, out, count=count, data_dir=data_dir)
    if as_json:
        print_json({"run": str(loaded.path), "out": str(result.out_dir), "layers": result.stats})
        return
    table = Table("layer", "activation", "units", "mean", "saturated", "dead ReLU")
    for row in result.table_rows():
        table.add_row(*row)
    console.print(f"run {loaded.path}: {count:,} test digits at most")
    console.print(table)
    for path in result.files:
        console.print(f"wrote {path}")


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
    from digitlab.insight import INSPECT_DIR, save_explanation
    from digitlab.insight import explain as explain_digit
    from digitlab.runs import load_run

    if (image is None) == (index is None):
        raise DigitlabError("give one image file or --index N (a test-split digit)")
    loaded = load_run(run, runs_dir)
    if index is not None:
        from digitlab.data import load_dataset

        _, (x_test, _) = load_dataset(loaded.dataset.name, data_dir=data_dir)
        if not 0 <= index < len(x_test):
            raise DigitlabError(
                f"--index {index} is out of range: the test split has {len(x_test)}"
            )
        digit, name = x_test[index], f"test{index}"
    else:
        from digitlab.prediction import load_image_files

        (digit,) = load_image_files([image], raw=raw, shape=loaded.image_shape)
        name = image.stem
    result = explain_digit(loaded, digit, target=target, method=method)
    path = out or loaded.path / INSPECT_DIR / f"explain-{name}.png"
    save_explanation(digit, result, path)
    if as_json:
        print_json({"run": str(loaded.path), "png": str(path), **result})
        return
    table = Table("class", "probability")
    for row in result["top3"]:
        table.add_row(row["label"], f"{row['probability']:.3f}")
    console.print(table)
    console.print(f"wrote {path}")
