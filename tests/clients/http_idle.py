"""Opens N HTTP/1.1 keep-alive connections to corral, one GET on each, then
leaves them idle: says OPEN, waits for a line on stdin, then proves the
last one still serves a second request (REUSED ok) and closes them all."""
import resource
import socket
import sys

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"


def one_response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("closed")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
    while len(body) < length:
        body += s.recv(65536)
    return head.split(b"\r\n")[0]


def main():
    n, port = int(sys.argv[1]), int(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 500), hard))
    conns, errors = [], []
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(REQUEST)
            if one_response(s) != b"HTTP/1.1 200 OK":
                errors.append("status")
            conns.append(s)
        except Exception as e:  # counted, reported
            errors.append(repr(e))
    print(f"OPEN {len(conns)} of {n}; errors: {errors[:3]}", flush=True)
    sys.stdin.readline()
    last = conns[-1]
    last.sendall(REQUEST)
    print("REUSED ok" if one_response(last) == b"HTTP/1.1 200 OK" else "REUSED failed", flush=True)
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
