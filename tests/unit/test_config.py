import tomllib
from pathlib import Path

import pytest

from cdss_node.cli import main
from cdss_node.config import Config, ConfigError, load_config, unet_window
from cdss_node.config_default import render_default_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_no_file_gives_the_documented_defaults():
    config = load_config(None, env={})
    assert config.node.ae_title == "CDSS_EGFR"
    assert config.node.port == 11112
    assert config.node.data_dir == "./var"
    assert config.security.allowed_calling_aets == []
    assert config.destinations == ()


def test_default_file_parses_to_the_built_in_defaults(tmp_path):
    text = render_default_config()
    tomllib.loads(text)  # valid TOML
    assert load_config(write(tmp_path, text), env={}) == Config()


def test_every_key_is_commented_in_the_default_file():
    lines = render_default_config().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[i - 1].startswith("# env: CDSS_"), line


def test_file_values_and_destinations(tmp_path):
    path = write(tmp_path, """
[node]
ae_title = "EGFR1"
port = 104
[security]
allowed_calling_aets = ["ORTHANC", "PACS@10.0.0.5"]
[[destinations]]
name = "pacs"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = 4242
""")
    config = load_config(path, env={})
    assert (config.node.ae_title, config.node.port) == ("EGFR1", 104)
    assert config.security.allowed_calling_aets == ["ORTHANC", "PACS@10.0.0.5"]
    assert config.destinations[0].ae_title == "ORTHANC"


def test_environment_overrides_the_file(tmp_path):
    path = write(tmp_path, "[node]\nport = 104\n")
    env = {"CDSS_NODE_PORT": "11113", "CDSS_SECURITY_ALLOWED_CALLING_AETS": "A, B",
           "CDSS_STORE_FSYNC": "true", "CDSS_SERIES_GRACE_S": "1.5"}
    config = load_config(path, env=env)
    assert config.node.port == 11113
    assert config.security.allowed_calling_aets == ["A", "B"]
    assert config.store.fsync is True
    assert config.series.grace_s == 1.5


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        Config().node.port = 1  # type: ignore[misc]


def test_every_problem_is_reported_once(tmp_path):
    path = write(tmp_path, """
[node]
port = 70000
prot = 1
ae_title = "THIS_TITLE_IS_FAR_TOO_LONG"
[store]
fsync = "yes"
[nodes]
[[destinations]]
name = "x"
port = 1
""")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    problems = err.value.problems
    assert any(p.startswith("node.port: expected an integer in 1..65535") for p in problems)
    assert any(p.startswith("node.prot: unknown key") for p in problems)
    assert any(p.startswith("node.ae_title: expected an AE title") for p in problems)
    assert any(p.startswith("store.fsync: expected true or false") for p in problems)
    assert any(p.startswith("nodes: unknown section") for p in problems)
    assert "destinations[0].ae_title: missing" in problems
    assert "destinations[0].host: missing" in problems
    assert len(problems) == 7


def test_bad_env_value_is_a_problem():
    with pytest.raises(ConfigError, match="CDSS_NODE_PORT: expected a number"):
        load_config(None, env={"CDSS_NODE_PORT": "eleven"})


def test_tls_needs_cert_and_key(tmp_path):
    path = write(tmp_path, '[security]\ntls_cert = "x.pem"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "security.tls_cert and security.tls_key: set both or neither" in err.value.problems
    assert "security.tls_cert: no such file 'x.pem'" in err.value.problems


def test_check_config_prints_one_line_per_problem(tmp_path, capsys):
    path = write(tmp_path, "[node]\nport = 0\nhost = 5\n")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{path}: node.host: expected a string, found 5",
                   f"{path}: node.port: expected an integer in 1..65535, found 0"]


def test_check_config_on_invalid_toml_and_missing_file(tmp_path, capsys):
    assert main(["check-config", str(write(tmp_path, "[node\n"))]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["check-config", str(tmp_path / "absent.toml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_check_config_ok_and_config_default(tmp_path, capsys):
    assert main(["config-default"]) == 0
    text = capsys.readouterr().out
    assert main(["check-config", str(write(tmp_path, text))]) == 0
    assert capsys.readouterr().out.strip().endswith(": OK")


def test_shipped_example_equals_config_default():
    example = Path(__file__).resolve().parents[2] / "deploy" / "cdss-node.toml"
    assert example.read_text() == render_default_config()


def test_analysis_problems_are_listed_one_per_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[analysis]\nsegmenter = "lungtumormask"\nbundle = "/nope"\n'
                    'device = "tpu"\nworkers = 2\nunet_window = "48x60x64"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems == [
        "analysis.device: expected one of auto, cpu, cuda, found 'tpu'",
        "analysis.workers: expected an integer in 0..1, found 2",
        "analysis.bundle: no manifest.json in '/nope'",
        'analysis.unet_weights: needed by segmenter = "lungtumormask"',
        "analysis.unet_window: expected 'whole' or three multiples of 16 as ZxYxX, "
        "found '48x60x64'",
    ]


def test_unet_window_reads_as_voxels_or_whole():
    assert unet_window("48x64x64") == (48, 64, 64) and unet_window(" 96X128x128") == (96, 128, 128)
    assert unet_window("whole") is None


DESTINATION = '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "pacs.local"\nport = 2762\n'


def test_a_tls_destination_names_its_ca_and_the_node_s_certificate(tmp_path):
    for name in ("ca.pem", "node.pem", "node.key"):
        (tmp_path / name).write_text("PEM\n")
    path = write(tmp_path, DESTINATION + f'tls = true\ntls_ca = "{tmp_path}/ca.pem"\n'
                 f'tls_cert = "{tmp_path}/node.pem"\ntls_key = "{tmp_path}/node.key"\n')
    destination = load_config(path, env={}).destinations[0]
    assert destination.tls and destination.tls_ca == f"{tmp_path}/ca.pem"
    assert (destination.tls_cert, destination.tls_key) == (f"{tmp_path}/node.pem",
                                                           f"{tmp_path}/node.key")
    assert not load_config(write(tmp_path, DESTINATION), env={}).destinations[0].tls


@pytest.mark.parametrize("keys, problem", [
    ('tls = "yes"\n', "destinations[0].tls: expected true or false, found 'yes'"),
    ('tls = true\ntls_ca = "/nowhere/ca.pem"\n',
     "destinations[0].tls_ca: no such file '/nowhere/ca.pem'"),
    ('tls_ca = "{d}/ca.pem"\n', "destinations[0].tls_ca: set tls = true as well (TLS is off "
     "without it)"),
    ('tls = true\ntls_cert = "{d}/ca.pem"\n', "destinations[0].tls_cert and tls_key: set both "
     "or neither"),
])
def test_a_bad_tls_destination_is_a_one_line_problem(tmp_path, keys, problem):
    (tmp_path / "ca.pem").write_text("PEM\n")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, DESTINATION + keys.format(d=tmp_path)), env={})
    assert err.value.problems == [problem]


