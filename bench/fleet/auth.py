"""The fleet's token: Ray's token authentication (``RAY_AUTH_MODE=token``, Ray 2.52 and later), on
for every fleet the suite starts, so that no machine and no driver joins without the token.

With ``RAY_AUTH_MODE=token`` every Ray process checks a shared secret on each RPC and HTTP request
(the GCS, raylets, workers and agents); Ray reads the token from ``RAY_AUTH_TOKEN``, else the file
named by ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token`` (Ray's docs, "Token authentication";
``ray/_private/authentication`` of ray 2.60.0). The suite keeps its own token file, mode 0600, and
hands Ray its path (never the value on a command line, where ``ps`` shows it to every user):

- ``bench fleet head`` creates it (``secrets.token_hex(32)``, as ``ray get-auth-token --generate``
  does) the first time and prints it once, for ``bench fleet join``; later heads reuse it;
- ``bench fleet join`` takes it from ``BENCH_FLEET_TOKEN`` (the value the head printed) and writes it
  to this machine's token file, or finds it there (the head's own machine);
- the driver (``bench run --fleet``, ``bench fleet status``) reads it from the token file or
  ``BENCH_FLEET_TOKEN``.

A token file anyone else can read, or an empty one, is refused (as ssh refuses a private key).
The token authenticates; it does not encrypt: the fleet's traffic still belongs on a private
network or a VPN (docs/fleet.md).
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError

TOKEN_ENV = "BENCH_FLEET_TOKEN"  # the token's value, as the head printed it (for `bench fleet join`)
TOKEN_FILE_ENV = "BENCH_FLEET_TOKEN_FILE"  # where this machine keeps the token (default below)
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,256}$")


def token_path() -> Path:
    """``$BENCH_FLEET_TOKEN_FILE``, else ``$XDG_CONFIG_HOME/llm-effbench/fleet-token``, else
    ``~/.config/llm-effbench/fleet-token``."""
    if os.environ.get(TOKEN_FILE_ENV):
        return Path(os.environ[TOKEN_FILE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "llm-effbench" / "fleet-token"


@dataclass(frozen=True)
class Token:
    value: str
    path: Path  # the file Ray reads it from
    created: bool = False  # generated just now (the head prints it, once)


def _check(value: str, where: str) -> str:
    value = value.strip()
    if not _TOKEN.match(value):
        raise BenchError(f"{where}: not a fleet token (32 to 256 letters, digits, '-' or '_'; `bench fleet head` "
                         "prints one)")
    return value


def read_token_file(path: Path) -> str | None:
    """The token in ``path``; None if there is no file. A file others can read is refused."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BenchError(f"fleet token {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BenchError(f"fleet token {path}: not a regular file")
    if st.st_mode & 0o077:
        raise BenchError(f"fleet token {path}: readable by others (mode {stat.S_IMODE(st.st_mode):04o}): "
                         f"`chmod 600 {path}`, and make a new token if others may have read it (bench fleet head "
                         "--new-token)")
    try:
        return _check(path.read_text(encoding="ascii", errors="replace"), f"fleet token {path}")
    except OSError as exc:
        raise BenchError(f"fleet token {path}: {exc.strerror or exc}") from None


def write_token_file(path: Path, value: str) -> None:
    """Write ``value`` to ``path`` with mode 0600 from the start (never readable by others, not even
    for a moment), replacing any file there atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise BenchError(f"fleet token {path}: cannot write it ({exc.strerror or exc}); set {TOKEN_FILE_ENV} to a "
                         "path you can write") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(value)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def head_token(new: bool = False) -> Token:
    """The head's token: the one in this machine's token file, else (or with ``new``) a new one."""
    path = token_path()
    value = None if new else read_token_file(path)
    if value is not None:
        return Token(value, path)
    value = secrets.token_hex(32)  # 256 bits, as Ray's own generator
    write_token_file(path, value)
    return Token(value, path, created=True)


def join_token() -> Token:
    """The token a joining node (or a driver) presents: ``$BENCH_FLEET_TOKEN``, kept in this
    machine's token file (mode 0600) for later commands, else the token file. None: a one-line refusal."""
    path = token_path()
    given = os.environ.get(TOKEN_ENV)
    stored = read_token_file(path)
    if given:
        value = _check(given, TOKEN_ENV)
        if stored is not None and stored != value:
            raise BenchError(f"{TOKEN_ENV} differs from the fleet token already in {path} (this machine's head, or "
                             f"another fleet): remove that file, or point {TOKEN_FILE_ENV} at another path")
        if stored is None:
            write_token_file(path, value)
            return Token(value, path, created=True)
        return Token(value, path)
    if stored is None:
        raise BenchError(f"no fleet token: set {TOKEN_ENV} to the token `bench fleet head` printed (or copy the "
                         f"head's token file to {path}, mode 0600); the head refuses a node without it")
    return Token(stored, path)


def ray_env(token: Token) -> dict[str, str]:
    """The environment that makes a Ray process (``ray start``, a driver, their workers) require and
    present the token: the file's path, not its value."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token.path)}


def apply_to_this_process(token: Token) -> None:
    """Make this process's Ray use ``token`` (before ``ray.init``); ``RAY_AUTH_TOKEN`` would win over
    the file, so it is removed."""
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.update(ray_env(token))
