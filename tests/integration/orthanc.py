"""Orthanc (Debian package) as the hospital's PACS in tests: its own folder, free ports, a Lua
script that routes every stable CT series to the node, and its REST API on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Sequence

from tests.conftest import free_port, require_tool

ROUTE_CT_TO_NODE = """
function OnStableSeries(seriesId, tags, metadata)
  if tags["Modality"] == "CT" then
    RestApiPost("/modalities/cdss/store", seriesId)
  end
end
"""


class Orthanc:
    """``node_port=None``: no route to a node (a plain PACS); ``plugins``: plugin files (.so)
    to load; ``extra``: more configuration sections (a plugin's, say), merged over the rest."""

    def __init__(self, folder: Path, node_port: int | None = None, node_aet: str = "CDSS_EGFR",
                 stable_age_s: int = 2, plugins: Sequence[str | Path] = (),
                 extra: dict | None = None):
        self.folder, self.aet = folder, "ORTHANC"
        self.dicom_port, self.http_port = free_port(), free_port()
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "CDSS-TEST-PACS", "StorageDirectory": str(folder / "db"),
            "IndexDirectory": str(folder / "db"), "DicomAet": self.aet,
            "DicomPort": self.dicom_port, "HttpPort": self.http_port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False, "StableAge": stable_age_s,
            "DicomModalities": {}, "LuaScripts": [],
            "Plugins": [str(plugin) for plugin in plugins]}
        if node_port is not None:
            (folder / "route.lua").write_text(ROUTE_CT_TO_NODE)
            config["DicomModalities"] = {"cdss": [node_aet, "127.0.0.1", node_port]}
            config["LuaScripts"] = [str(folder / "route.lua")]
        config.update(extra or {})
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "Orthanc":
        log = open(self.folder / "orthanc.log", "ab")
        self.proc = subprocess.Popen([require_tool("Orthanc"), str(self.folder / "orthanc.json")],
                                     stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.get("/system")
                return self
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("Orthanc did not answer on its REST port")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as r:
            body = r.read()
        return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    def post(self, path: str, body: bytes, content_type: str = "application/dicom"):
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body,
                                         headers={"Content-Type": content_type}, method="POST")
        with urllib.request.urlopen(request, timeout=30) as r:
            answer = r.read()
        return json.loads(answer) if r.headers.get_content_type() == "application/json" else answer

    def delete(self, path: str) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}",
                                         method="DELETE")
        with urllib.request.urlopen(request, timeout=30) as r:
            r.read()

    def series_of(self, study_uid: str) -> list[dict]:
        """The series of a study, each with its main tags and instance ids."""
        studies = [s for s in self.get("/studies?expand")
                   if s["MainDicomTags"].get("StudyInstanceUID") == study_uid]
        return self.get(f"/studies/{studies[0]['ID']}/series") if studies else []


DEPLOY_ORTHANC = Path(__file__).resolve().parents[2] / "deploy" / "orthanc"


class DeployOrthanc(Orthanc):
    """Orthanc with the deploy configuration (deploy/orthanc/orthanc.json and autoroute.lua,
    the routing a hospital gets): only paths, ports and the node's address changed, the
    DICOMweb plugin and HTTP authentication left out."""

    def __init__(self, folder: Path, node_port: int, stable_age_s: int = 1):
        self.folder, self.aet = folder, "ORTHANC"
        self.dicom_port, self.http_port = free_port(), free_port()
        folder.mkdir(parents=True, exist_ok=True)
        config = json.loads((DEPLOY_ORTHANC / "orthanc.json").read_text())
        self.aet = config["DicomAet"]
        lua = folder / "autoroute.lua"
        lua.write_text((DEPLOY_ORTHANC / "autoroute.lua").read_text())
        config.update({"StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
                       "DicomPort": self.dicom_port, "HttpPort": self.http_port,
                       "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
                       "StableAge": stable_age_s, "LuaScripts": [str(lua)], "Plugins": []})
        config["DicomModalities"]["cdss-node"].update({"Host": "127.0.0.1", "Port": node_port})
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.proc = None
