"""Console output shared by the CLI commands, and the one place expected errors are printed.

Expected failures (a missing program, a taken port, Kafka not answering) become a red message,
a hint and the end of the relevant log, with exit code 1, never a Python traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from libs.common.admin import TopicAdminError
from tooling.stack.errors import StackError

console = Console()
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def progress(message: str) -> None:
    err_console.print(f"[dim]•[/dim] {message}", highlight=False)


def fail(message: str, *, hint: str | None = None, log_tail: str | None = None, log: str = "") -> None:
    err_console.print(Text("error: ", style="bold red") + Text(message))
    if hint:
        err_console.print(Text("hint: ", style="yellow") + Text(hint))
    if log_tail:
        err_console.print(Panel(Text(log_tail), title=f"last lines of {log}", border_style="dim"))
    raise typer.Exit(1)


def expected_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the stack's and the admin's expected errors into a clear message and exit 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except StackError as exc:
            fail(exc.message, hint=exc.hint, log_tail=exc.log_tail, log=str(exc.log or ""))
        except TopicAdminError as exc:
            fail(str(exc), hint="is Kafka up? `pooch stack status` tells")
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/yellow]")
            raise typer.Exit(130) from None
        raise AssertionError("unreachable")  # fail() always raises

    return wrapper
