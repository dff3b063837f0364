"""Users and per-user files (spec §1.3 "user data"): what the editor saves -- workflows, settings,
templates -- under `<user dir>/<user id>/`.

Single-user mode (the default) has one user, `default`. With `--multi-user` the `comfy-user` request
header picks the user among those created by POST /users (listed in `<user dir>/users.json`); an
unknown id is refused with 403, never created on the fly. Ids starting with `__` are reserved and
answer exactly like unknown ones (so they cannot be probed).

Every file parameter is a path relative to the user's folder. In URLs a subfolder is written with
`%2F` (`/userdata/workflows%2Fmy.json`, ComfyUI's convention); the result must stay inside the
user's folder after resolving links (realpath), else 403. Files are served with nosniff and never
with a type a browser would run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import stat
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from server.http import BadRequest, Conflict, NotFound, query_bool, read_json, safe_headers
from server.security import accepts_any_body

log = logging.getLogger(__name__)

DEFAULT_USER = "default"
USERS_FILE = "users.json"
USER_HEADER = "comfy-user"
RESERVED_PREFIX = "__"
USER_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")


class Forbidden(BadRequest):
    def __init__(self, message: str) -> None:
        super().__init__(message, "forbidden", status=403)


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".loom-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Users:
    """The user directory: users.json and one folder per user. Thread-safe."""

    def __init__(self, root: Path, multi_user: bool) -> None:
        self.root = Path(root)
        self.multi_user = multi_user
        self._lock = threading.Lock()

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads((self.root / USERS_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("cannot read %s: %s; treating it as empty", self.root / USERS_FILE, exc)
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def users(self) -> dict[str, str]:
        """id -> name. Single-user mode knows only `default`."""
        return self._load() if self.multi_user else {DEFAULT_USER: DEFAULT_USER}

    def create(self, name: Any) -> str:
        """POST /users: a new user id made from the name; 400 if the name is missing or taken."""
        if not isinstance(name, str) or not name.strip():
            raise BadRequest(f"'username' must be a non-empty string, got {name!r}")
        name = name.strip()
        with self._lock:
            users = self._load()
            if name in users.values():
                raise BadRequest(f"a user named {name!r} already exists", "duplicate_username")
            stem = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_")[:64] or "user"
            user_id = f"{stem}_{uuid.uuid4()}"
            users[user_id] = name
            write_atomic(self.root / USERS_FILE, json.dumps(users, indent=2).encode("utf-8"))
        (self.root / user_id).mkdir(parents=True, exist_ok=True)
        log.info("created user %s", user_id)
        return user_id

    def user_of(self, request: web.Request) -> str:
        user = DEFAULT_USER
        if self.multi_user and request.headers.get(USER_HEADER):
            user = request.headers[USER_HEADER]
        if user.startswith(RESERVED_PREFIX) or not USER_ID.fullmatch(user) or user not in self.users():
            raise Forbidden(f"unknown user {user!r}: create it with POST /users, then send its id in '{USER_HEADER}'")
        return user

    def folder(self, request: web.Request) -> Path:
        folder = self.root / self.user_of(request)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def resolve(self, request: web.Request, relative: str) -> tuple[Path, Path]:
        """(user folder, contained target) for a relative file parameter; 400 empty, 403 escape."""
        if not relative or "\x00" in relative:
            raise BadRequest(f"invalid file name {relative!r}")
        folder = self.folder(request)
        root = os.path.realpath(folder)
        target = os.path.realpath(os.path.join(root, relative.replace("\\", "/")))
        if os.path.commonpath([root, target]) != root or target == root:
            raise Forbidden(f"{relative!r} is outside your user folder")
        return Path(root), Path(target)


USERS = web.AppKey("loom_users", Users)


def users_of(request: web.Request) -> Users:
    return request.app[USERS]


def relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def file_info(root: Path, path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": relative(root, path), "size": st.st_size, "modified": st.st_mtime, "created": st.st_ctime}


def walk_files(folder: Path, recurse: bool) -> list[Path]:
    """Regular files under `folder` (one level, or all), sorted; an explicit stack, no recursion."""
    found: list[Path] = []
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as exc:
            log.debug("cannot list %s: %s", current, exc)
            continue
        for entry in entries:
            if entry.name.startswith(".loom-"):
                continue  # a write in progress
            if entry.is_dir(follow_symlinks=False):
                if recurse:
                    stack.append(Path(entry.path))
            elif entry.is_file():
                found.append(Path(entry.path))
    return sorted(found)


# ---------------------------------------------------------------------- users


async def get_users(request: web.Request) -> web.Response:
    users = users_of(request)
    if users.multi_user:
        return web.json_response({"storage": "server", "users": users.users()})
    return web.json_response({"storage": "server", "migrated": (users.root / DEFAULT_USER).is_dir()})


async def post_users(request: web.Request) -> web.Response:
    body = await read_json(request, empty={})
    name = body.get("username") if isinstance(body, dict) else None
    return web.json_response(await asyncio.to_thread(users_of(request).create, name))


# ---------------------------------------------------------------------- files


async def list_userdata(request: web.Request) -> web.Response:
    """GET /userdata?dir=D[&recurse=true][&full_info=true][&split=true]: files of a folder."""
    directory = request.query.get("dir", "")
    if not directory:
        raise BadRequest("query parameter 'dir' is required (a folder in your user data, e.g. workflows)")
    root, folder = users_of(request).resolve(request, directory)
    if not folder.is_dir():
        raise NotFound(f"no folder {directory!r} in your user data")
    recurse, full, split = (query_bool(request, name) for name in ("recurse", "full_info", "split"))
    files = await asyncio.to_thread(walk_files, folder, recurse)
    results: list[Any] = []
    for path in files:
        rel = relative(folder, path)
        parts = [rel, *rel.split("/")] if split else rel
        if full:
            info = file_info(folder, path)
            info["path"] = parts
            results.append(info)
        else:
            results.append(parts)
    return web.json_response(results)


async def list_userdata_v2(request: web.Request) -> web.Response:
    """GET /v2/userdata?path=P: the entries of one folder (files and folders), paths from the user root."""
    users = users_of(request)
    wanted = request.query.get("path", "").strip("/")
    if wanted:
        root, folder = users.resolve(request, wanted)
    else:
        root = folder = Path(os.path.realpath(users.folder(request)))
    if not folder.exists():
        raise NotFound(f"no folder {wanted!r} in your user data")
    if not folder.is_dir():
        raise BadRequest(f"{wanted!r} is a file, not a folder")
    entries = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".loom-"):
            continue
        st = entry.stat(follow_symlinks=False)
        item: dict[str, Any] = {"name": entry.name, "path": relative(root, Path(entry.path))}
        if stat.S_ISDIR(st.st_mode):
            item["type"] = "directory"
        else:
            item.update(type="file", size=st.st_size)
        item["modified"] = st.st_mtime
        entries.append(item)
    return web.json_response(entries)


async def get_userdata(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    _, target = users_of(request).resolve(request, name)
    if not target.is_file():
        raise NotFound(f"no file {name!r} in your user data")
    return web.FileResponse(target, headers=safe_headers(target, target.name))


def _answer(root: Path, target: Path, full_info: bool) -> web.Response:
    return web.json_response(file_info(root, target) if full_info else relative(root, target))


@accepts_any_body
async def post_userdata(request: web.Request) -> web.Response:
    """POST /userdata/{file}[?overwrite=false][&full_info=true]: store the body as that file.
    409 when it exists and overwrite is false."""
    name = request.match_info["file"]
    root, target = users_of(request).resolve(request, name)
    if target.is_dir():
        raise BadRequest(f"{name!r} is a folder in your user data")
    if target.exists() and not query_bool(request, "overwrite", True):
        raise Conflict(f"{name!r} already exists (pass overwrite=true to replace it)")
    data = await request.read()
    await asyncio.to_thread(write_atomic, target, data)
    return _answer(root, target, query_bool(request, "full_info"))


async def delete_userdata(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    _, target = users_of(request).resolve(request, name)
    if not target.is_file():
        raise NotFound(f"no file {name!r} in your user data")
    target.unlink()
    return web.Response(status=204)


async def move_userdata(request: web.Request) -> web.Response:
    """POST /userdata/{file}/move/{dest}[?overwrite=false][&full_info=true]."""
    users = users_of(request)
    name, dest = request.match_info["file"], request.match_info["dest"]
    root, source = users.resolve(request, name)
    _, target = users.resolve(request, dest)
    if not source.is_file():
        raise NotFound(f"no file {name!r} in your user data")
    if target.exists() and not query_bool(request, "overwrite", True):
        raise Conflict(f"{dest!r} already exists (pass overwrite=true to replace it)")
    if target.is_dir():
        raise BadRequest(f"{dest!r} is a folder in your user data")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    return _answer(root, target, query_bool(request, "full_info"))


__all__ = [
    "DEFAULT_USER",
    "USERS",
    "Users",
    "delete_userdata",
    "get_userdata",
    "get_users",
    "list_userdata",
    "list_userdata_v2",
    "move_userdata",
    "post_userdata",
    "post_users",
    "users_of",
    "write_atomic",
]