def test_a_bool_is_no_port(tmp_path):
    text = DESTINATION.replace("port = 2762", "port = true")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env={})
    assert err.value.problems == ["destinations[0].port: expected an integer, found True"]


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "+nan"])
def test_nan_and_infinity_are_no_number(tmp_path, text):
    path = write(tmp_path, f"[series]\ngrace_s = {text}\nquiet_s = {text}\n"
                 f"[node]\nnetwork_timeout_s = {text}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert err.value.problems == [
        f"node.network_timeout_s: expected a finite number, found {text.lstrip('+')}",
        f"series.grace_s: expected a finite number, found {text.lstrip('+')}",
        f"series.quiet_s: expected a finite number, found {text.lstrip('+')}"]


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-Infinity"])
def test_nan_and_infinity_from_the_environment_are_no_number(text):
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"CDSS_SERIES_QUIET_S": text})
    assert err.value.problems == [f"CDSS_SERIES_QUIET_S: expected a finite number, found {text!r}"]


def file_in(tmp_path: Path) -> str:
    (tmp_path / "a_file").write_text("not a folder\n")
    return str(tmp_path / "a_file")


@pytest.mark.parametrize("data_dir, problem", [
    (file_in, "'{d}/a_file' is not a folder"),
    (lambda d: file_in(d) + "/var", "'{d}/a_file' is not a folder"),
    (lambda d: "/proc", "cannot create or write in '/proc': No such file or directory"),
    (lambda d: "/proc/cdss/var", "cannot create or write in '/proc/cdss/var': No such file or "
                                 "directory"),
])
def test_a_data_dir_that_cannot_hold_files_is_one_line_from_check_config(tmp_path, capsys,
                                                                         data_dir, problem):
    path = write(tmp_path, f'[node]\ndata_dir = "{data_dir(tmp_path)}"\n')
    assert load_config(path, env={}).node.data_dir    # only a probe finds it
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}: node.data_dir: {problem.format(d=tmp_path)}"]


def test_the_data_dir_probe_makes_missing_folders_and_leaves_nothing_behind(tmp_path, capsys):
    (tmp_path / "var").mkdir()
    for data_dir in (tmp_path / "var", tmp_path / "new" / "er" / ".." / "var"):
        path = write(tmp_path, f'[node]\ndata_dir = "{data_dir}"\n')
        assert main(["check-config", str(path)]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.toml", "var"]
    assert list((tmp_path / "var").iterdir()) == []


def test_a_long_value_or_name_is_cut_in_its_problem(tmp_path):
    long, name = "A" * 10_000_000, "k" * 100_000
    path = write(tmp_path, f'[node]\nae_title = "{long}"\n{name} = 1\n[{name}]\n'
                 f'[series]\ngrace_s = ["{name}", [[[[1]]]], 2, 3, 4, 5, 6, 7]\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, env={"CDSS_NODE_PORT": long})
    assert len(err.value.problems) == 5
    assert all(len(p) < 400 for p in err.value.problems), [len(p) for p in err.value.problems]
    shown = "'" + "A" * 80 + "'…(10000000 characters)"
    assert "CDSS_NODE_PORT: expected a number, found " + shown in err.value.problems
    assert any(p.startswith("node." + "k" * 80 + "…(100000 characters): unknown key (known: ")
               for p in err.value.problems)
    assert "node.ae_title: expected an AE title (1-16 printable ASCII characters, no " \
           "backslash), found " + shown in err.value.problems


def test_toml_nested_too_deeply_is_one_line_and_exit_2(tmp_path, capsys):
    path = write(tmp_path, "a = " + "[" * 5000 + "]" * 5000 + "\n")
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}: not valid TOML: arrays or inline tables nested too deeply"]
