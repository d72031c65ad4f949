"""The commands the documents tell people to run still parse.

Every ``crl-uiqa ...`` and ``python benchmarks/X.py ...`` command line in README.md, BENCHMARKS.md,
benchmarks/README.md and docs/*.md (fenced code blocks and `inline code`), and in the help texts and docstrings
of src/ and benchmarks/, is split as the shell would (``shlex``; line continuations, ``/usr/bin/time -v``,
``nice``, ``VAR=value`` and ``env`` prefixes, ``&&``/``|``/``;`` chains and redirections taken off) and given to
the real argument parser: :func:`crl_uiqa.cli.build_parser`, or the script's ``build_parser()``. Nothing is run.

A command in a fenced block must parse as it stands. Inline code may name a command by part of its options
(`crl-uiqa fit` on 754 images, `select --plane`), so a missing *required* option is accepted there; an unknown
option, a renamed one or a bad value is not. Placeholders are fine as values (``DIR``, ``<images>``);
``...`` and optional ``[--opt value]`` parts are tried without and with.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import re
import shlex
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

from crl_uiqa.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "benchmarks" / "README.md",
        *sorted((ROOT / "docs").glob("*.md"))]
#: source files whose docstrings, comments and help texts cite commands
SOURCES = [*sorted((ROOT / "src" / "crl_uiqa").rglob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py"))]

#: words standing for "a sub-command" in a cited command (`crl-uiqa -v CMD ...`): such a line is a pattern
SUBCOMMAND_PLACEHOLDERS = {"CMD", "CMD:", "COMMAND", "COMMAND:", "<command>"}

#: the sub-commands of crl-uiqa
SUBCOMMANDS = set(next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices)

#: (file name, text of the cited command) -> why it is left alone. Keep this tiny; a command shown as an example of
#: an error may instead be marked in its document with ``<!-- doc-commands: not a command -->`` on the line above
#: (a fenced block) or on the same line (inline code).
ALLOWED: dict[tuple[str, str], str] = {}
MARK = "<!-- doc-commands: not a command -->"


@dataclass
class Cited:
    where: str      # file:line
    text: str       # the command as written (one shell command, continuations joined)
    block: bool     # in a fenced code block (must be complete) or inline code
    program: str    # "crl-uiqa" or the script's path relative to the repository
    argv: list[str]


# ---------------------------------------------------------------------------------------------- reading the docs

_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def _markdown_code(path: Path):
    """(line, text, in a fenced block) of each shell code line and inline code span of a markdown file."""
    lines = path.read_text(encoding="utf-8").split("\n")
    i, prose = 0, []
    out = []

    def flush():
        text = "\n".join(t for _, t in prose)
        if prose:
            starts = [0]
            for _, t in prose:
                starts.append(starts[-1] + len(t) + 1)
            for m in _SPAN.finditer(text):
                k = max(j for j, s in enumerate(starts) if s <= m.start())
                lineno, line = prose[k]
                if MARK not in line:
                    out.append((lineno, m.group(2).replace("\n", " "), False))
        prose.clear()

    while i < len(lines):
        fence = re.match(r"^\s*(```+|~~~+)\s*(\S*)", lines[i])
        if not fence:
            if not lines[i].strip():
                flush()
            else:
                prose.append((i + 1, lines[i]))
            i += 1
            continue
        flush()
        marked = i > 0 and MARK in lines[i - 1]
        lang, close = fence.group(2).lower(), fence.group(1)
        j = i + 1
        body = []
        while j < len(lines) and not lines[j].strip().startswith(close):
            body.append((j + 1, lines[j]))
            j += 1
        if lang in ("", "bash", "sh", "shell", "console", "text") and not marked:
            k = 0
            while k < len(body):  # join "\" continuations into one logical line
                lineno, text = body[k]
                while text.rstrip().endswith("\\") and k + 1 < len(body):
                    k += 1
                    text = text.rstrip()[:-1] + " " + body[k][1]
                out.append((lineno, text, True))
                k += 1
        i = j + 1
    flush()
    return out


def _source_code(path: Path):
    """(line, text, False) of each inline code span in a Python file's strings (docstrings, help texts, messages;
    an f-string's fields read as ``X``) and comments (consecutive comment lines joined)."""
    text = path.read_text(encoding="utf-8")
    pieces = []  # (line, text)
    tree = ast.parse(text)
    parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts:
            pieces.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):
            pieces.append((node.lineno, "".join(v.value if isinstance(v, ast.Constant) else "X"
                                                for v in node.values)))
    comment, first = [], 0
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            if not comment:
                first = tok.start[0]
            comment.append(tok.string.lstrip("#").strip())
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT) and comment:
            pieces.append((first, " ".join(comment)))
            comment = []
    out = []
    for lineno, piece in pieces:
        for m in _SPAN.finditer(piece):
            if "\n\n" not in m.group(2):
                out.append((lineno + piece.count("\n", 0, m.start()), m.group(2).replace("\n", " "), False))
    return out


