"""The `bigml` command: each command parses its arguments, calls one function, renders the result."""

import functools
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Union

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's C++ start-up chatter out of the output

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bigml_cli.errors import Interrupted, UserError, WorkerLost

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, evaluate, run and export deep-learning models (TensorFlow + Keras 3).")
out = Console()
err = Console(stderr=True, soft_wrap=True)


def _print_version(value: bool):
    if value:
        from importlib.metadata import version

        from bigml_cli import DISTRIBUTION

        print(f"bigml {version(DISTRIBUTION)}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", help="Print bigml's version and exit.",
                                          callback=_print_version, is_eager=True)):
    """Train, evaluate, run and export deep-learning models (TensorFlow + Keras 3)."""


def _quiet_tensorflow_import():
    """TensorFlow's C++ start-up logs (CUDA probing) bypass TF_CPP_MIN_LOG_LEVEL: mute fd 2 while it loads."""
    if "tensorflow" in sys.modules or os.environ.get("BIGML_DEBUG"):
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)

EXIT_USER, EXIT_INTERNAL = 2, 1

DataDir = typer.Option(None, "--data-dir", help="Dataset folder \\[default: $BIGML_DATA_DIR, else ~/.cache/bigml-data].")
Json = typer.Option(False, "--json", help="Print one JSON object instead of tables.")
Beam = typer.Option(0, "--beam", help="Translation runs: beam search with this many beams (0: greedy).")
LengthPenalty = typer.Option(0.6, "--length-penalty", help="Beam search: GNMT's alpha; larger favours longer outputs.")


def handle_errors(fn: Any) -> Callable:
    """User mistakes: one line and exit 2. Anything else: one line and exit 1 (BIGML_DEBUG=1 re-raises)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            if needs_tensorflow(sys.argv[1:]):
                _quiet_tensorflow_import()  # seconds: once the arguments parsed, so a usage error answers at once
            return fn(*args, **kwargs)
        except UserError as e:
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_USER)
        except Interrupted as e:
            err.print(f"[bold yellow]interrupted:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code)
        except WorkerLost as e:
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130)
        except Exception as e:
            if os.environ.get("BIGML_DEBUG"):
                raise
            from bigml_cli.files import disk_error

            # a disk's refusal (full, read-only, forbidden) that no atomic write wrapped, with or without a path
            disk = disk_error(e, getattr(e, "filename", None) or "a file")
            if disk is not None:
                err.print(f"[bold red]error:[/] {escape(str(disk))}", highlight=False, soft_wrap=True)
                raise typer.Exit(EXIT_USER)
            advice = isinstance(e, OSError) and e.filename is not None and os_error_advice(e)
            if advice:
                err.print(f"[bold red]error:[/] cannot use {escape(str(e.filename))}: "
                          f"{escape(e.strerror or str(e))}; {advice}", highlight=False, soft_wrap=True)
                raise typer.Exit(EXIT_USER)
            err.print(f"[bold red]internal error:[/] {type(e).__name__}: {escape(str(e))} "
                      "(set BIGML_DEBUG=1 for the traceback)", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERNAL)

    return wrapper


MAX_TABLE_ROWS = 100  # predict's table on the terminal; --out and --json carry every row


def os_error_advice(e: Any) -> Optional[str]:
    """What to do about an operating-system error on a path the user gave (an output folder, mostly), or None.
    A disk's refusals (full, read-only, forbidden) are files.DISK_ADVICE's."""
    import errno

    return {
        errno.ENOTDIR: "part of that path is a file, not a folder; pick another path",
        errno.EEXIST: "part of that path is a file, not a folder; pick another path",
        errno.ENOENT: "a folder in that path does not exist and cannot be made there; check the path",
        errno.EISDIR: "that is a folder; give a file",
    }.get(e.errno)


def metrics_table(title: str, metrics: dict, name: str = "metric", justify: str = "right") -> Table:
    table = Table(title=title, min_width=len(title))  # a path in the title stays on one line
    table.add_column(name)
    table.add_column("value", justify=justify)
    for key, value in metrics.items():
        table.add_row(key, format_number(value))
    return table


def format_number(value: Any) -> str:
    """4 significant digits, but large numbers in full with thousands separators (29,430, not 2.943e+04)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _config(model, dataset, recipe, target, overrides, strategy=None, precision=None, xla=None, text_column=None,
            init=None):
    from bigml_cli import config

    overrides = list(overrides or [])
    if model and "=" in model:  # `bigml train --recipe R train.epochs=3`: the recipe names the model
        model, overrides = None, [model, *overrides]
    if not model and not recipe:
        raise UserError("give the model, e.g. `bigml train cnn --dataset cifar10` (see `bigml list models`), "
                        "or a --recipe that names one; `bigml train --resume RUN` continues a run")
    if precision:
        overrides.append(f"train.precision={precision}")
    if xla is not None:
        overrides.append(f"train.jit_compile={str(xla).lower()}")
    if target:
        overrides.append(f"data.target={json.dumps(target)}")
    if text_column:
        overrides.append(f"data.text_column={json.dumps(text_column)}")
    if init:
        overrides.append(f"train.init={json.dumps(init)}")
    if strategy:
        overrides.append(f"train.strategy={strategy}")
    return config.load(model, dataset, recipe, overrides)


