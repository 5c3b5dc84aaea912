#!/usr/bin/env python3
"""Runs the README's "From the shell" session as printed and compares what it prints.

The block after the marker `ci: shell-session` is a terminal transcript: a line starting with
`$ ` is a command, the lines after it are what that command printed. Every command runs, in
order, in one bash on a pseudo-terminal (the CLI prints tables to a terminal and JSON to a pipe,
and the transcript shows both), with `cxauth` from the given directory first on the PATH and a
fresh XDG_CONFIG_HOME. What changes from run to run is normalised on both sides before the
comparison: API tokens' UUIDs, RFC 3339 times, token hints, and the port (and with it the
width of the tables, whose runs of spaces and rules are compared as one).

Usage: readme-shell.py README.md PORT WORKDIR BINDIR
"""

import difflib
import os
import re
import subprocess
import sys

MARKER = "ci: shell-session"


def block(readme: str) -> list[str]:
    lines = readme.splitlines()
    start = next(i for i, line in enumerate(lines) if MARKER in line)
    fence = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    end = next(i for i in range(fence + 1, len(lines)) if lines[i].startswith("```"))
    return lines[fence + 1 : end]


def parse(lines: list[str]) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
        else:
            raise SystemExit(f"the shell-session block starts with output, not a command: {line}")
    return steps


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# RFC 3339 as the CLI prints it: the fraction has trailing zeros trimmed (`.75Z`, or none).
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z")
HINT = re.compile(r"…[0-9a-f]{4}")


def normalise(lines: list[str], port: str) -> list[str]:
    out = []
    for line in lines:
        line = line.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        line = UUID.sub("<uuid>", line)
        line = TIME.sub("<time>", line)
        line = HINT.sub("…<hint>", line)
        # A table is as wide as its widest cell, and the port's digits change that width.
        line = re.sub("─+", "─", re.sub("═+", "═", re.sub(" +", " ", line)))
        out.append(line.rstrip())
    return out


def main() -> int:
    readme_path, port, work, bindir = sys.argv[1:5]
    with open(readme_path, encoding="utf-8") as f:
        steps = parse(block(f.read()))
    if not steps:
        raise SystemExit("the shell-session block has no command")
    script = ["stty cols 200 2>/dev/null || true"]
    for i, (command, _) in enumerate(steps):
        script.append(f"printf '\\n@@step {i}@@\\n'")
        script.append(command.replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    script.append("printf '\\n@@end@@\\n'")
    path = os.path.join(work, "shell-session.sh")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(script) + "\n")
    env = dict(os.environ)
    env["PATH"] = f"{bindir}:{env['PATH']}"
    env["XDG_CONFIG_HOME"] = os.path.join(work, "xdg")
    env.pop("CXAUTH_SERVER", None)
    env.pop("CXAUTH_API_TOKEN", None)
    # `script` gives the session a terminal; its own output is the terminal's, with CR LF.
    run = subprocess.run(
        ["script", "-qefc", f"bash {path}", "/dev/null"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )
    printed = run.stdout.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "")
    if "@@end@@" not in printed:
        print(printed)
        raise SystemExit("README shell session: the session did not reach its end")
    got: dict[int, list[str]] = {}
    current = None
    for line in printed.split("\n"):
        m = re.fullmatch(r"@@step (\d+)@@", line)
        if m:
            current = int(m.group(1))
            got[current] = []
        elif line == "@@end@@":
            current = None
        elif current is not None:
            got[current].append(line)
    failed = False
    for i, (command, expected) in enumerate(steps):
        want = normalise(expected, port)
        have = normalise(got.get(i, []), port)
        # The separator's newline leaves an empty first line; a command's last newline, an
        # empty last one.
        while have and have[0] == "":
            have.pop(0)
        while have and have[-1] == "":
            have.pop()
        if want != have:
            failed = True
            print(f"README shell session: `{command}` printed something else:")
            sys.stdout.writelines(
                line + "\n" for line in difflib.unified_diff(want, have, "README", "actual", lineterm="")
            )
    if failed:
        return 1
    print(f"README shell session: ok ({len(steps)} commands, output as printed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