# -------------------------------------------------------------------------------------- shell command lines

_SEPARATORS = {"&&", "||", "|", ";", "&", "|&"}
_REDIRECT = re.compile(r"^(\d*>>?|&>>?|<|\d*<&?|\d*>&\d*)$")
_REDIRECT_GLUED = re.compile(r"^(\d*>>?|&>>?|\d*>&)\S+$")
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")


def _segments(text: str) -> list[list[str]]:
    """One shell line as its simple commands, each a list of words (redirections taken off)."""
    text = re.sub(r"\$\([^()]*\)", "SUBST", text)  # $(cat refs.txt): a value
    text = re.sub(r"<([^\s<>][^<>\n]*)>", lambda m: "<" + re.sub(r"\s+", "_", m.group(1)) + ">", text)  # <a b>
    try:
        words = shlex.split(text, comments=True)
    except ValueError:  # an unclosed quote: prose, not a command line
        return []
    segments, current = [], []
    skip = False
    for w in words:
        if skip:
            skip = False
            continue
        if w in _SEPARATORS:
            segments.append(current)
            current = []
            continue
        if w.endswith(";") and len(w) > 1:
            current.append(w[:-1])
            segments.append(current)
            current = []
            continue
        if _REDIRECT.match(w):
            skip = True  # the file it names
            continue
        if _REDIRECT_GLUED.match(w):
            continue
        current.append(w)
    segments.append(current)
    return [s for s in segments if s]


#: wrappers whose options come before the command, and which of their options take a value
_WRAPPER_VALUE_OPTIONS = {"env": ("-u", "--unset", "-C", "--chdir"), "time": ("-f", "-o", "--format", "--output"),
                          "timeout": ("-s", "-k", "--signal", "--kill-after")}


def _strip_prefixes(words: list[str]) -> list[str]:
    """``OMP_NUM_THREADS=1 nice -n 10 /usr/bin/time -v env -u X crl-uiqa ...`` -> ``crl-uiqa ...``."""
    w = list(words)
    while w:
        head = w[0]
        name = head.rsplit("/", 1)[-1]
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", head):
            w = w[1:]
        elif name in _WRAPPER_VALUE_OPTIONS:
            w = w[1:]
            while w and w[0].startswith("-"):
                w = w[2:] if w[0] in _WRAPPER_VALUE_OPTIONS[name] else w[1:]
            if name == "timeout":
                w = w[1:]  # the duration
        elif name == "nice":
            w = w[1:]
            if w and w[0] in ("-n", "--adjustment"):
                w = w[2:]
            elif w and re.match(r"^-\d+$|^--adjustment=", w[0]):
                w = w[1:]
        elif name == "taskset":
            w = w[1:]
            w = w[2:] if w and w[0] in ("-c", "--cpu-list") else w[1:]
        elif name in ("$", "exec", "command", "sudo"):  # `$ crl-uiqa ...`: a prompt
            w = w[1:]
        else:
            break
    return w


def _command(words: list[str], inline: bool = False) -> tuple[str, list[str]] | None:
    """("crl-uiqa", argv) or ("benchmarks/x.py", argv) for a simple command that runs one of them, else None.
    In inline code, a span that starts with a sub-command's name and an option counts as a crl-uiqa command."""
    w = _strip_prefixes(words)
    if not w:
        return None
    name = w[0].rsplit("/", 1)[-1]
    if re.match(r"^(\./)?benchmarks/[^/]+\.py$", w[0]):  # `benchmarks/demo_picks.py evaluate`
        return w[0].removeprefix("./"), w[1:]
    if name == "crl-uiqa":
        return "crl-uiqa", w[1:]
    if inline and w[0] in SUBCOMMANDS and len(w) > 1 and w[1].startswith("-"):
        return "crl-uiqa", w  # `live --no-realtime --batch-size 8`: a sub-command named with its options
    if _PYTHON.match(name):
        w = w[1:]
        while w and w[0].startswith("-") and w[0] != "-m":
            w = w[2:] if w[0] in ("-X", "-W") else w[1:]
        if len(w) >= 2 and w[0] == "-m" and w[1] in ("crl_uiqa", "crl_uiqa.cli"):
            return "crl-uiqa", w[2:]
        if w and w[0].endswith(".py"):
            path = w[0]
            m = re.search(r"(^|/)(benchmarks/[^/]+\.py)$", path)
            return (m.group(2) if m else path), w[1:]
    return None


