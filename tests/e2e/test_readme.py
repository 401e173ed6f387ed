"""Every `bash` block of README.md runs as pasted, in order, in one shell, in a copy of the
checkout, against the server `make run` would start there; each `#>` line is an answer the
README promises, compared with what the commands before it printed (`...` stands for any
text). `<!-- readme-test: restart the server -->` between blocks is where the README tells
the reader to restart `make run`. Afterwards the copy holds nothing git would pick up."""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.servers import ROOT, free_port, request, stop_process, wait_until

pytestmark = pytest.mark.e2e

RESTART_MARK = "<!-- readme-test: restart the server -->"
README_PORT = "127.0.0.1:8000"
CHUNK_TIMEOUT_SECONDS = 60


@dataclass
class Chunk:
    """Commands, and the lines the README says they print (None: not shown)."""

    heading: str
    commands: list[str]
    expected: list[str] | None


@dataclass
class Step:
    chunks: list[Chunk] = field(default_factory=list)
    restart_before: bool = False


def readme_steps(text: str) -> list[Step]:
    """The README's bash blocks in order, split into chunks at their `#>` lines."""
    steps: list[Step] = []
    heading, restart, block = "", False, None
    for line in text.splitlines():
        if block is None:
            if line.startswith("#"):
                heading = line.lstrip("# ").strip()
            elif line.strip() == RESTART_MARK:
                restart = True
            elif line.strip() == "```bash":
                block = []
            continue
        if line.strip() != "```":
            block.append(line)
            continue
        step = Step(restart_before=restart)
        commands: list[str] = []
        expected: list[str] | None = None
        for code in block:
            if code.startswith("#>"):
                expected = (expected or []) + [code[3:] if code.startswith("#> ") else code[2:]]
                continue
            if expected is not None:
                step.chunks.append(Chunk(heading, commands, expected))
                commands, expected = [], None
            commands.append(code)
        if commands or expected is not None:
            step.chunks.append(Chunk(heading, commands, expected))
        steps.append(step)
        block, restart = None, False
    return steps


def matches(expected: str, line: str) -> bool:
    pattern = ".*?".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, line) is not None


class Shell:
    """One bash, as a reader's terminal: commands in, output read back up to a marker."""

    def __init__(self, cwd: Path, env: dict) -> None:
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.count = 0

    def run(self, commands: list[str]) -> str:
        self.count += 1
        marker = f"@@readme-chunk-{self.count}@@"
        script = "\n".join(commands) + f"\necho; echo {marker}\n"
        self.process.stdin.write(script.encode())
        self.process.stdin.flush()
        output = b""
        deadline = time.monotonic() + CHUNK_TIMEOUT_SECONDS
        while marker.encode() not in output:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no end of output within {CHUNK_TIMEOUT_SECONDS} s: {output[-2000:]!r}"
            ready, _, _ = select.select([self.process.stdout], [], [], remaining)
            if ready:
                data = os.read(self.process.stdout.fileno(), 65536)
                assert data, f"the shell exited: {output[-2000:]!r}"
                output += data
        text = output.decode(errors="replace")
        # The echo before the marker ends a last line that had no newline of its own.
        return text[: text.index(marker)].removesuffix("\n")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()


class MakeRunServer:
    """What `make run` starts, in the checkout `cwd`: `webhook-service serve`, which reads .env."""

    def __init__(self, cwd: Path, env: dict, port: int) -> None:
        self.cwd, self.env, self.port = cwd, env, port
        self.process: subprocess.Popen | None = None
        self.log = cwd / "data" / "server.log"

    def start(self) -> None:
        self.log.parent.mkdir(exist_ok=True)
        command = f"exec .venv/bin/webhook-service serve --bind 127.0.0.1:{self.port}"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                ["bash", "-c", command], cwd=self.cwd, env=self.env, stdout=log, stderr=log, start_new_session=True
            )
        serving = wait_until(lambda: _answers(self.port))
        assert serving, self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=30)


def _answers(port: int) -> bool:
    try:
        return request(port, "GET", "/health/live", timeout=2).status == 200
    except OSError:
        return False


