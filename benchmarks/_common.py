"""Shared helpers for ``benchmarks/*.py``: thread limits, machine description, results pages.

Every benchmark writes ``docs/results/<name>.md`` and ``.json`` that start with the exact command
that regenerates them, the date and the machine, so numbers in the docs can always be traced and
re-run. This module imports only the standard library at import time: thread limits must be set
before numpy/torch are first imported, and benchmarks call :func:`limit_threads` first.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "docs" / "results"

T = TypeVar("T")

_THREAD_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def limit_threads(n: int) -> None:
    """Cap BLAS/OpenMP pools via the environment; call before numpy or torch is imported.

    The pools read these variables once, at load time, so setting them later has no effect —
    hence a warning if torch is already loaded. Call :func:`set_torch_threads` after import too.
    """
    for var in _THREAD_ENV:
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        logging.getLogger(__name__).warning(
            "limit_threads(%d) after torch was imported: env limits may not apply", n
        )


def set_torch_threads(n: int) -> None:
    """Intra- and inter-op torch threads to ``n`` (inter-op can only be set once per process)."""
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # already set, or parallel work already started
        pass


def benchmark_parser(doc: str, name: str, package_beam: bool = False) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark shares; scripts add their own.

    ``package_beam``: ``--beam`` defaults to None, the beam tuned into the model package (see
    :func:`package_beam`), and ``--one-pass`` turns its second pass off (see
    :func:`decoding_overrides`), for pages that measure the package as it ships; other pages
    keep their own fixed beam so their figures stay comparable across models.
    """
    p = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--corpus",
        type=Path,
        default=Path("data/corpus"),
        help="synthetic corpus dir (with manifests/<split>_cuts.jsonl.gz)",
    )
    p.add_argument(
        "--model", type=Path, default=Path("models/edgeasr-small-en"), help="model package dir"
    )
    p.add_argument("--threads", type=int, default=1, help="threads per system")
    if package_beam:
        p.add_argument(
            "--beam", type=int, default=None, help="beam size (default: the package's tuned beam)"
        )
        p.add_argument(
            "--one-pass",
            action="store_true",
            help="turn the package's tuned second pass off (the baseline it is compared with)",
        )
    else:
        p.add_argument("--beam", type=int, default=4, help="beam size")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where pages are written")
    p.add_argument("--name", default=name, help="results page base name")
    return p


def pkg_version(name: str) -> str | None:
    """Installed version of a distribution (for results pages), or None if absent."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return str(getattr(mod, "__version__", "unknown"))


def git_commit() -> str | None:
    """``HEAD`` commit (with ``-dirty`` if the tree has changes), or None outside git/no commits."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def machine_info(packages: Sequence[str] = ("numpy", "torch")) -> dict[str, Any]:
    """What the numbers depend on: CPU, cores (total and usable), OS, Python and key packages.

    ``packages`` are imported to read their versions, so list only ones already needed.
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    for pkg in packages:
        info[pkg] = _version(pkg)
    info["git_commit"] = git_commit()
    return info


def machine_line(info: dict[str, Any]) -> str:
    """One-line human summary of :func:`machine_info`, for the top of a results page."""
    parts = [
        f"{info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable)",
        info["os"],
        f"Python {info['python']}",
    ]
    for key, val in info.items():
        if key in ("cpu", "cores", "cores_usable", "os", "python", "git_commit") or val is None:
            continue
        parts.append(f"{key} {val}")
    if info.get("git_commit"):
        parts.append(f"commit {info['git_commit']}")
    return "; ".join(parts)


def command_line(argv: Sequence[str] | None = None, python: str = ".venv/bin/python") -> str:
    """The command that regenerates a page, as run from the repository root.

    The script path is made relative to the repo root; other arguments are kept verbatim
    (quoted for the shell) so the line can be pasted back.
    """
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve() if argv else Path("?")
    try:
        script_s = str(script.relative_to(REPO_ROOT))
    except ValueError:
        script_s = str(script)
    return shlex.join([python, script_s, *argv[1:]])


def shown_path(path: Path) -> str:
    """A path as a results page shows it: relative to the repository root when inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO_ROOT) if p.is_relative_to(REPO_ROOT) else p)