@app.command()
@handle_errors
def train(
    model: Optional[str] = typer.Argument(None, help="Model family: see `bigml list models` (or taken from --recipe)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Dotted recipe overrides, e.g. train.epochs=3."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Dataset name, a folder (images or .txt per class), a .csv (or .tsv) table or a .txt corpus."),
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="Recipe name or YAML file \\[default: MODEL_DATASET if shipped]."),
    target: Optional[str] = typer.Option(None, "--target", help="CSV datasets: the column to predict."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="CSV datasets: a column of text for text models (rnn, transformer) \\[default: detected]."),
    data_dir: Optional[str] = DataDir,
    run_dir: Optional[str] = typer.Option(None, "--run-dir", help="Where to write the run \\[default: runs/MODEL-DATASET[-N]]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --run-dir."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="auto, cpu, gpu, mirrored, tpu or multi-worker \\[default: the recipe's train.strategy]."),
    init: Optional[str] = typer.Option(None, "--init", help="Start from an earlier run's weights wherever the layers match (and, for texts, its vocabulary); a new head is built for new classes."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue the unfinished run in this directory from its last checkpoint (several workers: on the chief, with the same --workers; the others run their own command again)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="float32, mixed_float16, mixed_bfloat16, or auto (mixed_bfloat16 on a CPU with BF16 instructions, else float32) \\[default: the recipe's]."),
    xla: Optional[bool] = typer.Option(None, "--xla/--no-xla", help="Compile steps with XLA \\[default: the recipe's train.jit_compile]."),
    workers: Optional[str] = typer.Option(None, "--workers", help="Multi-worker training: HOST:PORT,HOST:PORT,... (same list on every machine)."),
    worker_index: Optional[int] = typer.Option(None, "--worker-index", help="This machine's position in --workers (0 is the chief)."),
    as_json: bool = Json,
) -> None:
    """Train a model; writes a run directory with the model, checkpoints, history and test metrics."""
    from bigml_cli import train as training

    if resume and (model or overrides or dataset or recipe or target or text_column or init or strategy or run_dir or precision
                   or xla is not None):
        raise UserError("--resume RUN continues with the run's own config.yaml; give no model, dataset, "
                        "recipe, overrides or --run-dir with it")
    if workers is not None or worker_index is not None:
        from bigml_cli.distribute import workers_tf_config

        os.environ["TF_CONFIG"] = workers_tf_config(workers or "", worker_index)
        strategy = strategy or "multi-worker"
    if resume:
        metrics = training.run(None, run_dir=resume, data_root=data_dir, console=err, resume=True)
    else:
        cfg = _config(model, dataset, recipe, target, overrides, strategy, precision, xla, text_column, init)
        command = "bigml " + " ".join(sys.argv[1:]) if sys.argv and "bigml" in sys.argv[0] else None
        metrics = training.run(cfg, run_dir=run_dir, data_root=data_dir, overwrite=overwrite, console=err,
                               command=command)
    if as_json:
        print(json.dumps(metrics))
    elif metrics.get("worker") == "non-chief":  # multi-worker: the chief alone writes the run and tests it
        out.print(f"this worker's part is done ({metrics['train_seconds']} s of training); worker 0, the chief, "
                  "writes the run directory and prints the test metrics", markup=False, highlight=False,
                  soft_wrap=True)
    else:
        out.print(metrics_table(f"test metrics: {metrics['run']}", {k: v for k, v in metrics.items() if k != "run"}))
        run_path = shlex.quote(metrics["run"])  # a path with spaces pastes back as one argument
        first = run_task(metrics["run"]).next_step.format(run=run_path)
        out.print(f"next: {first}  |  bigml eval {run_path}  |  bigml export {run_path}", markup=False,
                  highlight=False, soft_wrap=True)


