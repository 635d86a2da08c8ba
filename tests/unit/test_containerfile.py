"""scripts/Containerfile (for Docker or Podman users) agrees with scripts/image.sh,
the reference build: nobody builds the Containerfile here (no container engine, no
registry), so this reads both files and compares what users rely on: the user and
group, working directory, entrypoint and its launcher, environment, site directory,
version and the OCI label names."""

from __future__ import annotations

import re
import shlex
import tomllib

from support import REPO

CONTAINERFILE = (REPO / "scripts" / "Containerfile").read_text()
IMAGE_SH = (REPO / "scripts" / "image.sh").read_text()


def instructions(name: str) -> list[str]:
    """The arguments of every instruction `name` of the Containerfile's last stage
    (the image; continuations joined)."""
    text = CONTAINERFILE.replace("\\\n", " ")
    text = text[text.rindex("\nFROM ") :]
    return [m.strip() for m in re.findall(rf"^{name} (.*)$", text, flags=re.MULTILINE)]


def image_sh(variable: str) -> str:
    (value,) = re.findall(rf"^{variable}=(\S+)$", IMAGE_SH, flags=re.MULTILINE)
    return value


def umoci_config(option: str) -> list[str]:
    return re.findall(rf"--config\.{option}=([^\s)]+)", IMAGE_SH)


def test_user_workdir_entrypoint_and_environment() -> None:
    user = image_sh("user_id")
    assert instructions("USER") == [f"{user}:{user}"]
    assert umoci_config("user") == ['"$user_id:$user_id"']
    assert instructions("WORKDIR") == umoci_config("workingdir")
    assert instructions("ENTRYPOINT") == [f'["{umoci_config("entrypoint")[0]}"]']
    (env,) = instructions("ENV")
    assert shlex.split(env) == umoci_config("env")


def test_site_directory_and_launcher() -> None:
    site = image_sh("python_site")
    assert site in CONTAINERFILE
    (launcher,) = re.findall(r"printf '(#!.*?)'", IMAGE_SH)
    assert f"printf '{launcher}'" in CONTAINERFILE


def test_version_and_labels() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert f"ARG VERSION={pyproject['project']['version']}" in CONTAINERFILE
    (labels,) = instructions("LABEL")
    names = {part.split("=", 1)[0] for part in shlex.split(labels)}
    annotated = set(re.findall(r'^  "(org\.opencontainers\.image\.[a-z]+)=', IMAGE_SH, re.M))
    assert names == annotated
    assert len(names) >= 6
