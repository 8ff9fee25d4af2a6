"""A Cloud Storage server on loopback for the object-store tests (run as a script).

    python tests/support/gcs_server.py --port=P --proxy_port=Q --cert=C.pem --key=K.pem

- Port P: gcp-storage-emulator (the GCS JSON API, in memory, bucket 'bkt'). TensorStore
  (TENSORSTORE_GCS_HTTP_URL) and google-cloud-storage (STORAGE_EMULATOR_HOST) talk to it.
- Port Q: an HTTPS proxy for TensorFlow's GCS file system, whose endpoint is fixed
  (https://www.googleapis.com, https://storage.googleapis.com) but which honours HTTPS_PROXY /
  http_proxy and CURL_CA_BUNDLE: it accepts CONNECT, ends TLS with the test's self-signed
  certificate and passes the plain HTTP on to port P; plain-HTTP proxy requests (the
  emulator's resumable-upload URLs are http://) go to port P as well.

Two fixes to the emulator, both for requests TensorFlow sends: a zero-byte media upload
(TF's directory markers) has no body, and TF's uploads carry both Content-Length and
`Transfer-Encoding: chunked` (the latter wins, RFC 9112 section 6.3).
"""

import argparse
import socket
import ssl
import threading

from gcp_storage_emulator import server
from gcp_storage_emulator.handlers import objects

BUCKET = "bkt"


def _patch_emulator() -> None:
    media_upload, read_raw_data = objects._media_upload, server._read_raw_data

    def upload(request, response, storage):
        if request.data is None:
            request._data = b""
        return media_upload(request, response, storage)

    def read(handler):
        if (handler.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            del handler.headers["Content-Length"]
        return read_raw_data(handler)

    objects._media_upload, server._read_raw_data = upload, read


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _splice(client: socket.socket, port: int, first: bytes = b"") -> None:
    upstream = socket.create_connection(("127.0.0.1", port))
    if first:
        upstream.sendall(first)
    threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
    _pipe(upstream, client)


def _handle(client: socket.socket, port: int, tls: ssl.SSLContext) -> None:
    head = b""
    while b"\r\n\r\n" not in head:
        data = client.recv(4096)
        if not data:
            client.close()
            return
        head += data
    line, rest = head.split(b"\r\n", 1)
    method, uri, version = line.split(b" ", 2)
    if method == b"CONNECT":
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        _splice(tls.wrap_socket(client, server_side=True), port)
        return
    path = b"/" + uri.split(b"://", 1)[1].split(b"/", 1)[-1] if b"://" in uri else uri
    _splice(client, port, b" ".join([method, path, version]) + b"\r\n" + rest)


def _serve_proxy(proxy_port: int, port: int, cert: str, key: str) -> None:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", proxy_port))
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_handle, args=(client, port, tls), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("port", "proxy_port"):
        parser.add_argument(f"--{name}", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    _patch_emulator()
    threading.Thread(target=_serve_proxy, args=(args.proxy_port, args.port, args.cert, args.key),
                     daemon=True).start()
    emulator = server.create_server("127.0.0.1", args.port, in_memory=True,
                                    default_bucket=BUCKET)
    print("ready", flush=True)
    emulator.run()


if __name__ == "__main__":
    main()
