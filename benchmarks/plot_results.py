"""Plots of the benchmark CSVs: one chart per file, drawn next to it (same stem, ``.png``).

Each bench script calls ``plot_csv(path)`` after writing a CSV; to re-draw from the committed CSVs:

    python benchmarks/plot_results.py [CSV ...]      # no argument: every CSV under benchmarks/results/

The chart is chosen by the file-name prefix (``sampling_``, ``kv_cache_decode_``, ...); other CSVs are skipped.
Needs matplotlib (Agg backend); without it a line on stderr says so and nothing is drawn.
"""
from __future__ import annotations

import csv
import functools
import io
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
LOG_SPAN = 30  # a value axis goes log when its largest value is this many times its smallest or more

Row = dict[str, str]


@functools.cache
def _pyplot():
    """matplotlib.pyplot on the Agg backend, or None (and, once, a line on stderr) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plots)", file=sys.stderr)
        return None
    return plt


def _split(rows: list[Row], column: str) -> dict[str, list[Row]]:
    """The rows grouped by their value of `column`, in order of appearance."""
    parts: dict[str, list[Row]] = {}
    for r in rows:
        parts.setdefault(r[column], []).append(r)
    return parts


def _panels(rows: list[Row], column: str, title: str, ncols: int = 3):
    """A figure with one panel per value of `column`: the figure and [(axes, value, its rows)]."""
    parts = _split(rows, column)
    ncols = min(ncols, len(parts))
    nrows = math.ceil(len(parts) / ncols)
    fig, axes = _pyplot().subplots(nrows, ncols, figsize=(3.6 * ncols, 2.8 * nrows + 0.4), squeeze=False,
                                   layout="constrained")
    for ax in axes.flat[len(parts):]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, [(ax, value, part) for ax, (value, part) in zip(axes.flat, parts.items())]


def _figure_legend(fig, ax) -> None:
    """One legend for the whole figure, right of the panels (the figure widens for it), from `ax`'s lines."""
    fig.set_figwidth(fig.get_figwidth() + 1.4)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=7)


def _log_y(ax) -> None:
    """Log value axis, its ticks labelled in plain numbers (200, 0.01)."""
    from matplotlib.ticker import FuncFormatter, LogFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))


def _auto_log(ax, values: list[float]) -> None:
    """Log value axis where the values span `LOG_SPAN` times or more."""
    if values and min(values) > 0 and max(values) / min(values) >= LOG_SPAN:
        _log_y(ax)


def _lines(ax, rows: list[Row], x: Callable[[Row], float | str], series: str, value: str, ylabel: str) -> None:
    """One line per value of `series`: `value` against x(row); rows with an empty value are left out."""
    rows = [r for r in rows if r[value]]
    for name, part in _split(rows, series).items():
        ax.plot([x(r) for r in part], [float(r[value]) for r in part], marker="o", label=name)
    _auto_log(ax, [float(r[value]) for r in rows])
    ax.set_ylabel(ylabel)


def _melt(rows: list[Row], columns: dict[str, str]) -> list[Row]:
    """Wide rows to long ones: one row per (row, column) with the column's label as "series" and its "value"."""
    return [{**r, "series": label, "value": r[column]} for r in rows for column, label in columns.items()]


def _group_label(row: Row, columns: Sequence[str]) -> str:
    """The row's values of `columns`, one a line; numbers after their column's name ("batch 4")."""
    return "\n".join(f"{c.replace('_', ' ')} {row[c]}" if row[c].isdigit() else row[c] for c in columns)


def _grouped_bars(ax, rows: list[Row], groups: Sequence[str], series: str | None, value: str, ylabel: str) -> None:
    """Bars of `value`: one group per distinct `groups` columns, one bar per value of `series` (None: one bar)."""
    rows = [r for r in rows if r[value]]
    labels = list(dict.fromkeys(_group_label(r, groups) for r in rows))
    names = list(_split(rows, series)) if series else [None]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        part = [r for r in rows if series is None or r[series] == name]
        xs = [labels.index(_group_label(r, groups)) - 0.4 + (i + 0.5) * width for r in part]
        ax.bar(xs, [float(r[value]) for r in part], width, label=name)
    crowded = len(labels) > 8
    ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=45 if crowded else 0,
                  ha="right" if crowded else "center")
    _auto_log(ax, [float(r[value]) for r in rows])
    ax.set_ylabel(ylabel)
    if series:
        ax.legend(fontsize=7)