def run_task(run_path: str) -> Any:
    """The task of a run's kind of data."""
    from bigml_cli import runs
    from bigml_cli.tasks import task_for

    return task_for(runs.open_run(run_path).info.input)


@app.command("config")
@handle_errors
def show_config(
    model: Optional[str] = typer.Argument(None, help="Model family (or taken from --recipe)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Dotted recipe overrides."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r"),
    target: Optional[str] = typer.Option(None, "--target"),
    text_column: Optional[str] = typer.Option(None, "--text-column"),
) -> None:
    """Print the resolved config (recipe + overrides) as YAML, without training."""
    cfg = _config(model, dataset, recipe, target, overrides, text_column=text_column)
    print(f"# recipe: {cfg.recipe or '(none: defaults)'}\n" + cfg.dump(), end="")


@app.command("eval")
@handle_errors
def evaluate_cmd(
    run: str = typer.Argument(..., help="Run directory."),
    split: Optional[str] = typer.Option(None, "--split", help="test, val or train. \\[default: test]"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Your own labelled data instead: a folder "
                                          "with a sub-folder per class, a CSV with the run's target column, or a "
                                          ".txt file for a language model."),
    data_dir: Optional[str] = DataDir,
    beam: int = Beam,
    length_penalty: float = LengthPenalty,
    as_json: bool = Json,
) -> None:
    """Evaluate a run: accuracy, loss, per-class precision/recall/F1, confusion matrix (CSV and PNG); BLEU and
    chrF for a translation run."""
    from bigml_cli.evaluate import evaluate
    from bigml_cli.translate import decoding

    report = evaluate(run, split, data_dir, dataset, decoding(beam, length_penalty))
    if as_json:
        from bigml_cli.evaluate import PER_EXAMPLE

        print(json.dumps({k: v for k, v in report.items() if k not in PER_EXAMPLE}, ensure_ascii=False))
        return
    if "bleu" in report:
        show_translation_report(report, run)
        return
    if "perplexity" in report:
        text = report.get("dataset", f"the {'training' if report['split'] == 'train' else 'validation'} text")
        out.print(metrics_table(f"language model {report['run']} on {text}",
                                {k: report[k] for k in ("loss", "perplexity", "accuracy", "examples")}))
        if report.get("unknown_tokens"):
            n, total, kind = report["unknown_tokens"], report["tokens"], report["token_kind"]
            out.print(f"note: {n:,} of {total:,} {kind} ({n / total:.2%}) are not in the model's vocabulary: "
                      + ("they were skipped, and the figures cover the rest" if kind == "characters" else
                         "they read as <unk>, and predicting <unk> counts as right"),
                      markup=False, highlight=False, soft_wrap=True)
        return
    what = f"{report['dataset']} on" if "dataset" in report else f"{report['split']} split of"
    table = Table(title=f"{what} {report['run']}: accuracy {report['accuracy']:.4f} (balanced: the classes' mean "
                        f"recall, {report['balanced_accuracy']:.4f}), "
                        + (f"top-5 {report['top5_accuracy']:.4f}, " if "top5_accuracy" in report else "")
                        + f"loss {report['loss']:.4f}, "
                        f"{report['examples']} examples")
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for row in report["per_class"]:
        table.add_row(row["class"], f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}",
                      str(row["support"]))
    out.print(table)
    if report["most_confused"]:
        out.print("most confused: " + ", ".join(f"'{m['label']}' taken for '{m['predicted']}' {m['count']:,} times"
                                                for m in report["most_confused"]), markup=False, highlight=False)
    for note in report.get("notes", []):
        out.print(note, markup=False, highlight=False, soft_wrap=True)
    out.print(f"report and confusion matrix saved in {run}/eval/{report['split']}/")


