"""A real remote cache for the tests: nginx with its WebDAV module (Debian's
nginx-light), on 127.0.0.1 only, the way a team would run one: anyone may
read; writing (PUT) needs HTTP basic credentials. Its access log shows
every request, so a test can prove what a client did or did not send."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

USER, PASSWORD = "ci", "s3cret-for-tests"

CONF = """\
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log info;
user {user};
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root}/data;
        client_max_body_size 0;
        location / {{
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw;
            limit_except GET HEAD {{
                auth_basic "onlydocker cache";
                auth_basic_user_file {root}/htpasswd;
            }}
        }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Nginx:
    root: Path
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def start(self) -> Nginx:
        self.root.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(exist_ok=True)
        # nginx's {PLAIN} scheme: no htpasswd tool needed for a test password.
        (self.root / "htpasswd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        self.port = self.port or _free_port()
        user = "root root" if os.getuid() == 0 else f"{os.getuid()}"   # workers write the data folder
        conf = self.root / "nginx.conf"
        conf.write_text(CONF.format(root=self.root, port=self.port, user=user))
        # In the foreground, as our child: stopped by its pid, never left behind.
        self.process = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(self.root)],
                                        stdout=subprocess.DEVNULL, stderr=open(self.root / "stderr.log", "w"))
        for _ in range(100):
            if self.process.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not answer on {self.url}: {(self.root / 'stderr.log').read_text()}"
                           f"{(self.root / 'error.log').read_text() if (self.root / 'error.log').exists() else ''}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request so far, from the access log."""
        out = []
        log = self.root / "access.log"
        for line in (log.read_text().splitlines() if log.exists() else []):
            try:
                request = line.split('"')[1]
                status = int(line.split('"')[2].split()[0])
            except (IndexError, ValueError):
                continue
            method, path = request.split()[:2]
            out.append((method, path, status))
        return out

    def env(self, *, write: bool = True) -> dict[str, str]:
        env = {"ONLYDOCKER_REMOTE_CACHE": self.url}
        if write:
            env.update(ONLYDOCKER_REMOTE_CACHE_USER=USER, ONLYDOCKER_REMOTE_CACHE_PASSWORD=PASSWORD)
        else:
            env["ONLYDOCKER_REMOTE_CACHE_READONLY"] = "1"
        return env
