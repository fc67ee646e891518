#!/usr/bin/env python3
"""P4Runtime over TLS, interop: the official Python bindings (grpcio) against a real
`dvipa-switch` started with simple_switch_grpc's TLS options
(`--grpc-server-ssl --grpc-server-cert --grpc-server-key --grpc-server-cacert
--grpc-server-with-client-auth`). Certificates are made with openssl for the run: a switch CA and
the switch's certificate (localhost, 127.0.0.1), a controllers' CA and a client certificate, and a
rogue CA with a client certificate.

Checks: a client of the controllers' CA arbitrates (primary) and reads Capabilities; a TLS client without a certificate, one of the rogue CA, one that does not trust the
switch's CA, and a plaintext client are refused. Then the same switch without client auth admits
a TLS client without certificate.

Usage: tls_interop.py SWITCH_BINARY
Prints one PASS/FAIL line per check and "N passed, N failed".
"""
import os
import socket
import subprocess
import sys
import tempfile
import time

import grpc
from p4.v1 import p4runtime_pb2 as p4r, p4runtime_pb2_grpc

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("PASS %s" % name)
    else:
        failed += 1
        print("FAIL %s %s" % (name, detail))


def sh(*argv):
    subprocess.run(argv, check=True, capture_output=True)


def make_ca(d, name):
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
       "-nodes", "-keyout", os.path.join(d, name + ".key"), "-out", os.path.join(d, name + ".pem"),
       "-days", "2", "-subj", "/CN=" + name,
       "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign,cRLSign")


def make_leaf(d, ca, name, usage, san):
    key, csr, pem = (os.path.join(d, name + x) for x in (".key", ".csr", ".pem"))
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\nextendedKeyUsage=%s\nkeyUsage=digitalSignature\n"
                "basicConstraints=CA:FALSE\n" % (san, usage))
    sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
       "-keyout", key, "-out", csr, "-subj", "/CN=" + name)
    sh("openssl", "x509", "-req", "-in", csr, "-CA", os.path.join(d, ca + ".pem"),
       "-CAkey", os.path.join(d, ca + ".key"), "-CAcreateserial", "-out", pem, "-days", "2",
       "-extfile", ext)


def read(d, f):
    with open(os.path.join(d, f), "rb") as fh:
        return fh.read()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_switch(binary, d, port, client_auth):
    args = [binary, "--no-p4", "--", "--grpc-server-addr", "127.0.0.1:%d" % port,
            "--grpc-server-ssl", "--grpc-server-cert", os.path.join(d, "sw.pem"),
            "--grpc-server-key", os.path.join(d, "sw.key")]
    if client_auth:
        args += ["--grpc-server-cacert", os.path.join(d, "clients-ca.pem"),
                 "--grpc-server-with-client-auth"]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return p
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise RuntimeError("dvipa-switch did not listen")


def channel(port, root=None, key=None, cert=None):
    if root is None:
        return grpc.insecure_channel("127.0.0.1:%d" % port)
    creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key,
                                         certificate_chain=cert)
    return grpc.secure_channel("127.0.0.1:%d" % port, creds,
                               options=[("grpc.ssl_target_name_override", "localhost")])


def arbitrate(chan):
    """Primary arbitration over StreamChannel: the answer's status code, or the RpcError code."""
    stub = p4runtime_pb2_grpc.P4RuntimeStub(chan)
    req = p4r.StreamMessageRequest()
    req.arbitration.device_id = 0
    req.arbitration.election_id.low = 1
    try:
        stream = stub.StreamChannel(iter([req]), timeout=3)
        for m in stream:
            if m.WhichOneof("update") == "arbitration":
                return m.arbitration.status.code
    except grpc.RpcError as e:
        return e.code()
    return None


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as d:
        make_ca(d, "switch-ca")
        make_ca(d, "clients-ca")
        make_ca(d, "rogue-ca")
        make_leaf(d, "switch-ca", "sw", "serverAuth", "DNS:localhost,IP:127.0.0.1")
        make_leaf(d, "clients-ca", "ctl", "clientAuth", "DNS:dvipa-controller")
        make_leaf(d, "rogue-ca", "rogue", "clientAuth", "DNS:dvipa-controller")
        root = read(d, "switch-ca.pem")
        ctl = (read(d, "ctl.key"), read(d, "ctl.pem"))
        rogue = (read(d, "rogue.key"), read(d, "rogue.pem"))

        port = free_port()
        sw = start_switch(binary, d, port, client_auth=True)
        try:
            ch = channel(port, root, *ctl)
            code = arbitrate(ch)
            check("mTLS: a client of the controllers' CA is primary", code == 0, code)
            stub = p4runtime_pb2_grpc.P4RuntimeStub(ch)
            caps = stub.Capabilities(p4r.CapabilitiesRequest(), timeout=3)
            check("mTLS: Capabilities", caps.p4runtime_api_version != "", caps)
            for name, c in [
                ("TLS without a client certificate", channel(port, root)),
                ("a client certificate of another CA", channel(port, root, *rogue)),
                ("a client that does not trust the switch's CA",
                 channel(port, read(d, "rogue-ca.pem"), *ctl)),
                ("plaintext", channel(port)),
            ]:
                code = arbitrate(c)
                check("mTLS: refused: %s" % name, code != 0 and code is not None, code)
        finally:
            sw.kill()
            sw.wait()

        port = free_port()
        sw = start_switch(binary, d, port, client_auth=False)
        try:
            code = arbitrate(channel(port, root))
            check("server TLS: a client without certificate is primary", code == 0, code)
            check("server TLS: plaintext refused", arbitrate(channel(port)) != 0)
        finally:
            sw.kill()
            sw.wait()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
