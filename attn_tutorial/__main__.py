"""Command line: ``python -m attn_tutorial {execute,exercises,grade,checks,bench,networks,zoo} ...``.

Bad input (an argument, a missing or corrupt file, a folder that cannot be written) ends a command
with one line on stderr, ``python -m attn_tutorial <command>: error: ...``, and exit status 2,
before anything is written.
"""

from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    """argparse reporting a bad command line in one line (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive(flag: str, value: int | None) -> int | None:
    """None (not given) or a positive integer; ``value or default`` would read 0 as not given."""
    if value is not None and value < 1:
        raise ValueError(f"{flag} {value}: must be a positive integer")
    return value


def _shard(text: str) -> tuple[int, int]:
    """``i/n`` with integers 0 <= i < n."""
    index, _, count = text.partition("/")
    if not (index.strip().isdigit() and count.strip().isdigit()
            and int(index) < int(count)):
        raise ValueError(f"--shard {text!r}: must be i/n with integers 0 <= i < n, e.g. 0/4")
    return int(index), int(count)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m attn_tutorial")
    sub = parser.add_subparsers(dest="command", required=True)

    ex = sub.add_parser("execute", help="re-execute notebooks in place (Restart & Run All)")
    ex.add_argument("paths", nargs="+")
    ex.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    ex.add_argument("--time", action="store_true",
                    help="print how long each notebook took, and a table at the end")

    gen = sub.add_parser("exercises", help="write exercises/ from solutions/")
    gen.add_argument("--check", action="store_true", help="only report whether exercises/ is stale")
    gen.add_argument("--force", action="store_true", help="overwrite exercises a learner edited")
    gen.add_argument("--solutions", default=None, metavar="DIR",
                     help="folder of solution notebooks (default: the course's solutions/)")
    gen.add_argument("--exercises", default=None, metavar="DIR",
                     help="folder of exercise notebooks (default: the course's exercises/)")

    gr = sub.add_parser(
        "grade", help="grade exercise notebooks with the course's checkers: a class "
                      "(SUBMISSIONS/<student>/NN_topic.ipynb) or your own exercises/ folder",
        description="A folder with exercise notebooks directly inside it (your exercises/) is "
                    "one learner's: its table is printed, nothing written unless --out. "
                    "Otherwise every sub-folder is a student's: grades.csv, grades.json and "
                    "report.md are written to --out. Submissions are never written to.")
    gr.add_argument("submissions", metavar="SUBMISSIONS")
    gr.add_argument("--out", default=None, metavar="DIR",
                    help="folder for grades.csv, grades.json, report.md (default for a class: "
                         "grades/)")
    gr.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="notebooks graded at once, each in its own process (default 1)")
    gr.add_argument("--timeout", type=float, default=120, metavar="S",
                    help="seconds per cell of a student's notebook (default 120)")
    gr.add_argument("--notebook-timeout", type=float, default=600, metavar="S",
                    help="seconds for all the cells of one notebook (default 600)")
    gr.add_argument("--memory", type=int, default=4096, metavar="MB",
                    help="memory a notebook's process may take beyond the grader's own, where "
                         "the OS can limit it (default 4096)")

    sub.add_parser("checks", help="the catalogue of exercises: lesson, the name the learner "
                                  "defines, checker, tier, kind and named mistakes")

    be = sub.add_parser("bench", help="run the benchmark matrix and write JSON result cards")
    be.add_argument("--device", choices=("cuda", "cpu"), default=None,
                    help="default: cuda when available, else cpu")
    be.add_argument("--quick", action="store_true", help="tiny sizes, eager float32 only")
    be.add_argument("--only", action="append", metavar="NAME",
                    help="run only this group (repeatable): channel, conv, danet, external, "
                         "emsa, scaling")
    where = be.add_mutually_exclusive_group()
    where.add_argument("--out", default=None,
                       help="folder for the cards (default: bench_out/, a scratch folder)")
    where.add_argument("--record", action="store_true",
                       help="write the cards into the package (attn_tutorial/cards/), "
                            "replacing the recorded ones")
    be.add_argument("--threads", type=int, default=None, metavar="N",
                    help="CPU threads for the run (default: torch's; 1 is the steadiest on a "
                         "shared machine)")
    be.add_argument("--budget-s", type=float, default=None, metavar="SECONDS",
                    help="run rows in priority order and record those not reached in this "
                         "time as skipped")

    sub.add_parser("networks", help="the papers' ImageNet networks: our parameters and FLOPs "
                                    "next to the authors' published table")

    zo = sub.add_parser("zoo", help="list the shipped trained models, or train them (--train)")
    zo.add_argument("--train", action="store_true", help="train every entry at every seed")
    zo.add_argument("--only", action="append", metavar="NAME", help="only this mechanism "
                                                                    "(repeatable)")
    zo.add_argument("--seed", action="append", type=int, dest="seeds", help="only this seed "
                                                                             "(repeatable)")
    zo.add_argument("--out", default=None, help="folder (default: the package's zoo/)")
    zo.add_argument("--steps", type=int, default=None, help="override the zoo's steps (a quick "
                                                            "check; do not ship such a zoo)")
    zo.add_argument("--train-n", type=int, default=None, help="override the training images")
    zo.add_argument("--shard", default="0/1", help="i/n: train every n-th job from the i-th "
                                                   "(parallel processes)")

    args = parser.parse_args(argv)
    try:
        return _run(args, parser)
    except (ValueError, OSError) as error:  # bad input found while running: one line, status 2
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"{parser.prog} {args.command}: error: {message}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "checks":
        from attn_tutorial.checks._catalogue import table

        print(table())
        return 0
    if args.command == "grade":
        from attn_tutorial import grading

        return grading.main(args.submissions, args.out, args.jobs, args.timeout,
                            args.notebook_timeout, args.memory)
    if args.command == "networks":
        from attn_tutorial import networks

        return networks.main()
    if args.command == "zoo":
        from attn_tutorial import zoo

        steps, train_n = _positive("--steps", args.steps), _positive("--train-n", args.train_n)
        overrides = {key: value for key, value in (("steps", steps), ("train_n", train_n))
                     if value is not None}
        return zoo.main(args.train, args.only, args.seeds, args.out, _shard(args.shard), overrides)
    if args.command == "bench":
        from attn_tutorial.bench import matrix, run

        for name in args.only or ():
            if name not in matrix.GROUPS:
                parser.error(f"--only {name!r}: choose from {', '.join(matrix.GROUPS)}")
        if args.budget_s is not None and not args.budget_s > 0:
            parser.error(f"--budget-s {args.budget_s:g}: must be a positive number of seconds")
        if args.threads is not None:
            if args.threads < 1:
                parser.error(f"--threads {args.threads}: must be a positive integer")
            import torch

            torch.set_num_threads(args.threads)
        try:
            return run.main(args.only, args.device, args.quick, args.out, args.record,
                            args.budget_s)
        except ValueError as err:  # e.g. an --out that cannot be written
            parser.error(str(err))

    from attn_tutorial import course

    if args.command == "execute":
        return course.execute_command(args.paths, args.timeout, args.time)
    if args.command == "exercises":
        return course.sync_exercises(args.solutions, args.exercises, check=args.check,
                                     force=args.force)
    return 2


if __name__ == "__main__":
    sys.exit(main())
