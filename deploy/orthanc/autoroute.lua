-- Orthanc, the demo PACS of deploy/compose.yaml: send every CT series to the CDSS node once
-- it is complete, and every report a radiologist saves in the viewer on a CT study (a mark on
-- the tumor: the node answers again for that tumor).
--
-- Orthanc calls OnStableSeries when a series has received no new instance for "StableAge"
-- seconds (orthanc.json). Routed to the node:
--   CT: every series.
--   SR: a series of structured reports in a study that holds a CT series, unless the node
--       wrote it (its series descriptions begin "CDSS EGFR"; the node also recognises its own
--       reports by their Device Observer UID and ignores them).
-- The node's SEG and result image are never routed back to it.
-- "cdss-node" is the entry in orthanc.json's DicomModalities (AE CDSS_EGFR, host cdss-node,
-- port 11112); the same entry lets the node C-MOVE a series back to itself ([retrieve]).
-- The transfer runs as an Orthanc job in the background; a failure shows under Jobs in
-- Orthanc's web interface and in its log.

local function send(seriesId, what)
  local answer = RestApiPost("/modalities/cdss-node/store",
                             DumpJson({ Resources = { seriesId }, Asynchronous = true }, true))
  print("autoroute: " .. what .. " series " .. seriesId .. " sent to CDSS_EGFR, job "
        .. ParseJson(answer)["ID"])
end

local function studyHoldsCT(seriesId)
  local study = ParseJson(RestApiGet("/series/" .. seriesId .. "/study"))
  for _, id in ipairs(study["Series"]) do
    local series = ParseJson(RestApiGet("/series/" .. id))
    if series["MainDicomTags"]["Modality"] == "CT" then
      return true
    end
  end
  return false
end

local function fromTheNode(tags)
  local description = tags["SeriesDescription"] or ""
  return string.sub(description, 1, 9) == "CDSS EGFR"
end

function OnStableSeries(seriesId, tags, metadata)
  if tags["Modality"] == "CT" then
    send(seriesId, "CT")
  elseif tags["Modality"] == "SR" and not fromTheNode(tags) and studyHoldsCT(seriesId) then
    send(seriesId, "SR (a radiologist's report)")
  end
end
