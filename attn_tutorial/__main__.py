"""Command line: ``python -m attn_tutorial {execute,exercises,bench} ...``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attn_tutorial")
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

    be = sub.add_parser("bench", help="run the benchmark matrix and write JSON result cards")
    be.add_argument("--device", choices=("cuda", "cpu"), default=None,
                    help="default: cuda when available, else cpu")
    be.add_argument("--quick", action="store_true", help="tiny sizes, eager float32 only")
    be.add_argument("--only", action="append", metavar="NAME",
                    help="run only this group (repeatable): channel, conv, danet, external, "
                         "emsa, scaling")
    be.add_argument("--out", default=None, help="folder for the cards (default: the package's "
                                                "attn_tutorial/cards/)")

    args = parser.parse_args(argv)
    if args.command == "bench":
        from attn_tutorial import benchmarks

        for name in args.only or ():
            if name not in benchmarks.GROUPS:
                parser.error(f"--only {name!r}: choose from {', '.join(benchmarks.GROUPS)}")
        return benchmarks.main(args.only, args.device, args.quick, args.out)

    from attn_tutorial import course

    if args.command == "execute":
        import os

        times = []
        for path in args.paths:
            print(f"executing {path}", flush=True)
            took = course.execute_notebook(path, timeout=args.timeout)
            times.append((path, took))
            if args.time:
                print(f"  {took:.1f} s", flush=True)
        if args.time and len(times) > 1:
            load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
            print(f"wall time per notebook (load average {load}):")
            for path, took in sorted(times, key=lambda t: -t[1]):
                print(f"  {took:7.1f} s  {path}")
        return 0
    if args.command == "exercises":
        return course.sync_exercises(args.solutions, args.exercises, check=args.check,
                                     force=args.force)
    return 2


if __name__ == "__main__":
    sys.exit(main())
