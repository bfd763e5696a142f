"""A local model hub for the tests (Python standard library), speaking the
routes Corral uses of Hugging Face and ModelScope:

  GET /api/models/OWNER/REPO/revision/REV?blobs=true   (HF: sha, siblings with size and lfs sha256)
  GET|HEAD /OWNER/REPO/resolve/REV/FILE                 (HF: 302 to the CDN, another host, with X-Linked-Etag)
  GET /api/v1/models/OWNER/REPO/repo/files?Revision=R  (ModelScope: Data.Files)
  GET|HEAD /api/v1/models/OWNER/REPO/repo?Revision=R&FilePath=F   (ModelScope: the file, directly)

The CDN is a second server on another host name (localhost instead of
127.0.0.1) that serves blobs with Range and ETag; it records the
Authorization header of every request so a test can check that no token
followed a redirect. A gated repository answers 401 without the token and 403
with a wrong one. cut_after makes the CDN drop the connection once that many
bytes of a file went out (the first time only)."""
import hashlib
import http.server
import json
import os
import threading
import urllib.parse

TOKEN = "hf_test_token"


class Hub:
    def __init__(self):
        self.repos = {}   # "owner/repo" -> {"commit", "gated", "files": {name: bytes or (size, None)}}
        self.seen = []    # (server, method, path, authorization, range)
        self.cut_after = None
        self._cut_done = set()
        self.hub = self._serve(self._hub_handler(), "127.0.0.1")
        self.cdn = self._serve(self._cdn_handler(), "127.0.0.1")
        self.url = "http://127.0.0.1:%d" % self.hub.server_address[1]
        self.cdn_url = "http://localhost:%d" % self.cdn.server_address[1]

    def add(self, repo, files, gated=False, commit=None):
        """files: {name: bytes (served) or int (listed with that size, never served)}."""
        self.repos[repo] = {"commit": commit or hashlib.sha1(repo.encode()).hexdigest(), "gated": gated,
                            "files": files}

    def close(self):
        for s in (self.hub, self.cdn):
            s.shutdown()
            s.server_close()

    def _serve(self, handler, host):
        srv = http.server.ThreadingHTTPServer((host, 0), handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        return srv

    def _listing(self, repo):
        out = []
        for name, data in repo["files"].items():
            if isinstance(data, int):
                out.append({"name": name, "size": data, "sha256": None})
            else:
                out.append({"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        return out

    def _hub_handler(self):
        hub = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def send_json(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def repo_for(self, name):
                repo = hub.repos.get(name)
                if not repo:
                    self.send_json(404, {"error": "Repository not found"})
                    return None
                auth = self.headers.get("Authorization")
                if repo["gated"] and auth != "Bearer " + TOKEN:
                    self.send_json(403 if auth else 401, {"error": "Access to this repository is restricted"})
                    return None
                return repo

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                u = urllib.parse.urlparse(self.path)
                q = urllib.parse.parse_qs(u.query)
                hub.seen.append(("hub", self.command, self.path, self.headers.get("Authorization"),
                                 self.headers.get("Range")))
                parts = u.path.strip("/").split("/")
                if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "revision":
                    repo = self.repo_for(parts[2] + "/" + parts[3])
                    if repo:
                        rev = "/".join(parts[5:])
                        if rev not in ("main", repo["commit"]):
                            return self.send_json(404, {"error": "Revision not found"})
                        self.send_json(200, {"id": parts[2] + "/" + parts[3], "sha": repo["commit"], "siblings": [
                            {"rfilename": f["name"], "size": f["size"],
                             **({"lfs": {"sha256": f["sha256"], "size": f["size"]}} if f["sha256"] else {})}
                            for f in hub._listing(repo)]})
                    return
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo = self.repo_for(parts[0] + "/" + parts[1])
                    if repo:
                        name = "/".join(parts[4:])
                        data = repo["files"].get(name)
                        if data is None or isinstance(data, int):
                            return self.send_json(404, {"error": "Entry not found"})
                        sha = hashlib.sha256(data).hexdigest()
                        self.send_response(302)
                        self.send_header("Location", "%s/blobs/%s" % (hub.cdn_url, sha))
                        self.send_header("X-Linked-Etag", '"%s"' % sha)
                        self.send_header("X-Linked-Size", str(len(data)))
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    return
                if parts[:3] == ["api", "v1", "models"] and len(parts) >= 6 and parts[5] == "repo":
                    repo = self.repo_for(parts[3] + "/" + parts[4])
                    if not repo:
                        return
                    if len(parts) == 7 and parts[6] == "files":
                        return self.send_json(200, {"Code": 200, "Data": {"Files": [
                            {"Path": f["name"], "Name": f["name"], "Size": f["size"], "Type": "blob",
                             **({"Sha256": f["sha256"]} if f["sha256"] else {})} for f in hub._listing(repo)]}})
                    name = q.get("FilePath", [""])[0]
                    data = repo["files"].get(name)
                    if data is None or isinstance(data, int):
                        return self.send_json(404, {"Code": 404, "Message": "file not found"})
                    return serve_bytes(self, data)
                self.send_json(404, {"error": "no such route"})

        return H

    def _cdn_handler(self):
        hub = self

        class C(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                hub.seen.append(("cdn", self.command, self.path, self.headers.get("Authorization"),
                                 self.headers.get("Range")))
                sha = self.path.rsplit("/", 1)[-1]
                for repo in hub.repos.values():
                    for data in repo["files"].values():
                        if not isinstance(data, int) and hashlib.sha256(data).hexdigest() == sha:
                            cut = None
                            if hub.cut_after and sha not in hub._cut_done and self.command == "GET" \
                                    and not self.headers.get("Range", "").startswith("bytes=0-"):
                                hub._cut_done.add(sha)
                                cut = hub.cut_after
                            return serve_bytes(self, data, cut)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return C


def serve_bytes(h, data, cut=None):
    """200 or 206 (Range: bytes=a- or a-b) with an ETag; cut: close after that many body bytes."""
    rng, start, end = h.headers.get("Range"), 0, len(data) - 1
    if rng and rng.startswith("bytes="):
        a, _, b = rng[6:].partition("-")
        start = int(a) if a else 0
        end = min(int(b), len(data) - 1) if b else len(data) - 1
        h.send_response(206)
        h.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, len(data)))
    else:
        h.send_response(200)
    body = data[start:end + 1]
    h.send_header("Content-Length", str(len(body)))
    h.send_header("ETag", '"%s"' % hashlib.sha256(data).hexdigest())
    h.send_header("Accept-Ranges", "bytes")
    h.end_headers()
    if h.command == "HEAD":
        return
    if cut is not None and cut < len(body):
        h.wfile.write(body[:cut])
        h.wfile.flush()
        h.close_connection = True
        h.connection.shutdown(2)
        return
    h.wfile.write(body)


if __name__ == "__main__":
    import time
    hub = Hub()
    with open(os.environ.get("HUB_FILE", "/dev/null"), "rb") as f:
        hub.add("test/tiny-GGUF", {"tiny-Q8_0.gguf": f.read()})
    print(hub.url, flush=True)
    while True:
        time.sleep(3600)
