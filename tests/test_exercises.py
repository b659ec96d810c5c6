"""Every report command printed in the README and the notebooks parses and validates.

The exercises of each notebook and the README's examples are command lines such
as ``python -m hashstudy.regenerate --only 04_ddh -p k1 5 --run k1_5``. Each one
is extracted (from Markdown code spans and fenced blocks, with line
continuations, and from the strings and shell escapes of code cells) and checked
with the command line's own parser, :func:`hashstudy.regenerate.parse_command`:
the notebook exists, every parameter is known and every value converts to the
type of its default. Nothing is run.
"""
from __future__ import annotations

import ast
import re
import shlex

import nbformat

from hashstudy import config, regenerate

COMMAND = "python -m hashstudy.regenerate"
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
_OPERATORS = {"&&", "||", ";", "|", "&"}
_UNKNOWN = "\x00"  # stands for a placeholder of an f-string


def _join_continuations(lines):
    """``(line number, logical line)`` pairs, joining lines that end with a backslash."""
    out, buf, start = [], [], None
    for number, line in lines:
        if start is None:
            start = number
        if line.rstrip().endswith("\\"):
            buf.append(line.rstrip()[:-1])
            continue
        buf.append(line)
        out.append((start, " ".join(buf)))
        buf, start = [], None
    if buf:
        out.append((start, " ".join(buf)))
    return out


def _from_shell(lines):
    """Commands in shell lines: from ``python -m hashstudy.regenerate`` to the end of the
    logical line (a ``#`` comment and anything after a shell operator are dropped later)."""
    found = []
    for number, line in _join_continuations(lines):
        at = line.find(COMMAND)
        while at >= 0:
            found.append((number, line[at:]))
            at = line.find(COMMAND, at + len(COMMAND))
    return found


def commands_in_markdown(text: str, first_line: int = 1):
    """``(line, command)`` for every report command in Markdown ``text``.

    Fenced blocks are read as shell (continuations joined); in the prose, code
    spans (which may wrap over lines) hold a command each, and a command outside
    any span runs to the end of its line."""
    lines = text.split("\n")
    prose, shell, fence = [], [], None
    for i, line in enumerate(lines):
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            prose.append("")
        elif fence is not None:
            if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                fence = None
            else:
                shell.append((first_line + i, line))
            prose.append("")
        else:
            prose.append(line)
    found = _from_shell(shell)
    body = "\n".join(prose)
    covered = []
    for m in _SPAN.finditer(body):
        span = m.group(2)
        if COMMAND in span:
            line = first_line + body.count("\n", 0, m.start())
            found.append((line, " ".join(span[span.find(COMMAND):].split("\n"))))
        covered.append((m.start(), m.end()))
    for m in re.finditer(re.escape(COMMAND), body):
        if not any(a <= m.start() < b for a, b in covered):
            end = body.find("\n", m.start())
            rest = body[m.start(): end if end >= 0 else len(body)].split("`")[0]
            found.append((first_line + body.count("\n", 0, m.start()), rest))
    return sorted(found)


def fragments_in_markdown(text: str):
    """``(line, fragment)`` for code spans that continue a notebook's own command, such as
    ``-p k 50 --run k50`` (``-p`` first)."""
    return [(1 + text.count("\n", 0, m.start()), " ".join(m.group(2).split()))
            for m in _SPAN.finditer(text) if re.match(r"-p\s+\S+\s+\S", m.group(2))]


