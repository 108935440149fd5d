"""Detectors behind the notebook hygiene rules in ``test_notebooks.py``.

Each detector takes plain text (a notebook's code or markdown) and returns what it found, so the
tests can prove the detectors on small examples before trusting them on the course.

1. ``timing_asserts(cells)``: assertions on a timing or a ratio of timings. A shared or faster
   machine must never fail a lesson (design §7), so a notebook prints timings with their spread
   and the load and asserts counts, FLOPs and bytes instead.

   The rule, precisely. A value is a *timing* when it is

   * the result of a timing call: a callee whose last name is one of ``TIMING_CALLS``
     (``Timer``, ``timeit``, ``blocked_autorange``, ``perf_counter``, ``thread_time``, CUDA's
     ``elapsed_time``, the library's ``leaf_times`` …) or starts with ``time_`` (``time_cpu``,
     ``time.time_ns``), or is ``time.time`` or ``bench.compare``;
   * an attribute ``.median``, ``.iqr``, ``.p20``, ``.p80`` or ``.times`` that is read, not
     called (``timing.median`` is a timing, ``tensor.median()`` is not unless the tensor is one);
   * a subscript by a string key that names a time (``row["median"]``, ``t["time_ratio"]``,
     ``stats["ms"]``), or a call given such a key (``first_below(table, "time_ratio")``); a
     subscript of a plain field (``fig.shapes["ms"]``, the shape of BAM's M_s) is not;
   * any expression that involves a timing, or a name bound from one. Names are followed
     through the notebook in cell order: assignments (also tuple targets, ``+=``, walrus),
     ``for`` targets, ``with … as``, ``append``/``extend``/``update``/``add``/``insert``/
     ``setdefault`` into a container, and a function whose body makes a timing call. A name
     bound again to something else stops being a timing; lambda parameters and comprehension
     variables are local to them.

   Fields that are counts, not times, cut the chain: ``len(…)``, ``isinstance(…)``, ``type(…)``
   and the attributes ``name, flops, runs, device, pass_, peak_bytes, shape, dtype, task_spec,
   num_threads, number_per_run``. An ``assert`` statement whose test is a timing, or a call
   ``assert…(…)`` (``torch.testing.assert_close``, ``np.testing.assert_allclose``) with a
   timing argument, is reported. IPython magics (``%…``, ``!…``) are skipped.

2. ``future_lesson_references(text, existing)``: a sentence that calls a lesson "to come",
   "still to be written", "not yet written" … while that lesson's notebook exists.

3. ``making_of_phrases(text)``: sentences about how the course was made (design §4c) — "not read
   here", "this course's issue", "spec §", "the search … did not find", "no GPU card yet", "we
   could not read", "while writing this lesson", "in our runs", "this project's CPU" and their
   close variants — and prose that quotes the committed run's timings ("in the committed run …
   was faster"), which a re-execution makes stale.

4. ``recorded_gpu_claims(text)``: a claim that GPU measurements have been recorded ("the recorded
   GPU measurements", "GPU results of all seven mechanisms are in lesson 08"); the test allows it
   only when a GPU result card exists.

5. ``timing_cells(cells)``: the code cells that run a timing call (outside a ``def``); each must
   print the load average beside its timings (``timing_cells_without_load``) and keep its output
   out of nbval's comparison (``# NBVAL_IGNORE_OUTPUT``).
"""

from __future__ import annotations

import ast
import re
from typing import Iterable

# ---------------------------------------------------------------------------------------------
# 1. assertions on timings

TIMING_CALLS = frozenset({
    "Timer", "timeit", "autorange", "blocked_autorange", "adaptive_autorange",
    "perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns", "process_time",
    "process_time_ns", "thread_time", "thread_time_ns", "elapsed_time",
    "leaf_times", "measure_row", "measure_machine",
})
TIMING_DOTTED = frozenset({"time.time", "bench.compare"})
TIMING_ATTRS = frozenset({"median", "iqr", "p20", "p80", "times"})
TIMING_KEY = re.compile(r"median|iqr|time|seconds|^p[0-9]{2}$|(^|_)(s|ms|us|ns)$")
TIMING_ARG = re.compile(r"median|iqr|time|seconds")  # a key passed by name: f(table, "time_ratio")
PLAIN_FIELDS = frozenset({"name", "flops", "runs", "device", "pass_", "peak_bytes", "shape", "shapes",
                          "dtype", "task_spec", "num_threads", "number_per_run"})
