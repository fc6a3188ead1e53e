"""The previous token keys of a rotation reach the auth container, and only it: from the
Terraform variable, through the env file cloud-init writes and `docker run --env-file`
reads (one line per variable), to the setting auth parses at start."""

from __future__ import annotations

import re

from shared.config import Settings
from shared.tokens import (
    generate_signing_key_pem,
    public_jwk,
    public_key_pem,
    public_keys_from_pem,
    signing_key_from_pem,
)
from tests.support.infra import TERRAFORM

# As written in services.tf: in HCL, "\n" is a line break and "\\n" a backslash and an n.
ESCAPED = r'TOKEN_PREVIOUS_PUBLIC_KEYS = replace(var.token_previous_public_keys, "\n", "\\n")'


def test_the_variable_defaults_to_no_keys_and_refuses_private_ones(root):
    variable = root.variables["token_previous_public_keys"]
    assert variable["type"] == "string" and variable["default"] == ""
    (validation,) = variable["validation"]
    assert validation["condition"] == '${!strcontains(var.token_previous_public_keys, "PRIVATE")}'


def test_only_auth_gets_the_previous_keys_with_line_breaks_escaped(root):
    assert ESCAPED in root.modules["auth"]["env"]
    for service in ("api", "transcoder"):
        assert "TOKEN_PREVIOUS_PUBLIC_KEYS" not in root.modules[service]["env"]
    mentions = [
        path.name
        for path in TERRAFORM.rglob("*.tf")
        for _ in re.finditer("TOKEN_PREVIOUS_PUBLIC_KEYS", path.read_text())
    ]
    assert mentions == ["services.tf"]


def test_the_env_file_holds_one_line_per_variable(mig_module):
    # Why the escape is needed: a raw line break would end the variable's line.
    assert (
        mig_module.locals["env_file"]
        == '${join("", [for key in sort(keys(var.env)) : "${key}=${var.env[key]}\\n"])}'
    )


def test_keys_written_as_terraform_writes_them_are_read_back_by_auth():
    keys = [signing_key_from_pem(generate_signing_key_pem()) for _ in range(2)]
    tfvars_value = "".join(public_key_pem(key.public_key) for key in keys)  # a heredoc in platform.tfvars
    env = {"SERVICE_NAME": "auth", "TOKEN_PREVIOUS_PUBLIC_KEYS": tfvars_value.replace("\n", "\\n")}
    env_file = "".join(f"{name}={env[name]}\n" for name in sorted(env))  # the module's env_file

    # docker run --env-file: one NAME=value per line, the value taken literally.
    container_env = dict(line.partition("=")[::2] for line in env_file.splitlines())
    assert container_env["SERVICE_NAME"] == "auth"
    settings = Settings(token_previous_public_keys=container_env["TOKEN_PREVIOUS_PUBLIC_KEYS"])
    read_back = public_keys_from_pem(settings.token_previous_public_keys)
    assert [public_jwk(key)["kid"] for key in read_back] == [key.kid for key in keys]