def _simple_commands(text: str) -> list[list[str]]:
    """The simple commands of a shell line, those of ``bash -c '...'`` included."""
    out = []
    for words in _segments(text):
        w = _strip_prefixes(words)
        if len(w) >= 3 and w[0].rsplit("/", 1)[-1] in ("bash", "sh") and w[1] == "-c":
            out += _simple_commands(w[2])
        else:
            out.append(words)
    return out


def _cited(sources) -> list[Cited]:
    found = []
    for path, items in sources:
        rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
        for lineno, text, block in items:
            for words in _simple_commands(text):
                cmd = _command(words, inline=not block)
                if cmd is None:
                    continue
                program, argv = cmd
                if program == "crl-uiqa" and (not argv or any(a in SUBCOMMAND_PLACEHOLDERS for a in argv[:3])):
                    continue  # `crl-uiqa` named alone, or a pattern: `crl-uiqa -v CMD ...`
                if not program.endswith(".py") and program != "crl-uiqa":
                    continue
                if (path.name, " ".join(words)) in ALLOWED:
                    continue
                if any(f.where == f"{rel}:{lineno}" and f.argv == argv for f in found):
                    continue  # the same span twice (a string and a comment)
                found.append(Cited(f"{rel}:{lineno}", " ".join(words), block, program, argv))
    return found


def _doc_commands() -> list[Cited]:
    return _cited((p, _markdown_code(p)) for p in DOCS)


def _source_commands() -> list[Cited]:
    return _cited((p, _source_code(p)) for p in SOURCES)


# ----------------------------------------------------------------------------------------------------- parsing


class _Refused(Exception):
    pass


