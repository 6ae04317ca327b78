#!/usr/bin/env python3
"""Generates vectors.json: DSQL auth tokens signed by botocore (boto3's signer) with its clock frozen.

Run from this directory:  pip install boto3 && python3 gen_vectors.py > vectors.json
tests/token_vectors.rs compares dsql-auth-core's tokens with every vector, byte for byte.

Each vector holds the inputs and two botocore outputs:
  expected   botocore's token for the normalised host (lowercase, no ':443'): our bytes must equal it;
  botocore_raw  botocore's token for the host exactly as given (mixed case, ':443'): botocore keeps the
             host as given in the token's prefix but signs the lowercased host without ':443', so the
             query (and signature) after '/?' must equal ours too.
"""
import datetime
import itertools
import json
import sys
from unittest import mock

import boto3
import botocore
import botocore.auth
import botocore.compat

# The aws-sdk-dsql known answers (auth_token.rs tests): same inputs must give these signatures.
PUBLISHED = [
    {"source": "aws-sdk-dsql 1.79.0 src/auth_token.rs test signing_works", "host": "peccy.dsql.us-east-1.on.aws",
     "region": "us-east-1", "action": "DbConnect", "expires_in": 450, "access_key_id": "akid",
     "secret_access_key": "secret", "session_token": None, "epoch": 1724716800,
     "signature": "f5f2ad764ca5df44045d4ab6ccecba0eef941b0007e5765885a0b6ed3702a3f8"},
    {"source": "aws-sdk-dsql 1.79.0 src/auth_token.rs test signing_works", "host": "peccy.dsql.us-east-1.on.aws",
     "region": "us-east-1", "action": "DbConnectAdmin", "expires_in": 450, "access_key_id": "akid",
     "secret_access_key": "secret", "session_token": None, "epoch": 1724716800,
     "signature": "267cf8d04d84444f7a62d5bdb40c44bfc6cb13dd6c64fa7f772df6bbaa90fff1"},
]

CLUSTER = "abcdefghijklmnopqrstuvwxyz"
REGION_HOSTS = {
    "us-east-1": f"{CLUSTER}.dsql.us-east-1.on.aws",
    "us-east-2": f"{CLUSTER}.dsql.us-east-2.on.aws",
    "eu-west-1": f"{CLUSTER}.dsql.eu-west-1.on.aws",
    "ap-northeast-1": f"{CLUSTER}.dsql.ap-northeast-1.on.aws",
    "us-gov-west-1": f"{CLUSTER}.dsql-fips.us-gov-west-1.on.aws",
    "cn-north-1": f"{CLUSTER}.dsql.cn-north-1.on.amazonwebservices.com.cn",
}
TIMES = [
    "2024-01-01T00:00:00Z",   # the CLI test's --at
    "2024-02-29T23:59:59Z",   # leap day, last second
    "2023-12-31T23:59:59Z",   # year end, last second
    "2024-08-27T00:00:00Z",   # aws-sdk-dsql's known-answer instant
    "2026-11-22T13:37:42Z",
]
EXPIRIES = [1, 900, 3600, 604800]
CREDS = [
    ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None),
    ("ASIAQEXAMPLE2EXAMPLE", "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
     "IQoJb3JpZ2luX2VjEJr/////////wEaCXVzLWVhc3QtMSJHMEUCIQD+abc/def+ghi==AbC="),
    ("ASIA0000000000000000", "s3cr3t+/=with/odd+chars=", "a/b+c=d//++=="),
]


def normalise(host):
    h = host[:-4] if host.endswith(":443") else host
    return h.rstrip(".").lower() if h.endswith(".") else h.lower()


def sign(host, region, action, expires_in, akid, secret, token, at):
    fixed = datetime.datetime.strptime(at, "%Y-%m-%dT%H:%M:%SZ")
    client = boto3.session.Session(
        aws_access_key_id=akid, aws_secret_access_key=secret, aws_session_token=token, region_name=region
    ).client("dsql")
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=fixed):
        if action == "DbConnectAdmin":
            return client.generate_db_connect_admin_auth_token(host, region, expires_in)
        return client.generate_db_connect_auth_token(host, region, expires_in)


def vector(name, host, region, action, expires_in, creds, at):
    akid, secret, token = creds
    v = {
        "name": name, "host": host, "region": region, "action": action, "expires_in": expires_in,
        "access_key_id": akid, "secret_access_key": secret, "session_token": token, "at": at,
        "expected": sign(normalise(host), region, action, expires_in, akid, secret, token, at),
    }
    if normalise(host) != host:
        v["botocore_raw"] = sign(host, region, action, expires_in, akid, secret, token, at)
    return v


def main():
    assert not getattr(botocore.compat, "HAS_CRT", False), "uninstall awscrt: vectors must come from botocore's Python signer"
    vectors = []
    # Every region x action, rotating through expiries, times and credentials.
    combos = itertools.product(REGION_HOSTS.items(), ["DbConnect", "DbConnectAdmin"])
    for i, ((region, host), action) in enumerate(combos):
        for j, at in enumerate(TIMES):
            expires_in = EXPIRIES[(i + j) % len(EXPIRIES)]
            creds = CREDS[(i + 2 * j) % len(CREDS)]
            vectors.append(vector(f"{region}-{action}-{at}-{expires_in}s", host, region, action, expires_in, creds, at))
    # Every expiry with and without a session token containing / + =.
    for expires_in, creds in itertools.product(EXPIRIES, CREDS):
        vectors.append(vector(f"expiry-{expires_in}-{creds[0]}", REGION_HOSTS["us-east-1"], "us-east-1",
                              "DbConnectAdmin", expires_in, creds, "2024-02-29T23:59:59Z"))
    # Hosts botocore normalises: mixed case, explicit :443.
    for host in [f"{CLUSTER.upper()}.DSQL.US-EAST-1.ON.AWS", f"{CLUSTER}.dsql.us-east-1.on.aws:443",
                 f"AbCdEfGhIjKlMnOpQrStUvWxYz.Dsql.Us-East-1.On.Aws:443", "LocalHost:443"]:
        for action in ["DbConnect", "DbConnectAdmin"]:
            vectors.append(vector(f"host-{host}-{action}", host, "us-east-1", action, 900, CREDS[1], "2023-12-31T23:59:59Z"))
    # Custom hosts: IPs, a non-443 port (kept and signed), PrivateLink-style.
    for host in ["localhost", "127.0.0.1", "[::1]", "proxy.internal:5432",
                 f"{CLUSTER}.dsql-fnh4.us-east-1.on.aws"]:
        vectors.append(vector(f"custom-{host}", host, "us-east-1", "DbConnect", 900, CREDS[0], "2024-01-01T00:00:00Z"))
    # The published known answers, re-signed by botocore: all three implementations must agree.
    for p in PUBLISHED:
        at = datetime.datetime.fromtimestamp(p["epoch"], datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        v = vector("published-" + p["action"], p["host"], p["region"], p["action"], p["expires_in"],
                   (p["access_key_id"], p["secret_access_key"], p["session_token"]), at)
        assert v["expected"].endswith("X-Amz-Signature=" + p["signature"]), (v, p)
        vectors.append(v)
    json.dump({
        "generator": "dsql-auth-core/tests/vectors/gen_vectors.py",
        "command": "pip install boto3==%s && python3 gen_vectors.py > vectors.json" % boto3.__version__,
        "boto3": boto3.__version__,
        "botocore": botocore.__version__,
        "python": sys.version.split()[0],
        "clock": "botocore.auth.get_current_datetime patched to return the vector's 'at'",
        "published": PUBLISHED,
        "vectors": vectors,
    }, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