def now_utc() -> str:
    """ISO-8601 timestamp (seconds, UTC) for the page header."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None
) -> str:
    """GitHub markdown table; ``align`` has one char per column, ``l`` or ``r`` (default: l then r).

    Cells are converted with ``str``; pipes are escaped so free text cannot break the table.
    """
    n = len(headers)
    align = align or ("l" + "r" * (n - 1))
    if len(align) != n:
        raise ValueError(f"align has {len(align)} entries for {n} columns")

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "| " + " | ".join(sep) + " |"]
    for row in rows:
        if len(row) != n:
            raise ValueError(f"row has {len(row)} cells for {n} columns: {row!r}")
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


def pct(x: float | None, digits: int = 1) -> str:
    """A rate as a percentage string ("12.3%"), or "–" for missing values."""
    return "–" if x is None else f"{100.0 * x:.{digits}f}%"


def num(x: float | None, digits: int = 3) -> str:
    """A float with fixed digits, or "–" for missing values."""
    return "–" if x is None else f"{x:.{digits}f}"


def slug(name: str) -> str:
    """A row or method name as a directory name: lowercase alphanumerics joined by dashes."""
    keep = "".join(ch if ch.isalnum() else "-" for ch in name.lower())
    return "-".join(part for part in keep.split("-") if part)


def even_subset(items: Sequence[T], max_items: int) -> list[T]:
    """At most ``max_items`` items evenly strided across ``items`` (0 or negative: all).

    Striding rather than taking the head keeps every voice/speaker represented when the input
    is grouped by voice, so quick runs estimate the same mix as full ones.
    """
    if max_items <= 0 or len(items) <= max_items:
        return list(items)
    stride = len(items) / max_items
    return [items[int(i * stride)] for i in range(max_items)]


@dataclass
class ResultsPage:
    """A results page under construction: header facts plus markdown sections and JSON data.

    ``write`` produces ``<name>.md`` (command, date, machine, then the sections) and
    ``<name>.json`` (the same header plus ``data``), so tools read the JSON and people the page.
    """

    name: str
    title: str
    command: str = field(default_factory=command_line)
    date: str = field(default_factory=now_utc)
    machine: dict[str, Any] = field(default_factory=machine_info)
    sections: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, markdown: str) -> None:
        """Append a markdown block (a paragraph, a heading, a table)."""
        self.sections.append(markdown.strip())

    def header(self) -> str:
        return "\n".join(
            [
                f"# {self.title}",
                "",
                "Regenerate (from the repository root):",
                "",
                "```",
                self.command,
                "```",
                "",
                f"- Date: {self.date}",
                f"- Machine: {machine_line(self.machine)}",
            ]
        )

    def markdown(self) -> str:
        return "\n\n".join([self.header(), *self.sections]) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "command": self.command,
            "date": self.date,
            "machine": self.machine,
            "data": self.data,
        }

    def write(self, out_dir: Path = RESULTS_DIR) -> tuple[Path, Path]:
        """Write ``<name>.md`` and ``<name>.json`` into ``out_dir``; return both paths."""
        out_dir.mkdir(parents=True, exist_ok=True)
        md = out_dir / f"{self.name}.md"
        js = out_dir / f"{self.name}.json"
        md.write_text(self.markdown(), encoding="utf-8")
        js.write_text(
            json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n", encoding="utf-8"
        )
        return md, js


def wer_of(
    model_dir: Path,
    caches: dict[str, Any],
    beam: int,
    max_utts: int,
    per_utterance: tuple[str, ...] = (),
) -> dict[str, Any]:
    """WER of a model package on feature caches: beam search at ``beam`` with its tuned blank
    penalty, the first pass only (whatever second pass the manifest records, so that the pages
    comparing models, e.g. an update chain, decode them all alike): ``wer_<split>`` and
    ``words_<split>`` per cache, and ``wer_all`` over all of them pooled; ``errors_<split>`` for
    the splits in ``per_utterance``: word errors per utterance, in the cache's order (for paired
    comparisons, :func:`edgeasr.decode.relative_change_ci`)."""
    from edgeasr.decode import evaluate_cache, utterance_errors, word_error_rate
    from edgeasr.model.checkpoint import load_package, tuned_blank_penalty

    model, tok, manifest = load_package(model_dir)
    out: dict[str, Any] = {}
    refs, hyps = [], []
    for split, cache in caches.items():
        ev = evaluate_cache(
            model, tok, cache, max_utts, "beam", beam, tuned_blank_penalty(manifest)
        )
        out[f"wer_{split}"] = ev.wer
        out[f"words_{split}"] = ev.num_ref_words
        split_refs, split_hyps = [r.ref for r in ev.results], [r.hyp for r in ev.results]
        if split in per_utterance:
            out[f"errors_{split}"] = utterance_errors(split_refs, split_hyps)
        refs += split_refs
        hyps += split_hyps
    out["wer_all"] = word_error_rate(refs, hyps)
    return out


def package_beam(model_dir: Path, beam: int | None) -> int:
    """``beam``, or when None the beam tuned into the package (4 if untuned): how
    ``edgeasr decode`` and the device runtime decode it by default."""
    from edgeasr.search.beam import tuned_beam

    return beam if beam is not None else tuned_beam(_package_decoding(model_dir))


def _package_decoding(model_dir: Path) -> dict[str, Any]:
    """The decoding settings in a package's manifest (none when it has no manifest)."""
    mf = Path(model_dir) / "manifest.json"
    return json.loads(mf.read_text()).get("decoding", {}) if mf.is_file() else {}


def decoding_overrides(one_pass: bool) -> dict[str, Any]:
    """Keyword arguments for ``Transcriber.from_dir`` and ``Recognizer``: none (the package's
    tuned decoding), or with ``one_pass`` a second pass that is off."""
    from edgeasr.search.rescore import Rescorer

    return {"rescorer": Rescorer()} if one_pass else {}


def second_pass_note(model_dir: Path, one_pass: bool = False) -> str:
    """A sentence for the page when the package has a tuned second pass (which every edgeasr
    system then runs, the device runtime included, unless ``one_pass`` turned it off)."""
    from edgeasr.search.rescore import Rescorer

    r = Rescorer.from_decoding(_package_decoding(model_dir))
    if not r.enabled:
        return ""
    if one_pass:
        return (
            " The package has a tuned second pass (the N-best reranked with the model's CTC "
            "head), turned off for this page (`--one-pass`): every result is the first pass'."
        )
    return (
        f" The package has a tuned second pass, which every edgeasr system runs once an "
        f"utterance is over: the beam's N-best reranked with the model's CTC head (weight "
        f"{r.ctc_weight}) and a word bonus of {r.word_bonus} (`edgeasr.search.rescore`)."
    )
