"""A real S3 API for the test suite (tests/it/s3.rs), from moto's server.

Starts moto on a free loopback port, makes one IAM user whose access key may do anything on S3
and one empty bucket, then turns signature and permission checks on: from then on a request
signed with any other key is refused, as AWS, MinIO or Ceph would refuse it. Prints one JSON
line (endpoint, bucket, access key id, secret) and serves until its standard input closes, so
that the test that started it stops it by dropping the pipe, or by dying.

With `--no-auth` checks stay off: moto checks only signatures in an Authorization header, and
answers 500 to a presigned URL (signed in its query) once checks are on.

Run with the venv `scripts/ensure-venv.sh moto` makes.
"""

import json
import logging
import sys
import urllib.request

import boto3
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
BUCKET = "patchgate-test"


def main() -> None:
    # One line per request on stderr would drown a failing test's output.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"

    # Checks are off until reset-auth below: these set-up calls need no valid key.
    setup = {"endpoint_url": endpoint, "region_name": REGION,
             "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
    iam = boto3.client("iam", **setup)
    iam.create_user(UserName="patchgate")
    iam.put_user_policy(
        UserName="patchgate",
        PolicyName="s3-all",
        PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }),
    )
    key = iam.create_access_key(UserName="patchgate")["AccessKey"]
    boto3.client("s3", **setup).create_bucket(Bucket=BUCKET)

    if "--no-auth" not in sys.argv[1:]:
        # Every request from here on must be signed by an IAM key allowed to do what it asks.
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request) as answer:
            answer.read()

    print(json.dumps({
        "endpoint": endpoint,
        "region": REGION,
        "bucket": BUCKET,
        "access_key_id": key["AccessKeyId"],
        "secret_access_key": key["SecretAccessKey"],
    }), flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