def show_translation_report(report: dict, run: str) -> None:
    what = report.get("dataset", f"the {report['split']} split")
    how = report["decoding"]["method"] + (f" {report['decoding']['beams']}" if "beams" in report["decoding"] else "")
    out.print(metrics_table(f"translation run {report['run']} on {what} ({how})",
                            {k: report[k] for k in ("bleu", "chrf", "loss", "accuracy", "examples")}))
    table = Table(title="the 10 worst sentences (sentence BLEU)")
    for column in ("source", "reference", "output", "BLEU"):
        table.add_column(column, justify="right" if column == "BLEU" else "left")
    for w in report["worst"]:
        table.add_row(escape(w["source"]), escape(w["reference"]), escape(w["output"]), f"{w['bleu']:.1f}")
    out.print(table)
    for note in report.get("notes", []):
        out.print(note, markup=False, highlight=False, soft_wrap=True)
    out.print(f"report and predictions.csv (source, reference, output) saved in {report['saved_in']}/",
              markup=False, highlight=False, soft_wrap=True)


@app.command()
@handle_errors
def predict(
    run: str = typer.Argument(..., help="Run directory."),
    inputs: List[str] = typer.Argument(..., help="PNG/JPEG images, .npy arrays, CSV files (tables), folders of these, or texts (text models: words, .txt files or folders)."),
    top_k: int = typer.Option(3, "--top-k", "-k", help="How many classes to show per input."),
    from_files: bool = typer.Option(False, "--file", help="Text models: every input is a path of a text file (.txt files and folders are read without it)."),
    out_file: Optional[str] = typer.Option(None, "--out", "-o", help="Also write every prediction to this .csv: input, predicted class, its probability, every class's probability."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the --out file if it exists."),
    beam: int = Beam,
    length_penalty: float = LengthPenalty,
    sample: bool = typer.Option(False, "--sample", help="Translation runs: sample each token (seeded) instead of "
                                "taking the likeliest."),
    temperature: float = typer.Option(1.0, "--temperature", help="With --sample: below 1 safer, above 1 wilder."),
    seed: int = typer.Option(0, "--seed", help="With --sample: the same seed, the same translations."),
    as_json: bool = Json,
) -> None:
    """Predict the classes of your own inputs, or translate sentences with a translation run."""
    from bigml_cli.predict import predict as run_predict
    from bigml_cli.translate import decoding

    answer = run_predict(run, inputs, top_k, from_files, out_file, overwrite,
                         decoding(beam, length_penalty, sample, temperature, 0, seed))
    for note in answer["notes"]:
        err.print(note, markup=False, highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps(answer, ensure_ascii=False))
        return
    if "translations" in answer:
        table = Table()
        for column in ("input", "translation"):
            table.add_column(column)
        for t in answer["translations"][:MAX_TABLE_ROWS]:
            table.add_row(escape(t["input"]), escape(t["translation"]))
        out.print(table)
        return
    results = answer["predictions"]
    table = Table()
    table.add_column("input")
    for i in range(len(results[0]["top_k"])):
        table.add_column(f"#{i + 1}")
    for r in results[:MAX_TABLE_ROWS]:
        table.add_row(r["input"], *[f"{t['label']} ({t['probability']:.1%})" for t in r["top_k"]])
    out.print(table)
    if len(results) > MAX_TABLE_ROWS:
        out.print(f"showing {MAX_TABLE_ROWS} of {len(results):,} predictions; "
                  + ("all of them are" if out_file else "--out FILE.csv writes them all (--json prints them all)")
                  + (f" in {out_file}" if out_file else ""), markup=False, highlight=False, soft_wrap=True)
    elif out_file:
        out.print(f"predictions written to {out_file}", markup=False, highlight=False, soft_wrap=True)


@app.command()
@handle_errors
def generate(
    run: str = typer.Argument(..., help="Run directory of a language model."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="Text to continue."),
    max_tokens: int = typer.Option(200, "--max-tokens", "-n", help="Tokens to generate."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", help="Below 1: safer; above 1: wilder; 0: always the likeliest token."),
    top_k: int = typer.Option(0, "--top-k", "-k", help="Sample among the k likeliest tokens only (0: all)."),
    seed: int = typer.Option(0, "--seed", help="The same seed gives the same text."),
    as_json: bool = Json,
) -> None:
    """Generate text with a language-model run (e.g. gpt on tinyshakespeare)."""
    from bigml_cli.generate import generate as run_generate

    result = run_generate(run, prompt, max_tokens, temperature, top_k, seed)
    if result["unknown_words"]:
        err.print(f"note: the model has never seen {', '.join(result['unknown_words'])}; it reads them as <unk>",
                  markup=False)
    if as_json:
        print(json.dumps(result))
    else:
        print(result["text"])


@app.command()
@handle_errors
def export(
    run: str = typer.Argument(..., help="Run directory."),
    fmt: str = typer.Option("savedmodel", "--format", help="Export format: savedmodel | onnx | litert."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Target folder \\[default: RUN/export/FORMAT]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing target."),
    data_dir: Optional[str] = DataDir,
    as_json: bool = Json,
) -> None:
    """Export a SavedModel, ONNX or LiteRT model taking raw inputs; it is reloaded and checked against Keras."""
    from bigml_cli.export import export as run_export

    result = run_export(run, fmt, out_dir, overwrite, data_dir)
    if as_json:
        print(json.dumps(result))
    else:
        out.print(metrics_table(f"exported {result['path']}", {k: v for k, v in result.items() if k != "path"}))


@app.command()
@handle_errors
def bench(
    recipe: str = typer.Argument("tutorial_cnn_cifar10", help="Recipe to measure (one epoch per measurement)."),
    pairs: int = typer.Option(3, "--pairs", help="bigml/baseline measurement pairs, each in fresh processes."),
    target: float = typer.Option(0.5, "--target", help="Validation accuracy for time-to-accuracy."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also time the hand-written Keras script."),
    data_dir: Optional[str] = DataDir,
    as_json: bool = Json,
) -> None:
    """Throughput, training FLOPs, fraction of peak, time-to-accuracy, and the ratio to a plain Keras script."""
    from bigml_cli.bench import bench as run_bench, peak_caveat

    if pairs < 1:
        raise UserError(f"--pairs must be at least 1, got {pairs}")
    result = run_bench(recipe, pairs, data_dir, target, baseline)
    if as_json:
        print(json.dumps(result))
        return
    flops = result["train_flops_per_example"]
    compute = (f"{flops / 1e6:,.1f} MFLOP/example, {result['fraction_of_peak']:.1%} of peak ({result['peak']})"
               if flops is not None else "FLOPs not counted (the profiler sees one step of a recurrent layer's loop)")
    table = Table(title=f"bench {recipe}: {result['examples_per_second']:,.0f} ex/s, {compute}")
    for col in result["pairs"][0]:
        table.add_column(col, justify="right")
    for row in result["pairs"]:
        table.add_row(*["-" if v is None else f"{v:,.3f}" if isinstance(v, float) else str(v) for v in row.values()])
    out.print(table)
    caveat = peak_caveat([result["fraction_of_peak"]])
    if caveat:
        out.print(f"note: {caveat}", markup=False, highlight=False)
    if baseline:
        out.print(f"median bigml / baseline throughput: {result['median_ratio_vs_baseline']:.2f}x")


@app.command()
@handle_errors
def doctor(as_json: bool = Json) -> None:
    """Print the versions, the devices TensorFlow sees, and the strategy `--strategy auto` would pick."""
    from bigml_cli.distribute import doctor as check

    report = check()
    if as_json:
        print(json.dumps(report))
        return
    out.print(metrics_table("bigml doctor", {k: ", ".join(v) if isinstance(v, list) else v
                                             for k, v in report.items()}, name="check", justify="left"))


@app.command()
@handle_errors
def samples(
    dataset: str = typer.Argument(..., help="Image or text dataset: a name or a folder."),
    out_dir: str = typer.Option("samples", "--out", help="Folder to write the files to."),
    count: int = typer.Option(10, "--count", "-n", help="How many examples."),
    split: str = typer.Option("test", "--split", help="test, val or train."),
    data_dir: Optional[str] = DataDir,
) -> None:
    """Write examples of a dataset split as files (NNNNN_LABEL.png, or .txt for texts), e.g. to try `bigml predict`."""
    from bigml_cli.config import DataConfig
    from bigml_cli.data.samples import write_samples
    from bigml_cli.errors import unknown

    if split not in ("test", "val", "train"):
        raise unknown("split", split, ("test", "val", "train"))
    paths = write_samples(DataConfig(name=dataset), out_dir, count, split, data_dir)
    kind = "texts" if paths and paths[0].endswith(".txt") else "images"
    out.print(f"wrote {len(paths)} {kind} to {out_dir}/")


LISTABLE = ("models", "datasets", "recipes", "runs")


@app.command("list")
@handle_errors
def list_cmd(
    what: str = typer.Argument("models", help="models, datasets, recipes or runs."),
    runs_root: str = typer.Option("runs", "--runs-root", help="Where to look for runs."),
    data_dir: Optional[str] = DataDir,
    as_json: bool = Json,
) -> None:
    """List the models, datasets (and which are in the data directory), recipes or runs."""
    from bigml_cli.errors import unknown

    if what not in LISTABLE:
        raise unknown("list", what, LISTABLE)
    rows = list_rows(what, runs_root, data_dir)
    if as_json:
        print(json.dumps({what: rows}))
        return
    if not rows:  # only runs can be missing
        out.print(f"no runs under {runs_root}/; `bigml train` writes them there, or pass --runs-root DIR",
                  markup=False)
        return
    title = what
    if what == "datasets":
        from bigml_cli.data import data_dir as resolve

        title += f" (data_dir: {resolve(data_dir)})"
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(col)
    for row in rows:
        table.add_row(*["" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()])
    out.print(table)


def list_rows(what: str, runs_root: str = "runs", data_root: Optional[Union[str, Path]] = None) -> list:
    if what == "models":
        from bigml_cli.models import MODELS

        return [{"model": n, "description": MODELS.doc(n)} for n in MODELS.names()]
    if what == "datasets":
        from bigml_cli.data import DATASETS, availability, data_dir

        root = data_dir(data_root)
        return [{"dataset": n, "description": DATASETS.doc(n), "data_dir": availability(n, root)}
                for n in DATASETS.names()] + [
            {"dataset": "PATH/", "description": "a folder with one sub-folder per class of images or .txt files, "
                                                "optional train/ test/", "data_dir": None},
            {"dataset": "FILE.csv", "description": "a CSV table (comma, semicolon or tab separated; FILE.tsv too); "
                                                   "--target COLUMN names the class column", "data_dir": None},
            {"dataset": "FILE.txt", "description": "a UTF-8 corpus for language models (e.g. gpt)",
             "data_dir": None}]
    if what == "recipes":
        import yaml

        from bigml_cli.config import RECIPES_DIR, recipe_names

        rows = []
        for name in recipe_names():
            text = (RECIPES_DIR / f"{name}.yaml").read_text()
            first = text.splitlines()[0].lstrip("# ") if text.startswith("#") else ""
            data = yaml.safe_load(text) or {}
            rows.append({"recipe": name, "model": data.get("model", {}).get("name"),
                         "dataset": data.get("data", {}).get("name"), "command": first})
        return rows
    from bigml_cli.runs import list_runs

    return list_runs(runs_root)


def _usage_errors():
    """Typer's UsageError class and its no-arguments-given subclass (vendored click since typer 0.2x)."""
    try:
        from typer._click.exceptions import NoArgsIsHelpError, UsageError
    except ImportError:  # older typer on the external click package
        from click.exceptions import UsageError

        NoArgsIsHelpError = ()
    return UsageError, NoArgsIsHelpError


def _value_after(option, argv=None):
    """The value a user gave an unknown option (--epochs 3 or --epochs=3), for the override it should be."""
    argv = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(argv):
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
        if arg == option and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            return argv[i + 1]
    return "N"


LIGHT_LISTS = ("recipes", "runs", "datasets")  # `bigml list` of these reads files only


def needs_tensorflow(argv: list) -> bool:
    """Whether the command in `argv` (without the program name) loads TensorFlow; help, the version and
    listing recipes, runs or datasets do not, and answer in a fraction of a second instead of seconds."""
    return bool(argv) and not {"--help", "--version"} & set(argv) and not (
        argv[0] == "list" and len(argv) > 1 and argv[1] in LIGHT_LISTS)


def main() -> None:
    usage_error, no_args = _usage_errors()
    try:
        code = app(standalone_mode=False)
    except no_args as e:  # `bigml` alone: the help text
        e.show()
        code = e.exit_code
    except usage_error as e:  # an unknown option, a missing argument, a value of the wrong type: one line
        from bigml_cli.config import section_hint

        where = e.ctx.command_path if e.ctx else "bigml"
        option = getattr(e, "option_name", None) or ""  # --epochs 3: the recipe key train.epochs, as an override
        hint = section_hint(option.lstrip("-").replace("-", "_"), _value_after(option)) if option else ""
        err.print(f"error: {e.format_message().rstrip('.')}{hint or f'; see `{where} --help`'}", markup=False,
                  highlight=False)
        code = 2
    except typer.Abort:  # end of input at a prompt
        err.print("aborted")
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