def _string_nodes(tree):
    """``(line, text)`` of every string constant, f-strings with placeholders as ``\\0``."""
    inside_fstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                inside_fstrings.add(id(value))
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    parts.append(value.value)
                else:
                    parts.append(_UNKNOWN)
            yield node.lineno, "".join(parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in inside_fstrings:
            yield node.lineno, node.value


def commands_in_code(source: str):
    """``(line, command)`` for every report command in a code cell.

    Shell escapes (``!python -m ...``, ``%%bash`` cells) are read as shell; every
    other command must sit in a string literal (a ``print`` or ``Markdown`` of
    an exercise), read as Markdown."""
    lines = source.split("\n")
    if lines and lines[0].strip().startswith(("%%bash", "%%sh", "%%script")):
        return _from_shell(list(enumerate(lines, 1))[1:])
    shell = [(i, line) for i, line in enumerate(lines, 1) if line.lstrip().startswith(("!", "%"))]
    python = "\n".join("" if line.lstrip().startswith(("!", "%")) else line for line in lines)
    found = _from_shell(shell)
    try:
        tree = ast.parse(python)
    except SyntaxError:
        return sorted(found + commands_in_markdown(python))
    for line, text in _string_nodes(tree):
        if COMMAND in text:
            found += [(line + offset - 1, cmd) for offset, cmd in commands_in_markdown(text)]
    return sorted(found)


def exercise_commands():
    """``(location, command)`` for every report command of README.md and the notebooks.

    A notebook's fragments (``-p k 50 --run k50`` after a full command) are completed
    with ``--only <that notebook>`` (and a run name when they have none)."""
    root = config.repo_root()
    out = [(f"README.md line {line}", cmd)
           for line, cmd in commands_in_markdown((root / "README.md").read_text(encoding="utf-8"))]
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "markdown":
                found = commands_in_markdown(cell.source)
                found += [(line, f"{COMMAND} --only {path.stem} {fragment}"
                           + ("" if "--run" in fragment.split() else " --run fragment"))
                          for line, fragment in fragments_in_markdown(cell.source)]
            elif cell.cell_type == "code":
                found = commands_in_code(cell.source)
            else:
                continue
            out += [(f"notebooks/{path.name} cell {index} ({cell.cell_type}) line {line}", cmd)
                    for line, cmd in found]
    return out


def check_command(command: str) -> str | None:
    """Why ``command`` would not run, or ``None`` when it parses and validates."""
    try:
        tokens = shlex.split(command, comments=True)
    except ValueError as err:
        return f"not a shell command line: {err}"
    for i, token in enumerate(tokens):
        if token in _OPERATORS:
            tokens = tokens[:i]
            break
    if tokens[:3] != COMMAND.split():
        return f"does not start with {COMMAND!r}"
    try:
        regenerate.parse_command(tokens[3:])
    except regenerate.UsageError as err:
        return f"error: {err}"
    return None


# -- the extractor itself ------------------------------------------------------

def test_markdown_spans_fences_continuations_and_comments():
    text = (
        "1. **Size**: `python -m hashstudy.regenerate --only 04_ddh -p k1 5 --run k1_5`,\n"
        "   or `python -m hashstudy.regenerate --only 04_ddh\n"
        "   -p k2 1 --run k2_1` (wrapped span). Partial: `-p k 50 --run k50`.\n"
        "\n"
        "```bash\n"
        "python -m hashstudy.regenerate --only 04_ddh \\\n"
        "    -p hidden '[1024]' --run h   # -> reports/04_ddh/runs/h/quick/\n"
        "$ python -m hashstudy.regenerate --profile smoke && echo done\n"
        "```\n"
        "Plain: python -m hashstudy.regenerate --only 04_ddh -p init pca --run init_pca\n"
    )
    found = commands_in_markdown(text)
    assert [line for line, _ in found] == [1, 2, 6, 8, 10]
    commands = [cmd for _, cmd in found]
    assert commands[1] == "python -m hashstudy.regenerate --only 04_ddh    -p k2 1 --run k2_1"
    assert "-p hidden '[1024]' --run h" in commands[2]
    assert all(check_command(cmd) is None for cmd in commands), \
        [check_command(c) for c in commands]
    assert fragments_in_markdown(text) == [(3, "-p k 50 --run k50")]


def test_code_cells_strings_shell_escapes_and_fstrings():
    source = (
        "from IPython.display import Markdown\n"
        "print('try: python -m hashstudy.regenerate --only 04_ddh -p lamda1 5 --run x')\n"
        "Markdown('''Exercise:\n"
        "`python -m hashstudy.regenerate --only 04_ddh -p supervised True --run s`''')\n"
        "name = '04_ddh'\n"
        "print(f'python -m hashstudy.regenerate --only {name} -p k1 5 --run k')\n"
        "!python -m hashstudy.regenerate --only 04_ddh -p supervised maybe --run f\n"
    )
    found = commands_in_code(source)
    checked = {line: check_command(cmd) for line, cmd in found if _UNKNOWN not in cmd}
    assert sorted(checked) == [2, 4, 7]
    assert "unknown parameter 'lamda1'" in checked[2] and "did you mean 'lambda1'" in checked[2]
    assert checked[4] is None
    assert "expects a boolean" in checked[7]
    assert [line for line, cmd in found if _UNKNOWN in cmd] == [6]  # built at run time: skipped


def test_check_command_reports_shell_and_usage_mistakes():
    assert "unknown notebook" in check_command("python -m hashstudy.regenerate --only 4_ddh")
    assert "needs --run" in check_command("python -m hashstudy.regenerate --only 04_ddh -p k1 5")
    assert "closing quotation" in check_command(
        "python -m hashstudy.regenerate --only 04_ddh -p hidden '[1 --run x")


# -- the real commands ----------------------------------------------------------

def test_every_exercise_command_parses_and_validates():
    commands = exercise_commands()
    assert any(loc.startswith("README.md") for loc, _ in commands)
    assert len({loc.split(" cell")[0] for loc, _ in commands if loc.startswith("notebooks/")}) >= 5
    failures = []
    for location, command in commands:
        if _UNKNOWN in command:
            continue  # a command an f-string completes at run time cannot be checked here
        problem = check_command(command)
        if problem:
            failures.append(f"{location}: {command}\n    {problem}")
    assert not failures, (f"{len(failures)} of {len(commands)} exercise commands would not run:\n"
                          + "\n".join(failures))