def _bar_figure(rows: list[Row], title: str, groups: Sequence[str], series: str, value: str, ylabel: str):
    """A single-panel grouped-bar figure, as wide as its groups need."""
    n_groups = len({_group_label(r, groups) for r in rows})
    fig, ax = _pyplot().subplots(figsize=(min(12.0, 3 + 0.7 * n_groups), 4), layout="constrained")
    _grouped_bars(ax, rows, groups, series, value, ylabel)
    ax.set_title(title)
    return fig


def _kv_bars(rows: list[Row], title: str, value: str, ylabel: str, groups: Sequence[str] = ("cache",),
             series: str | None = None):
    """Per model a panel of grouped bars (by default one bar per cache)."""
    fig, panels = _panels(rows, "model", title, ncols=2)
    for ax, model, part in panels:
        _grouped_bars(ax, part, groups, series, value, ylabel)
        ax.set_title(model)
    return fig


def _kv_lines(rows: list[Row], title: str, series: str):
    """Per model a panel of ms against context (log axis), one line per `series`."""
    fig, panels = _panels(rows, "model", title, ncols=2)
    for ax, model, part in panels:
        _lines(ax, part, lambda r: int(r["context"]), series, "ms", "ms")
        contexts = sorted({int(r["context"]) for r in part})
        ax.set_xscale("log", base=2)
        ax.set_xticks(contexts, [f"{c // 1024}k" if c >= 1024 else str(c) for c in contexts])
        ax.set_xlabel("context (tokens)")
        ax.set_title(model)
    _figure_legend(fig, panels[0][0])
    return fig


def sampling_chart(rows: list[Row], where: str):
    fig, panels = _panels(rows, "mode", f"Sampling, ms per step ({where})")
    for ax, mode, part in panels:
        _lines(ax, part, lambda r: f"B{r['batch']}/V{int(r['vocab']) // 1000}k", "provider", "ms", "ms / step")
        _log_y(ax)
        ax.tick_params(axis="x", rotation=60, labelsize=7)
        ax.set_title(mode)
    _figure_legend(fig, panels[0][0])
    return fig


def sampler_chart(rows: list[Row], where: str):
    fig, panels = _panels(rows, "vocab", f"Sampler on a continuous-batching trace, ms per step ({where})", ncols=2)
    for ax, vocab, part in panels:
        _lines(ax, part, lambda r: f"B{r['batch']}", "provider", "ms", "ms / step")
        _log_y(ax)
        ax.set_title(f"vocab {vocab}")
    _figure_legend(fig, panels[0][0])
    return fig


def beam_chart(rows: list[Row], where: str):
    long = _melt(rows, {"transformers_tok_s": "transformers", "pydecode_tok_s": "pydecode"})
    return _bar_figure(long, f"Beam search, {rows[0]['model']} ({where})", ("beams", "batch", "prompt_len"),
                       "series", "value", "tokens / s")


def contrastive_chart(rows: list[Row], where: str):
    long = _melt(rows, {"tf4_tok_s": "transformers 4.55.4", "pydecode_tok_s": "pydecode"})
    return _bar_figure(long, f"Contrastive search and DoLa, SmolLM2-135M ({where})", ("method", "context"),
                       "series", "value", "decode tokens / s")


def generate_chart(rows: list[Row], where: str):
    return _bar_figure(rows, f"generate ({where})", ("mode", "batch", "padding"), "provider", "tokens_per_s",
                       "tokens / s")


def vllm_chart(rows: list[Row], where: str):
    fig, (left, right) = _pyplot().subplots(1, 2, figsize=(8, 3.6), layout="constrained")
    _grouped_bars(left, rows, ("prompts",), "sampler", "tokens_per_s", "tokens / s")
    _grouped_bars(right, rows, ("prompts",), "sampler", "sampling_ms_per_step", "sampling ms / step")
    fig.suptitle(f"vLLM offline, its sampler vs pydecode's ({where})")
    return fig