COUNTING_CALLS = frozenset({"len", "isinstance", "type"})
FILLING_METHODS = frozenset({"append", "extend", "update", "add", "insert", "setdefault"})


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _is_timing_call(call: ast.Call) -> bool:
    dotted = _dotted(call.func)
    last = dotted.rsplit(".", 1)[-1]
    return last in TIMING_CALLS or last.startswith("time_") or dotted in TIMING_DOTTED


def _timed(node: ast.AST | None, names: set[str]) -> bool:
    """Whether ``node`` is, or involves, a timing (the rule in the module docstring)."""
    if node is None:
        return False
    if isinstance(node, ast.Name):
        return node.id in names
    if isinstance(node, ast.Attribute):
        if node.attr in TIMING_ATTRS:
            return True
        if node.attr in PLAIN_FIELDS:
            return False
        return _timed(node.value, names)
    if isinstance(node, ast.Call):
        if _is_timing_call(node):
            return True
        if isinstance(node.func, ast.Name) and node.func.id in COUNTING_CALLS:
            return False
        args = [*node.args, *(k.value for k in node.keywords)]
        if any(isinstance(a, ast.Constant) and isinstance(a.value, str) and TIMING_ARG.search(a.value)
               for a in args):
            return True
        if isinstance(node.func, ast.Attribute) and node.func.attr in TIMING_ATTRS:
            # a method such as tensor.median(): a timing only if what it is called on is one
            return _timed(node.func.value, names) or any(_timed(a, names) for a in args)
        return _timed(node.func, names) or any(_timed(a, names) for a in args)
    if isinstance(node, ast.Subscript):
        key = node.slice
        if isinstance(node.value, ast.Attribute) and node.value.attr in PLAIN_FIELDS:
            return _timed(key, names)  # fig.shapes["ms"] is the shape of M_s, not milliseconds
        if isinstance(key, ast.Constant) and isinstance(key.value, str) and TIMING_KEY.search(key.value):
            return True
        return _timed(node.value, names) or _timed(key, names)
    if isinstance(node, ast.Lambda):  # its parameters hide outer names of the same spelling
        params = {a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)}
        return any(_timed(d, names) for d in (*node.args.defaults, *node.args.kw_defaults)) or \
            _timed(node.body, names - params)
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
        inner = set(names)
        for gen in node.generators:  # a loop variable is a timing only if what it runs over is one
            bound = _bound_names(gen.target)
            inner = inner | bound if _timed(gen.iter, inner) else inner - bound
            if any(_timed(cond, inner) for cond in gen.ifs):
                return True
        parts = (node.key, node.value) if isinstance(node, ast.DictComp) else (node.elt,)
        return any(_timed(p, inner) for p in parts)
    return any(_timed(child, names) for child in ast.iter_child_nodes(node))


def _bound_names(target: ast.AST) -> set[str]:
    """The names a target binds or fills: ``a``, ``a, b``, ``a[i]`` and ``a.x`` all bind ``a``."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_bound_names(t) for t in target.elts)) if target.elts else set()
    if isinstance(target, ast.Starred):
        return _bound_names(target.value)
    if isinstance(target, (ast.Subscript, ast.Attribute)):
        return _bound_names(target.value)
    return set()


def _plain_names(target: ast.AST) -> set[str]:
    """The names a target rebinds outright (``a`` and ``a, b``; not ``a[i]`` or ``a.x``)."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_plain_names(t) for t in target.elts)) if target.elts else set()
    if isinstance(target, ast.Starred):
        return _plain_names(target.value)
    return set()


