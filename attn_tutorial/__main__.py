"""Command line: ``python -m attn_tutorial {execute,exercises,bench,zoo} ...``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attn_tutorial")
    sub = parser.add_subparsers(dest="command", required=True)

    ex = sub.add_parser("execute", help="re-execute notebooks in place (Restart & Run All)")
    ex.add_argument("paths", nargs="+")
    ex.add_argument("--timeout", type=int, default=600, help="seconds per cell")

    gen = sub.add_parser("exercises", help="write exercises/ from solutions/")
    gen.add_argument("--check", action="store_true", help="only report whether exercises/ is stale")
    gen.add_argument("--force", action="store_true", help="overwrite exercises a learner edited")

    be = sub.add_parser("bench", help="run the benchmark matrix and write JSON result cards")
    be.add_argument("--device", choices=("cuda", "cpu"), default=None,
                    help="default: cuda when available, else cpu")
    be.add_argument("--quick", action="store_true", help="tiny sizes, eager float32 only")
    be.add_argument("--only", action="append", metavar="NAME",
                    help="run only this group (repeatable): channel, conv, danet, external, "
                         "emsa, scaling")
    be.add_argument("--out", default=None, help="folder for the cards (default: the package's "
                                                "attn_tutorial/cards/)")

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
    if args.command == "zoo":
        from attn_tutorial import zoo

        index, count = (int(v) for v in args.shard.split("/"))
        overrides = {key: value for key, value in (("steps", args.steps),
                                                   ("train_n", args.train_n)) if value}
        return zoo.main(args.train, args.only, args.seeds, args.out, (index, count), overrides)
    if args.command == "bench":
        from attn_tutorial import benchmarks

        for name in args.only or ():
            if name not in benchmarks.GROUPS:
                parser.error(f"--only {name!r}: choose from {', '.join(benchmarks.GROUPS)}")
        return benchmarks.main(args.only, args.device, args.quick, args.out)

    from attn_tutorial import course

    if args.command == "execute":
        for path in args.paths:
            print(f"executing {path}", flush=True)
            course.execute_notebook(path, timeout=args.timeout)
        return 0
    if args.command == "exercises":
        return course.sync_exercises(check=args.check, force=args.force)
    return 2


if __name__ == "__main__":
    sys.exit(main())
