"""The ``chexmask-u`` command line.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable
taking the parsed ``argparse.Namespace`` and returning an exit code.  Modules
are discovered, so adding a command is adding a file.  A module may also
define ``INTERRUPTED``, the one line that says what Ctrl-C leaves behind (what
was kept, and that a rerun resumes); the command then exits with 130 and no
traceback.  Errors of the package are printed in the command's own words:
:mod:`chexmask_u_tools.cli._messages` rewrites the Python fixes they name
(``on_error="skip"``, ``source=``...) into the command's flags.  Command modules import
heavy dependencies (torch, matplotlib) inside their handlers so that
``chexmask-u --help`` stays fast and works without the optional extras.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys
from collections.abc import Sequence

from chexmask_u_tools.errors import CheXmaskUError

OPTIONAL_EXTRAS = {"torch": "torch", "safetensors": "torch", "pydicom": "dicom"}
"""Optional module -> the extra of chexmask-u-tools that installs it."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chexmask-u",
        description="Tools for the CheXmask-U chest X-ray landmark segmentation dataset.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_") or module_info.ispkg:  # a package (viewer/) helps a command; it is none
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        module.register(subparsers)
    return parser


def _version() -> str:
    from chexmask_u_tools import __version__

    return __version__


def _command_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> set[str]:
    """The option strings of the sub-command that ran (and of its own sub-command, as ``experiment ood``)."""
    flags: set[str] = set()
    while True:
        chosen = None
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):  # argparse exposes sub-parsers only so
                chosen = action.choices.get(getattr(args, action.dest, None))
        if chosen is None:
            return flags
        flags |= set(chosen._option_string_actions)
        parser = chosen


def _interrupt_once(signum: int, frame: object) -> None:
    # Later Ctrl-C presses (and signal checks of reader threads) must not interrupt the handler that reports the first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt_once)
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        kept = getattr(sys.modules.get(args.func.__module__), "INTERRUPTED", "nothing was written")
        print(f"chexmask-u {args.command}: interrupted; {kept}", file=sys.stderr)
        if argv is None:
            # The command line itself (not main([...]) called from Python): leave at once.  Reader
            # threads of polars or pyarrow may still be inside a Python callback, and an interpreter
            # finalizing under them aborts the process; what must be cleaned up was cleaned up on the
            # way here (temporary files of atomic writes), and a rerun removes what a killed run left.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    except CheXmaskUError as error:
        from chexmask_u_tools.cli._messages import for_command_line

        print(f"chexmask-u {args.command}: error: {for_command_line(error, _command_flags(parser, args))}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as error:
        if error.name not in OPTIONAL_EXTRAS:
            raise
        extra = OPTIONAL_EXTRAS[error.name]
        print(
            f"chexmask-u {args.command}: error: this command needs the [{extra}] extra: "
            f"pip install 'chexmask-u-tools[{extra}]'",
            file=sys.stderr,
        )
        return 1
    except BrokenPipeError:
        # The reader of our output went away (``chexmask-u info ... | head``): not an error of ours.
        # Point stdout at devnull so that the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
