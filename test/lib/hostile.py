"""Receivers that misbehave at the socket level, on loopback.

One listening port per behaviour; each serves until close().  The
behaviours read the request first (so that the worker's POST is complete)
and then do something a well-behaved server would not.
"""
import socket
import struct
import threading
import time

CRLF = b"\r\n"


def _read_request(conn):
    """Read one HTTP request (headers and Content-Length body)."""
    conn.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(CRLF):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _status(conn, code, extra=b"", body=b"no"):
    conn.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n%s"
                 % (code, len(body), extra, body))


def never_answer(conn, stop):
    stop.wait(60)


def trickle(conn, stop):
    """Headers, then one byte a second."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(60):
        if stop.wait(1):
            return
        conn.sendall(b"x")


def huge_body(conn, stop):
    """200 with a body of 300 MB, sent as fast as the peer reads it."""
    size = 300 * 1024 * 1024
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
    block = b"\0" * 65536
    sent = 0
    while sent < size and not stop.is_set():
        conn.sendall(block)
        sent += len(block)


def endless(conn, stop):
    """200, chunked, a chunk after another until the peer hangs up."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"4000\r\n" + b"y" * 0x4000 + b"\r\n"
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        conn.sendall(chunk)


def binary_body(conn, stop):
    _status(conn, 200, body=bytes(range(256)) * 2 + b"\xff\xfe\xc3\x28")


def malformed_headers(conn, stop):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: banana\r\n\x00\x01garbage\r\n\r\nhello")


def reset(conn, stop):
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def close_silently(conn, stop):
    pass


def status(code, extra=b""):
    def behaviour(conn, stop):
        _status(conn, code, extra)
    behaviour.__name__ = "status_%d" % code
    return behaviour


class HostileServer:
    """Serve one behaviour on a loopback port."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.stop = threading.Event()
        self.hits = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self):
        return "http://127.0.0.1:%d/hook" % self.port

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            _read_request(conn)
            self.hits += 1
            self.behaviour(conn, self.stop)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self):
        self.stop.set()
        self.sock.close()
