"""What every ``spinenav`` command shares: the Typer app, the consoles, error handling.

Command modules (``cli.py``, ``cmd_plan.py``, ``cmd_fluoro.py``, ...) register on :data:`app`.
Only this layer catches :class:`~spinenav.errors.SpinenavError`: one line to stderr, exit 2.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

import pydantic
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from spinenav.errors import SpinenavError, SpinenavWarning

app = typer.Typer(
    name="spinenav",
    help="Planning, fluoroscopy simulation and navigation for minimally invasive spine surgery.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True, soft_wrap=True)  # an error stays on one line

EXIT_BAD_INPUT = 2


@contextmanager
def handled(*, strict: bool = False) -> Iterator[list[str]]:
    """Turn domain errors into one stderr line + exit 2; echo spinenav warnings to stderr.

    Yields the list that collects warning messages (for commands that report them).
    """
    collected: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SpinenavWarning)
        if strict:
            warnings.simplefilter("error", SpinenavWarning)
        try:
            yield collected
        except SpinenavWarning as exc:  # strict mode
            err.print(f"[bold red]error[/] (strict): {escape(str(exc))}", highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except SpinenavError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except OSError as exc:  # an output path that is a file, a full disk, no permission
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            err.print(f"[bold red]error:[/] {escape(where + (exc.strerror or str(exc)))}", highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except pydantic.ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
                                 for e in exc.errors())
            err.print(f"[bold red]error:[/] invalid parameters: {escape(problems)}", highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        finally:
            for w in caught:
                if issubclass(w.category, SpinenavWarning):
                    collected.append(str(w.message))
                    err.print(f"[yellow]warning:[/] {escape(str(w.message))}", highlight=False)


def progress_bar() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                    console=err, transient=True, disable=not err.is_terminal)
