"""``cdss-node analyze-study``'s answers when it cannot go on: one line on stderr, exit 1;
and ``[retrieve] source`` checked against the destinations."""

from __future__ import annotations

import pytest

from cdss_node.cli import main
from cdss_node.config import ConfigError, load_config
from tests.conftest import free_port

STUDY = "1.2.826.0.1.3680043.8.498.1"


def config_file(tmp_path, retrieve: str = "", port: int | None = None):
    text = f'[node]\ndata_dir = "{tmp_path / "var"}"\n'
    if port is not None:
        text += (f'[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\n'
                 f"port = {port}\n")
    text += retrieve
    path = tmp_path / "node.toml"
    path.write_text(text)
    return str(path)


def run(capsys, *args) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_a_uid_that_is_not_one(tmp_path, capsys):
    code, err = run(capsys, "--config", config_file(tmp_path), "analyze-study", "--study",
                    "1.2.abc")
    assert code == 1 and "not a valid UID: '1.2.abc'" in err and err.count("\n") == 1


def test_no_source_to_find_the_series(tmp_path, capsys):
    code, err = run(capsys, "--config", config_file(tmp_path), "analyze-study", "--study", STUDY)
    assert code == 1 and "set [retrieve] source" in err


def test_a_pacs_that_does_not_answer(tmp_path, capsys):
    config = config_file(tmp_path, '[retrieve]\nsource = "pacs"\n', port=free_port())
    code, err = run(capsys, "--config", config, "analyze-study", "--study", STUDY)
    assert code == 1 and "no association with PACS@127.0.0.1" in err and err.count("\n") == 1


def test_no_index_without_a_node(tmp_path, capsys):
    code, err = run(capsys, "--config", config_file(tmp_path), "analyze-study", "--study",
                    STUDY, "--series", STUDY + ".2")
    assert code == 1 and "no index at" in err


def test_retrieve_source_must_name_a_destination(tmp_path):
    with pytest.raises(ConfigError) as problems:
        load_config(config_file(tmp_path, '[retrieve]\nsource = "archive"\n', port=104))
    assert problems.value.problems == [
        "retrieve.source: expected the name of a [[destinations]] entry, found 'archive'"]
    assert load_config(config_file(tmp_path, '[retrieve]\nsource = "pacs"\nmethod = "get"\n',
                                   port=104)).retrieve_source.name == "pacs"