def cpu_compile_chart(rows: list[Row], where: str):
    return _bar_figure(rows, f"Bare model decode step per compile option ({where})", ("dtype", "batch"), "option",
                       "ms_per_step", "ms / step")


def e2e_chart(rows: list[Row], where: str):
    return _bar_figure(rows, f"End-to-end greedy decoding ({where})", ("dtype", "batch"), "system", "tokens_per_s",
                       "tokens / s")


def decode_linear_chart(rows: list[Row], where: str):
    return _bar_figure(rows, f"A decoding step's linear layers ({where})", ("dtype", "rows"), "provider",
                       "weights_gb_per_s", "weights GB/s")


def speculative_chart(rows: list[Row], where: str):
    return _bar_figure(rows, f"Speculative decoding, greedy ({where})", ("task",), "provider", "tokens_per_s",
                       "tokens / s")


def kv_attention_chart(rows: list[Row], where: str):
    return _kv_lines(rows, "One layer's decode attention", "impl")


def kv_decode_chart(rows: list[Row], where: str):
    return _kv_lines(rows, "Whole-model decode step", "cache")


def kv_perplexity_chart(rows: list[Row], where: str):
    return _kv_bars(rows, "Perplexity per KV cache", "perplexity", "perplexity")


def kv_sinks_chart(rows: list[Row], where: str):
    return _kv_bars(rows, "Perplexity per KIVI sink length", "perplexity", "perplexity")


def kv_agreement_chart(rows: list[Row], where: str):
    return _kv_bars(rows, "Greedy agreement with the fp cache", "agree_before_divergence", "share before divergence")


def kv_memory_chart(rows: list[Row], where: str):
    return _kv_bars(rows, "KV cache memory (batch 1, fp16 K/V)", "kv_mib", "MiB", ("tokens",), "cache")


def _save(fig, png: Path) -> None:
    """Write the figure at 100 dpi in 256 colours: a quarter of the RGBA file's size, the same to the eye."""
    from PIL import Image  # a dependency of matplotlib

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    Image.open(buffer).convert("RGB").quantize(256).save(png, optimize=True)


# file-name prefix -> chart(rows, the rest of the stem: device or models) returning a matplotlib Figure
FAMILIES: dict[str, Callable[[list[Row], str], object]] = {
    "sampling_": sampling_chart, "sampler_": sampler_chart, "beam_": beam_chart, "contrastive_": contrastive_chart,
    "generate_": generate_chart, "speculative_": speculative_chart,
    "cpu_compile_": cpu_compile_chart, "e2e_": e2e_chart, "decode_linear_": decode_linear_chart,
    "kv_cache_attention_": kv_attention_chart, "kv_cache_decode_": kv_decode_chart,
    "kv_cache_perplexity_": kv_perplexity_chart, "kv_cache_sinks_": kv_sinks_chart,
    "kv_cache_agreement_": kv_agreement_chart, "kv_cache_memory_": kv_memory_chart, "vllm_": vllm_chart,
}


def plot_csv(path: str | Path) -> Path | None:
    """Draw the chart of one benchmark CSV next to it; the PNG's path, or None when skipped."""
    path = Path(path)
    prefix = next((p for p in FAMILIES if path.stem.startswith(p)), None)
    if prefix is None:
        print(f"(no plot for {path.name}: unknown benchmark)", file=sys.stderr)
        return None
    plt = _pyplot()
    if plt is None:
        return None
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print(f"(no plot for {path.name}: no rows)", file=sys.stderr)
        return None
    fig = FAMILIES[prefix](rows, path.stem[len(prefix):])
    png = path.with_suffix(".png")
    _save(fig, png)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> None:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)] or sorted(RESULTS.rglob("*.csv"))
    if _pyplot() is None:
        return
    for path in paths:
        png = plot_csv(path)
        if png:
            print(png)


if __name__ == "__main__":
    main()
