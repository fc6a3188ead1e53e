"""Print NAME=value lines for Secret Manager versions, for `docker run --env-file`.

Run at container start inside the service's own image (which carries the Secret Manager
client), with the instance's service account:

    python secrets_env.py DB_PASSWORD=projects/p/secrets/s/versions/latest ...
"""

import sys

from google.cloud import secretmanager


def main(assignments: list[str]) -> None:
    pairs = []
    for assignment in assignments:
        name, _, version = assignment.partition("=")
        if not name or not version:
            raise SystemExit(f"expected NAME=<secret version resource>, got {assignment!r}")
        pairs.append((name, version))
    client = secretmanager.SecretManagerServiceClient()
    for name, version in pairs:
        value = client.access_secret_version(name=version).payload.data.decode("utf-8")
        # An env file holds one line per variable: anything else would be cut or misread.
        if "\n" in value or "\r" in value:
            raise SystemExit(f"{name}: a multi-line secret cannot be passed in an env file")
        print(f"{name}={value}")


if __name__ == "__main__":
    main(sys.argv[1:])
