"""The viewer's local HTTP server (stdlib ``http.server``): GET routes over the run sources, nothing else."""

from __future__ import annotations

import re
import threading
import traceback
from collections.abc import Sequence
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

from agentloop.view._data import RunSource, TaskQuery
from agentloop.view._pages import Renderer

__all__ = ["ViewServer"]

_RUN = re.compile(r"^/run/(\d+)/?$")
_VERSION = re.compile(r"^/run/(\d+)/version$")
_TASK = re.compile(r"^/run/(\d+)/task/([^/]+)$")


class ViewServer:
    """Serve the viewer for ``sources`` on ``host:port`` (port 0 picks a free one)."""

    def __init__(self, sources: Sequence[RunSource], host: str = "127.0.0.1", port: int = 0):
        self.renderer = Renderer(sources, mode="server")
        self.sources = list(sources)
        renderer = self.renderer

        class Handler(_Handler):
            pages = renderer

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        address, port = self.httpd.server_address[:2]
        host = address.decode() if isinstance(address, bytes | bytearray) else str(address)
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    def serve_forever(self) -> None:
        try:
            self.httpd.serve_forever(poll_interval=0.2)
        finally:
            self.close()

    def start(self) -> ViewServer:
        """Serve from a background thread (tests, notebooks); :meth:`close` stops it."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1})
        self._thread.daemon = True
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()
        for s in self.sources:
            s.close()

    def __enter__(self) -> ViewServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    pages: Renderer
    server_version = "agentloop-view"

    def log_message(self, format: str, *args: object) -> None:
        pass  # a local viewer needs no access log on the terminal

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query))
        path = parts.path
        runs = len(self.pages.sources)
        try:
            if path in ("", "/"):
                if runs == 1:
                    return self._redirect("/run/0")
                return self._html(self.pages.index())
            if (m := _RUN.match(path)) and int(m.group(1)) < runs:
                return self._html(self.pages.run_page(int(m.group(1)), TaskQuery.from_params(params)))
            if (m := _VERSION.match(path)) and int(m.group(1)) < runs:
                return self._send(HTTPStatus.OK, "text/plain", self.pages.sources[int(m.group(1))].version())
            if (m := _TASK.match(path)) and int(m.group(1)) < runs:
                page = self.pages.task_page(int(m.group(1)), unquote(m.group(2)))
                if page is not None:
                    return self._html(page)
            if path == "/compare" and runs > 1:
                vs, page_no = _int(params.get("vs"), 1), _int(params.get("page"), 1)
                return self._html(self.pages.compare_page(vs, params.get("group", ""), page_no))
            self._send(HTTPStatus.NOT_FOUND, "text/html", f"<h1>Not found</h1><p>{escape(path)}</p>")
        except BrokenPipeError:
            pass
        except Exception as exc:  # the page shows what failed; the server keeps serving
            detail = escape("".join(traceback.format_exception_only(exc)).strip())
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, "text/html", f"<h1>Error</h1><pre>{detail}</pre>")

    def _html(self, body: str) -> None:
        self._send(HTTPStatus.OK, "text/html", body)

    def _redirect(self, location: str) -> None:
        self.send_response(HTTPStatus.FOUND)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, status: HTTPStatus, kind: str, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default