class _Scan:
    def __init__(self) -> None:
        self.names: set[str] = set()
        self.found: list[tuple[int, str]] = []
        self.cell = 0
        self.source = ""

    def expr_bindings(self, node: ast.AST) -> None:
        # walrus targets (a comprehension's own variables stay inside it: see _timed)
        for sub in ast.walk(node):
            if isinstance(sub, ast.NamedExpr):
                self.bind(sub.target, sub.value)

    def bind(self, target: ast.AST, value: ast.AST) -> None:
        # `a, b = x, y` pairs each name with its own value; any other form binds all it names
        if (isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List))
                and len(target.elts) == len(value.elts)
                and not any(isinstance(e, ast.Starred) for e in (*target.elts, *value.elts))):
            for t, v in zip(target.elts, value.elts):
                self.bind(t, v)
        elif _timed(value, self.names):
            self.names |= _bound_names(target)
        else:  # a name bound again to something that is not a timing is no longer one
            self.names -= _plain_names(target)

    def report(self, node: ast.AST) -> None:
        text = ast.get_source_segment(self.source, node) or ast.unparse(node)
        self.found.append((self.cell, text.splitlines()[0]))

    def stmt(self, node: ast.stmt) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.expr_bindings(child)
        if isinstance(node, ast.Assign):
            for target in node.targets:
                self.bind(target, node.value)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            if node.value is not None and _timed(node.value, self.names):
                self.names |= _bound_names(node.target)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            if _timed(node.iter, self.names):
                self.names |= _bound_names(node.target)
            else:
                self.names -= _plain_names(node.target)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None and _timed(item.context_expr, self.names):
                    self.names |= _bound_names(item.optional_vars)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if any(isinstance(s, ast.Call) and _is_timing_call(s) for s in ast.walk(node)):
                self.names.add(node.name)
        elif isinstance(node, ast.Assert):
            if _timed(node.test, self.names):
                self.report(node)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            call = node.value
            args = [*call.args, *(k.value for k in call.keywords)]
            name = _dotted(call.func).rsplit(".", 1)[-1]
            if name.startswith("assert") and any(_timed(a, self.names) for a in args):
                self.report(node)
            elif (isinstance(call.func, ast.Attribute) and call.func.attr in FILLING_METHODS
                  and any(_timed(a, self.names) for a in args)):
                self.names |= _bound_names(call.func.value)
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            for child in getattr(node, field, []) or []:
                if isinstance(child, ast.stmt):
                    self.stmt(child)
                else:  # except handlers, match cases
                    for s in getattr(child, "body", []):
                        self.stmt(s)


def _without_magics(source: str) -> str:
    lines = []
    for line in source.splitlines():
        stripped = line.lstrip()
        lines.append(line[: len(line) - len(stripped)] + "pass" if stripped[:1] in ("%", "!") else line)
    return "\n".join(lines)


def timing_asserts(cells: Iterable[str]) -> list[tuple[int, str]]:
    """``(cell number, first line)`` of every assertion on a timing in ``cells`` (code sources,
    in notebook order; cells are numbered from 1)."""
    scan = _Scan()
    for number, source in enumerate(cells, 1):
        scan.cell, scan.source = number, _without_magics(source)
        for node in ast.parse(scan.source).body:
            scan.stmt(node)
    return scan.found


# ---------------------------------------------------------------------------------------------
# 2. "to come" references to lessons that exist

FUTURE = re.compile(r"\bto come\b|\b(?:still |yet )?to be written\b|\bnot (?:yet )?(?:been )?written\b|"
                    r"\bwill (?:write|be written)\b|\bcoming soon\b|\bnot written yet\b", re.I)