# Where the checkout is not a git repository (an unpacked archive), what .gitignore leaves out.
_NOT_SHIPPED = shutil.ignore_patterns(
    ".git", ".venv", "data", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", ".env", "*.db*"
)


def _checkout_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=False
    )
    if listed.returncode == 0:
        return [name for name in listed.stdout.decode().split("\0") if name]
    files = []
    for folder, subfolders, names in os.walk(ROOT):
        ignored = _NOT_SHIPPED(folder, subfolders + names)
        links = [name for name in subfolders if os.path.islink(os.path.join(folder, name))]
        subfolders[:] = [name for name in subfolders if name not in ignored and name not in links]
        files += [os.path.relpath(os.path.join(folder, name), ROOT) for name in names + links if name not in ignored]
    return files


@pytest.fixture
def checkout_copy(tmp_path) -> Path:
    """The checkout's files (tracked and not ignored) in a new git repository, with this
    checkout's .venv, as after `git clone` and `make run`."""
    copy = tmp_path / "checkout"
    copy.mkdir()
    for name in _checkout_files():
        if name == ".venv":
            continue  # a link to a virtualenv (git does not take it for the ignored folder)
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
        elif source.is_symlink():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            (copy / name).symlink_to(os.readlink(source))
    (copy / ".venv").symlink_to(ROOT / ".venv")
    identity = ["-c", "user.name=readme", "-c", "user.email=readme@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True, capture_output=True)
    (copy / ".git" / "info" / "exclude").write_text("/.venv\n")
    subprocess.run(["git", "add", "-A"], cwd=copy, check=True, capture_output=True)
    subprocess.run(["git", *identity, "commit", "-qm", "copy"], cwd=copy, check=True, capture_output=True)
    return copy


def test_every_bash_block_of_the_readme_runs_as_pasted(checkout_copy, tmp_path):
    for tool in ("curl", "openssl", "python3", "make"):
        assert shutil.which(tool), f"{tool} is needed by the README's examples"
    steps = readme_steps((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(steps) >= 6 and sum(1 for step in steps if step.restart_before) == 2
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    # A new terminal: no settings of the test run, PATH without the virtualenv.
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    subprocess.run(["make", "-s", "env"], cwd=checkout_copy, env=env, check=True, capture_output=True)
    server = MakeRunServer(checkout_copy, env, port)
    shell = Shell(checkout_copy, env)
    try:
        server.start()
        for step in steps:
            if step.restart_before:
                server.stop()
                server.start()
            for chunk in step.chunks:
                commands = [line.replace(README_PORT, f"127.0.0.1:{port}") for line in chunk.commands]
                output = shell.run(commands)
                where = f"README, {chunk.heading}: {chunk.commands[-1] if chunk.commands else ''}"
                assert "Traceback" not in output, f"{where}\n{output}"
                if chunk.expected is None:
                    continue
                lines = output.splitlines()
                assert len(lines) == len(chunk.expected) and all(
                    matches(expected, line) for expected, line in zip(chunk.expected, lines, strict=True)
                ), f"{where}\nREADME shows:\n" + "\n".join(chunk.expected) + "\nprinted:\n" + output
    finally:
        shell.close()
        server.stop()
    # What the examples wrote is ignored by git: nothing new, nothing changed.
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=checkout_copy,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert status == "", status
    assert (checkout_copy / "sender.pem").stat().st_mode & 0o077 == 0


def test_the_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 250
    # Every link to a file of the repository leads to one; none leaves it.
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if target.startswith("http"):
            continue
        assert (ROOT / target).exists(), target
        assert (ROOT / target).resolve().is_relative_to(ROOT), target
    for document in sorted((ROOT / "docs").glob("*.md")):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", document.read_text(encoding="utf-8")):
            if not target.startswith("http"):
                assert (document.parent / target).resolve().is_relative_to(ROOT), (document.name, target)
                assert (document.parent / target).exists(), (document.name, target)
    assert "../shared" not in text and all("../shared" not in d.read_text() for d in (ROOT / "docs").glob("*.md"))
