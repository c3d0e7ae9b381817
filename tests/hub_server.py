"""An in-process Hugging Face Hub on 127.0.0.1, for dataset repos, speaking the protocol that
huggingface_hub 2.x and datasets use to push and load (HTTP uploads; run with HF_HUB_DISABLE_XET=1).

Routes: repo info (404 with `X-Error-Code: RepoNotFound`), create, preupload (the server picks
regular or LFS), LFS batch and PUT, NDJSON commit, tree, paths-info and resolve (with
`X-Repo-Commit`, `ETag` and ranges). Every repo keeps its commits, so tests read exactly what
was pushed. A private repo answers as a missing one to anyone without its creator's token, as
the Hub does: 401 `RepoNotFound` to an anonymous caller, 404 `RepoNotFound` to another token.
`token` makes every request without `Bearer <token>` fail with 401; `drop_after`
cuts the connection of the n-th upload request, as a network failure mid-push does; `fail_commit`
answers the n-th commit with a 500, as a Hub outage between two commits does. Like the Hub,
preupload returns the `oid` of each file already at the revision (git SHA-1, or the LFS SHA-256),
which huggingface_hub uses to leave unchanged files out of a commit (and to skip an empty one).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from typing import Any

from aiohttp import web
from threaded_server import ThreadedServer

_LFS_FROM = 10_000  # bytes; smaller files are committed inline


@dataclasses.dataclass
class Repo:
    repo_id: str
    private: bool = False
    owner: str | None = None  # the Authorization header that created it: who may read it when private
    commits: list[tuple[str, dict[str, bytes]]] = dataclasses.field(default_factory=list)

    @property
    def sha(self) -> str:
        return self.commits[-1][0]

    @property
    def files(self) -> dict[str, bytes]:
        return self.commits[-1][1]


class HubServer(ThreadedServer):
    def __init__(self, token: str | None = None) -> None:
        super().__init__()
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.drop_after: int | None = None
        self.fail_commit: int | None = None
        self._uploads = 0
        self._commits = 0

    def create(self, repo_id: str, files: dict[str, bytes]) -> None:
        """A repo that already exists, with these files."""
        repo = self.repos[repo_id] = Repo(repo_id)
        repo.commits.append((_sha("initial", repo_id), dict(files)))

    def edit(self, repo_id: str, files: dict[str, bytes]) -> None:
        """A commit made outside the push under test (an edit on the website): `files` are replaced or added."""
        repo = self.repos[repo_id]
        changed = {**repo.files, **files}
        repo.commits.append((_sha(repo.sha, "edit", sorted(files)), changed))

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=1 << 30)
        app.router.add_post("/api/repos/create", self._create)
        app.router.add_post("/api/validate-yaml", self._validate_yaml)
        app.router.add_get(r"/api/datasets/{ns}/{name}", self._info)
        app.router.add_get(r"/api/datasets/{ns}/{name}/revision/{rev}", self._info)
        app.router.add_post(r"/api/datasets/{ns}/{name}/preupload/{rev}", self._preupload)
        app.router.add_post(r"/api/datasets/{ns}/{name}/commit/{rev}", self._commit)
        app.router.add_get(r"/api/datasets/{ns}/{name}/tree/{rev}", self._tree)
        app.router.add_get(r"/api/datasets/{ns}/{name}/tree/{rev}/{path:.*}", self._tree)
        app.router.add_post(r"/api/datasets/{ns}/{name}/paths-info/{rev}", self._paths_info)
        app.router.add_post(r"/datasets/{ns}/{name}.git/info/lfs/objects/batch", self._lfs_batch)
        app.router.add_put(r"/lfs-upload/{oid}", self._lfs_put)
        app.router.add_route("*", r"/datasets/{ns}/{name}/resolve/{rev}/{path:.*}", self._resolve)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        presigned = request.path.startswith("/lfs-upload/")  # like S3: the URL is the credential
        if self.token is not None and not presigned and request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "Invalid credentials in Authorization header", "Unauthorized")
        if self.drop_after is not None and (request.path.startswith("/lfs-upload/") or "/commit/" in request.path):
            self._uploads += 1
            if self._uploads >= self.drop_after:
                request.transport.close()
                raise ConnectionResetError("the network went away")
        try:
            return await handler(request)
        except _Refused as refused:
            return refused.response

    # -- repos ----------------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        if repo_id in self.repos:
            return _error(409, "You already created this dataset repo", None, url=f"{self.url}/datasets/{repo_id}")
        self.create(repo_id, {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"})
        # huggingface_hub 2.x sends `visibility`; older clients send `private`: the Hub takes both.
        self.repos[repo_id].private = body.get("visibility") == "private" or body.get("private") is True
        self.repos[repo_id].owner = request.headers.get("authorization")
        return web.json_response({"url": f"{self.url}/datasets/{repo_id}", "name": repo_id, "id": repo_id})

    async def _validate_yaml(self, request: web.Request) -> web.Response:
        """Like the Hub: a README whose metadata is not YAML is refused with 400."""
        import yaml

        content = (await request.json())["content"]
        try:
            _card_data(content.encode())
        except yaml.YAMLError as err:
            return web.json_response({"errors": [{"message": str(err)}]}, status=400)
        return web.json_response({"warnings": []})

    def _repo(self, request: web.Request) -> Repo:
        repo_id = f"{request.match_info['ns']}/{request.match_info['name']}"
        if repo_id not in self.repos:
            raise _Refused(_error(404, "Repository not found", "RepoNotFound"))
        repo = self.repos[repo_id]
        caller = request.headers.get("authorization")
        if repo.private and (caller is None or caller != repo.owner):
            # Like the Hub: a private repo is not found by others; an anonymous caller gets a 401.
            if caller is None:
                raise _Refused(_error(401, "Invalid username or password.", "RepoNotFound"))
            raise _Refused(_error(404, "Repository not found", "RepoNotFound"))
        return repo

    async def _info(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        return web.json_response(
            {
                "_id": repo.repo_id,
                "id": repo.repo_id,
                "author": repo.repo_id.split("/")[0],
                "sha": repo.sha,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "lastModified": "2026-11-21T00:00:00.000Z",
                "createdAt": "2026-11-21T00:00:00.000Z",
                "siblings": [{"rfilename": path} for path in sorted(repo.files)],
                "cardData": _card_data(repo.files.get("README.md")),
            }
        )

    # -- uploads --------------------------------------------------------------------------------

    async def _preupload(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        _, existing = self._files_at(repo, request.match_info["rev"])
        files = (await request.json())["files"]
        modes = []
        for f in files:
            mode: dict[str, Any] = {"path": f["path"], "uploadMode": "lfs" if f["size"] >= _LFS_FROM or f["path"].endswith(".parquet") else "regular", "shouldIgnore": False}
            if f["path"] in existing:
                mode["oid"] = _oid(f["path"], existing[f["path"]])
            modes.append(mode)
        return web.json_response({"files": modes, "commitOid": repo.sha})

    async def _lfs_batch(self, request: web.Request) -> web.Response:
        self._repo(request)
        body = await request.json()
        objects = []
        for obj in body["objects"]:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs:
                entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}", "expires_at": "2099-01-01T00:00:00Z"}}
            objects.append(entry)
        return web.json_response({"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    async def _lfs_put(self, request: web.Request) -> web.Response:
        content = await request.read()
        oid = request.match_info["oid"]
        if hashlib.sha256(content).hexdigest() != oid:
            return _error(400, "sha256 mismatch", None)
        self.lfs[oid] = content
        return web.Response(status=200)

    async def _commit(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        self._commits += 1
        if self._commits == self.fail_commit:
            return _error(500, "Internal Error - We're working hard to fix this as soon as possible!", None)
        lines = [json.loads(line) for line in (await request.text()).splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        if header.get("parentCommit") not in (None, repo.sha):
            return _error(412, "A commit has happened since. Please refresh and try again.", None)
        files = dict(repo.files)
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                if value["oid"] not in self.lfs:
                    return _error(422, f"LFS object {value['oid']} was not uploaded", None)
                files[value["path"]] = self.lfs[value["oid"]]
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: c for p, c in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
        sha = _sha(repo.sha, json.dumps(sorted((p, hashlib.sha256(c).hexdigest()) for p, c in files.items())), header["summary"])
        repo.commits.append((sha, files))
        return web.json_response({"success": True, "commitOid": sha, "commitUrl": f"{self.url}/datasets/{repo.repo_id}/commit/{sha}"})

    # -- reads ----------------------------------------------------------------------------------

    def _files_at(self, repo: Repo, revision: str) -> tuple[str, dict[str, bytes]]:
        if revision in ("main", repo.sha):
            return repo.sha, repo.files
        for sha, files in repo.commits:
            if sha == revision:
                return sha, files
        raise _Refused(_error(404, f"Invalid rev id: {revision}", "RevisionNotFound"))

    async def _tree(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        _, files = self._files_at(repo, request.match_info["rev"])
        prefix = request.match_info.get("path", "").strip("/")
        recursive = request.query.get("recursive") in ("true", "True", "1")
        entries, folders = [], set()
        for path in sorted(files):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1 :] if prefix else path
            if "/" in rest and not recursive:
                folders.add((prefix + "/" if prefix else "") + rest.split("/")[0])
                continue
            if recursive:
                parts = rest.split("/")[:-1]
                for depth in range(1, len(parts) + 1):
                    folders.add((prefix + "/" if prefix else "") + "/".join(parts[:depth]))
            entries.append(_entry(path, files[path]))
        if prefix and not entries and not folders:
            return _error(404, f"{prefix} does not exist", "EntryNotFound")
        entries += [{"type": "directory", "oid": _sha(folder), "size": 0, "path": folder} for folder in sorted(folders)]
        return web.json_response(entries)

    async def _paths_info(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        _, files = self._files_at(repo, request.match_info["rev"])
        form = await request.post()
        paths = form.getall("paths", [])
        entries = []
        for path in paths:
            if path in files:
                entries.append(_entry(path, files[path]))
            elif any(p.startswith(path.rstrip("/") + "/") for p in files):
                entries.append({"type": "directory", "oid": _sha(path), "size": 0, "path": path})
        return web.json_response(entries)

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        repo = self._repo(request)
        sha, files = self._files_at(repo, request.match_info["rev"])
        path = request.match_info["path"]
        if path not in files:
            return _error(404, "Entry not found", "EntryNotFound")
        content = files[path]
        etag = hashlib.sha256(content).hexdigest()
        headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if _is_lfs(path, content):
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(content))})
        byte_range = request.headers.get("Range")
        if byte_range and byte_range.startswith("bytes="):
            start_text, _, end_text = byte_range[6:].partition("-")
            start = int(start_text) if start_text else max(0, len(content) - int(end_text))
            end = int(end_text) if end_text and start_text else len(content) - 1
            body = content[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(content)}"
            return web.Response(status=206, body=b"" if request.method == "HEAD" else body, headers=headers)
        headers["Content-Length"] = str(len(content))
        if request.method == "HEAD":
            return web.Response(status=200, headers=headers)
        return web.Response(status=200, body=content, headers=headers)


def _entry(path: str, content: bytes) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "oid": _sha("blob", path, len(content)), "size": len(content), "path": path}
    if _is_lfs(path, content):
        entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134}
    return entry


def _oid(path: str, content: bytes) -> str:
    """What the Hub calls a file's oid in preupload: the LFS SHA-256, else the git blob SHA-1."""
    if _is_lfs(path, content):
        return hashlib.sha256(content).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _is_lfs(path: str, content: bytes) -> bool:
    return len(content) >= _LFS_FROM or path.endswith(".parquet")


def _card_data(readme: bytes | None) -> dict[str, Any] | None:
    if not readme or not readme.startswith(b"---\n"):
        return None
    import yaml

    return yaml.safe_load(readme.split(b"\n---", 1)[0][4:])


def _sha(*parts: Any) -> str:
    return hashlib.sha1(json.dumps([str(p) for p in parts]).encode()).hexdigest()


def _error(status: int, message: str, code: str | None, **extra: Any) -> web.Response:
    """The Hub's error shape: JSON `{"error"}` and the `X-Error-Code` / `X-Error-Message` headers."""
    headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


class _Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response
