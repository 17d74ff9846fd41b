"""The one executable of the app bundle: the GUI, or the CLI and the background worker.

    cpt-studio                      # the desktop app
    cpt-studio worker RUN_DIR       # what the app starts for a run (cpt_studio.core.runs.worker_command)
    cpt-studio evalworker RUN_DIR   # ... and for an evaluation
    cpt-studio sweep SWEEP_DIR      # ... and for a sweep (its runs, one after another)
    cpt-studio cli train run.json   # the command line, for users of the bundle who want it

A frozen bundle has no `python -m`, so the worker that the app starts is this same executable.
"""

import multiprocessing
import sys


def main(argv: list[str]) -> int:
    if argv[:1] == ["worker"]:
        from cpt_studio.core.worker import main as worker_main

        return worker_main(argv[1:])
    if argv[:1] == ["evalworker"]:
        from cpt_studio.core.evalworker import main as evalworker_main

        return evalworker_main(argv[1:])
    if argv[:1] == ["sweep"]:
        from cpt_studio.core.sweep import main as sweep_main

        return sweep_main(argv[1:])
    if argv[:1] == ["cli"]:
        from cpt_studio.core.cli import main as cli_main

        return cli_main(argv[1:])
    from cpt_studio.gui.app import main as gui_main

    return gui_main()


if __name__ == "__main__":
    multiprocessing.freeze_support()  # torch and tokenizers may start helper processes
    sys.exit(main(sys.argv[1:]))