def _raising(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The parser and its sub-parsers raise :class:`_Refused` with argparse's message instead of exiting, and take
    options only as spelled in full (argparse would take an abbreviation: a renamed option's old, shorter name)."""
    def error(message, _p=parser):
        raise _Refused(f"{_p.prog}: {message}")

    parser.error = error
    parser.allow_abbrev = False  # `--min-gap` must not pass for a renamed `--min-gap-frames`
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                _raising(sub)
    return parser


def _variants(argv: list[str]) -> list[list[str]]:
    """The argv with its optional ``[--x v]`` parts, then without them (when it has some)."""
    with_opt, without_opt, inside = [], [], False
    for a in argv:
        if a.startswith("[-"):
            inside, a = True, a[1:]
        end = inside and a.endswith("]")
        if end:
            a = a[:-1]
        with_opt.append(a)
        if not inside:
            without_opt.append(a)
        if end:
            inside = False
    return [with_opt] if without_opt == with_opt else [with_opt, without_opt]


_REQUIRED = ("the following arguments are required", "one of the arguments")
_DOTS = ("...", "\u2026")
_BAD_VALUE = re.compile(r"argument (\S+?): invalid (?:\w+ value|choice): '(.*?)'")
_PLACEHOLDER = re.compile(r"^([A-Z][A-Z0-9_]*|<[^<>]+>|SUBST)$")


def _actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                yield from _actions(sub)


def _try(parser: argparse.ArgumentParser, argv: list[str], block: bool) -> str | None:
    """None when argv parses, else argparse's message. A placeholder given to a typed option (``--pool-size N``)
    is replaced by a value the option takes; inline code may leave out required options, or name an option
    without its value as its last word (`crl-uiqa evaluate --pairs`)."""
    argv = list(argv)
    for _ in range(len(argv) + 1):
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                parser.parse_args(argv)
        except _Refused as exc:
            msg = str(exc)
            bad = _BAD_VALUE.search(msg)
            if bad and bad.group(2) in argv:
                value, names = bad.group(2), bad.group(1).split("/")
                action = next((a for a in _actions(parser) if set(names) & set(a.option_strings)
                               or a.metavar in names or a.dest in names), None)
                choices = [str(c) for c in action.choices] if action is not None and action.choices else []
                if _PLACEHOLDER.match(value):
                    argv[argv.index(value)] = choices[0] if choices else "1"
                    continue
                if "|" in value and choices and all(v in choices for v in value.split("|")):
                    argv[argv.index(value)] = value.split("|")[0]  # `--runtime onnx|torchscript`: each is one
                    continue
            if not block and any(r in msg for r in _REQUIRED):
                return None  # inline code naming a command by some of its options
            if not block and re.search(r"expected (one|at least one) argument$", msg) and argv and argv[-1] in re.split(
                    r"[ /:]", msg):
                return None  # inline code naming an option: `crl-uiqa evaluate --pairs`
            return msg
        except SystemExit as exc:  # --help, --version
            return None if exc.code in (0, None) else f"exit {exc.code}"
        return None
    return "placeholders could not be given values"


def _parse_error(parser: argparse.ArgumentParser, cited: Cited) -> str | None:
    """None when the cited argv parses, else why not. Each variant must parse (an optional part too); ``...``
    may stand for a value (`--pairs ...`) or for more options (`crl-uiqa fit ...`): either reading will do."""
    for argv in _variants(cited.argv):
        why = _try(parser, argv, cited.block)
        if why and any(d in argv for d in _DOTS):
            if _try(parser, [a for a in argv if a not in _DOTS], cited.block) is None:
                why = None
        if why:
            return why
    return None


def _report(failures: list[str]) -> str:
    return f"{len(failures)} documented command(s) no longer parse:\n" + "\n".join(failures)


@pytest.fixture(scope="module")
def bench_parsers():
    """script path -> its ``build_parser()`` (or None: the script has none); sys.path and sys.modules restored."""
    saved_path, saved_modules = list(sys.path), set(sys.modules)
    parsers = {}
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        for script in sorted((ROOT / "benchmarks").glob("[a-z]*.py")):
            module = importlib.import_module(script.stem)
            build = getattr(module, "build_parser", None)
            parsers[f"benchmarks/{script.name}"] = build
    finally:
        sys.path[:] = saved_path
        bench = str(ROOT / "benchmarks")
        for name in set(sys.modules) - saved_modules:
            if str(getattr(sys.modules[name], "__file__", "") or "").startswith(bench):
                del sys.modules[name]
    return parsers


def _check(cited: list[Cited], bench_parsers) -> list[str]:
    cli = _raising(build_parser())
    failures = []
    for c in cited:
        if c.program == "crl-uiqa":
            why = _parse_error(cli, c)
        elif not (ROOT / c.program).is_file():
            why = f"no such script: {c.program}"
        elif c.program not in bench_parsers:
            why = None  # a script outside benchmarks/: it exists, which is all that is checked
        elif bench_parsers[c.program] is None:
            why = f"{c.program} has no build_parser() to check its arguments with"
        else:
            parser = bench_parsers[c.program]()
            parser.prog = c.program
            why = _parse_error(_raising(parser), c)
        if why:
            failures.append(f"{c.where}: `{c.text}`: {why}")
    return failures


# ------------------------------------------------------------------------------------------------------ tests


def test_the_extraction_finds_the_commands_it_should():
    """The reader itself: prefixes, chains, continuations, redirections, inline spans over two lines."""
    got = [(p, a) for words in _segments("OMP_NUM_THREADS=1 nice -n 5 /usr/bin/time -v crl-uiqa fit --images a "
                                         "--out r > fit.log 2> fit.err && crl-uiqa score --model r | tee x; "
                                         "env -u A B=1 python3 -u benchmarks/x.py --n 2 2>&1")
           for p, a in [_command(words) or (None, None)]]
    assert got == [("crl-uiqa", ["fit", "--images", "a", "--out", "r"]), ("crl-uiqa", ["score", "--model", "r"]),
                   (None, None), ("benchmarks/x.py", ["--n", "2"])]
    assert _command(["python", "-m", "crl_uiqa", "demo"]) == ("crl-uiqa", ["demo"])
    assert _variants(["x", "[--amp", "bf16]", "..."]) == [["x", "--amp", "bf16", "..."], ["x", "..."]]


def test_the_reader_and_the_check_catch_what_they_should(tmp_path):
    """Spans over two lines, continuations, ``bash -c``, the mark; a wrong, abbreviated or badly valued option
    fails; placeholders, ``...`` and a missing required option in inline code do not."""
    doc = tmp_path / "doc.md"
    doc.write_text("Run `crl-uiqa score --model run\n--images x`, then:\n\n```bash\n"
                   "crl-uiqa fit --images a \\\n  --out r   # a comment\n```\n\n"
                   "<!-- doc-commands: not a command -->\n```\ncrl-uiqa fit --nope\n```\n\n"
                   "`/usr/bin/time -v bash -c 'cd x && crl-uiqa demo --seed 1'`\n", encoding="utf-8")
    cited = _cited([(doc, _markdown_code(doc))])
    assert [(c.where.rsplit(":", 1)[1], c.block, c.argv) for c in cited] == [
        ("1", False, ["score", "--model", "run", "--images", "x"]),
        ("5", True, ["fit", "--images", "a", "--out", "r"]),
        ("14", False, ["demo", "--seed", "1"])]
    cli = _raising(build_parser())

    def ok(argv, block=True):
        if argv[0] == "select":
            argv = argv + ["--out", "picks"]
        return _parse_error(cli, Cited("x:1", " ".join(argv), block, "crl-uiqa", argv)) is None

    assert ok(["select", "--model", "run", "--input", "a.mp4", "--top", "3", "--min-gap", "2"])
    assert not ok(["select", "--model", "run", "--input", "a.mp4", "--min-gapx", "2"])  # unknown
    assert not ok(["select", "--model", "run", "--input", "a.mp4", "--min-ga", "2"])  # abbreviated
    assert not ok(["select", "--model", "run", "--input", "a.mp4", "--top", "three"])  # a bad value
    assert ok(["select", "--model", "DIR", "--input", "<scan>", "--top", "N"])  # placeholders
    assert ok(["evaluate", "--scores", "...", "--pairs", "p.csv"]) and ok(["fit", "--images", "a", "..."], False)
    assert ok(["fit"], block=False) and not ok(["fit"], block=True)  # `crl-uiqa fit` named in prose
    assert ok(["--help"]) and ok(["live", "--runtime", "onnx|torchscript"], False)
    assert not ok(["live", "--runtime", "onnx|tensorrt"], False)


def test_documented_commands_parse(bench_parsers):
    cited = _doc_commands()
    per_file = {}
    for c in cited:
        per_file[c.where.rsplit(":", 1)[0]] = per_file.get(c.where.rsplit(":", 1)[0], 0) + 1
    # the documents cite many commands: a reader that finds none is broken, not the documents all fine
    assert per_file.get("README.md", 0) >= 20 and per_file.get("BENCHMARKS.md", 0) >= 50, per_file
    failures = _check(cited, bench_parsers)
    assert not failures, _report(failures)


def test_commands_cited_in_help_texts_and_docstrings_parse(bench_parsers):
    cited = _source_commands()
    assert cited, "no command found in src/ and benchmarks/: the reader is broken"
    failures = _check(cited, bench_parsers)
    assert not failures, _report(failures)


def test_every_benchmark_script_exposes_its_parser(bench_parsers):
    """So that its documented command lines can be checked without running it."""
    missing = [name for name, build in bench_parsers.items() if build is None]
    assert not missing, f"benchmark scripts without build_parser(): {missing}"


def test_options_named_in_the_readme_exist():
    """Every `--option` the README names in inline code is an option of crl-uiqa or of one of its commands."""
    known = {o for a in _actions(build_parser()) for o in a.option_strings if o.startswith("--")}
    readme = ROOT / "README.md"
    failures = []
    for lineno, text, block in _markdown_code(readme):
        if block:
            continue
        segments = _segments(text)
        first = _strip_prefixes(segments[0])[:1] if segments else []
        if first and not first[0].startswith("-") and first[0].rsplit("/", 1)[-1] != "crl-uiqa" \
                and first[0] not in SUBCOMMANDS:
            continue  # another program's options (`pip install -U ...`), or a script's (parsed above)
        for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text):
            if option not in known:
                failures.append(f"README.md:{lineno}: `{text}`: {option} is no option of crl-uiqa")
    assert not failures, "\n".join(failures)