LESSON_REF = re.compile(r"\blessons?\s+(\d{2})(?:\s*(?:–|—|-|to|and|&)\s*(\d{2}))?", re.I)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z*`(])|\n\s*\n")


def _sentences(text: str) -> list[str]:
    return [s for s in SENTENCE_END.split(text) if s.strip()]


def future_lesson_references(text: str, existing: set[str]) -> list[str]:
    """Sentences of ``text`` that call a lesson whose number is in ``existing`` ("02", …)
    "to come", "still to be written" and the like."""
    found = []
    for sentence in _sentences(text):
        if not FUTURE.search(sentence):
            continue
        numbers = set()
        for m in LESSON_REF.finditer(sentence):
            first, last = int(m.group(1)), int(m.group(2) or m.group(1))
            numbers |= {f"{n:02d}" for n in range(first, last + 1)}
        if numbers & existing:
            found.append(" ".join(sentence.split()))
    return found


# ---------------------------------------------------------------------------------------------
# 3. sentences about how the course was made

MAKING_OF = [re.compile(p, re.I) for p in (
    r"\bnot (?:been )?(?:re-?)?read here\b",
    r"\b(?:was|were|could) not (?:be )?(?:re-?)?read (?:here|for this (?:lesson|course))\b",
    r"\bnot re-?read\b",
    r"\bas read here\b",
    r"\bthis course's issue\b|\bthe course's issue\b",
    r"\bspec §",
    r"\bthe search (?:for this lesson )?did not find\b",
    r"\bno GPU (?:card|measurement|result|timing)s? (?:has |have |was |were )?(?:been )?recorded\b",
    r"\bno GPU card yet\b",
    r"\brecorded for this (?:course|project|group)\b",
    r"\bGPU (?:timings|results|measurements|cards) will appear\b",
    r"\bwe could not (?:read|check|run|find|search)\b",
    r"\bwe could (?:read|search)\b",
    r"\bcould not check here\b",
    r"\bas far as this (?:course|lesson) could check\b",
    r"\bwhile writing (?:the|this) lesson\b|\bwhile writing\s+this lesson\b",
    r"\b(?:this|the) (?:course|repository) was built without\b",
    r"\b(?:course|lesson) has \**not\** (?:re-?)?read\b",
    r"\b(?:in|over) our runs\b|\bruns we made\b|\bwe have not (?:traced|read|checked)\b",
    r"\bthis project's (?:CPU|machine|box|\d-core)",
    r"\bthe course's (?:shared )?(?:\d-core )?(?:box|machine)\b",
    # prose that quotes the committed run's timings goes stale when the notebook is re-executed
    r"\b(?:in|of) the committed (?:run|one)\b|\bthe committed run (?:above )?(?:shows|read)\b",
)]


def making_of_phrases(text: str) -> list[str]:
    """The phrases of ``text`` that speak about how the course was made."""
    flat = " ".join(text.split())
    return [m.group(0) for p in MAKING_OF for m in p.finditer(flat)]


# ---------------------------------------------------------------------------------------------
# 4. claims of recorded GPU measurements

GPU_CLAIM = re.compile(r"\brecorded GPU (?:measurements?|results?|timings?|cards?)\b|"
                       r"\bGPU (?:measurements|results|timings) (?:of|for) all\b", re.I)


def recorded_gpu_claims(text: str) -> list[str]:
    """Phrases of ``text`` that say GPU measurements have been recorded."""
    return [m.group(0) for m in GPU_CLAIM.finditer(" ".join(text.split()))]


# ---------------------------------------------------------------------------------------------
# 5. a cell that times prints the load

LOAD_PRINT = re.compile(r"\bload_note\(|\bgetloadavg\(")


def timing_cells(cells: Iterable[str]) -> list[int]:
    """Numbers (from 1) of the code cells that run a timing call at top level (outside a ``def``)."""
    found = []
    for number, source in enumerate(cells, 1):
        tree = ast.parse(_without_magics(source))
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        inside = {id(sub) for d in defs for sub in ast.walk(d)}
        if any(isinstance(n, ast.Call) and _is_timing_call(n) and id(n) not in inside
               for n in ast.walk(tree)):
            found.append(number)
    return found


def timing_cells_without_load(cells: Iterable[str]) -> list[int]:
    """The timing cells (``timing_cells``) that print no load average (``render.load_note()`` or
    ``os.getloadavg()``) in the same cell."""
    cells = list(cells)
    return [n for n in timing_cells(cells) if not LOAD_PRINT.search(cells[n - 1])]
