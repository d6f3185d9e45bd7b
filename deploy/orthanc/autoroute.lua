-- Orthanc, the demo PACS of deploy/compose.yaml: send every CT series to the CDSS node once
-- it is complete.
--
-- Orthanc calls OnStableSeries when a series has received no new instance for "StableAge"
-- seconds (orthanc.json). Only CT is routed: the node's answers (a SEG and an SR series in the
-- same study) come back to Orthanc and must not be sent to the node again.
-- "cdss-node" is the entry in orthanc.json's DicomModalities (AE CDSS_EGFR, host cdss-node,
-- port 11112). The transfer runs as an Orthanc job in the background; a failure shows under
-- Jobs in Orthanc's web interface and in its log.

function OnStableSeries(seriesId, tags, metadata)
  if tags["Modality"] ~= "CT" then
    return
  end
  local answer = RestApiPost("/modalities/cdss-node/store",
                             DumpJson({ Resources = { seriesId }, Asynchronous = true }, true))
  print("autoroute: CT series " .. seriesId .. " sent to CDSS_EGFR, job "
        .. ParseJson(answer)["ID"])
end
