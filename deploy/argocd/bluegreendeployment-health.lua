-- Argo CD health of a cutover.dev BlueGreenDeployment (resource.customizations.health.cutover.dev_BlueGreenDeployment).
-- Healthy: all traffic on a fully available live color. Progressing: a release under way, or
-- the controller has not seen the newest spec. Suspended: a release waits (a pause step, a
-- held analysis, spec.paused, a promote). Degraded: aborted, rolled back, or not available.
hs = {}
if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Cutover controller to observe the BlueGreenDeployment"
  return hs
end
local st = obj.status
if obj.metadata ~= nil and obj.metadata.generation ~= nil and
   (st.observedGeneration == nil or st.observedGeneration < obj.metadata.generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Cutover controller to observe generation " .. obj.metadata.generation
  return hs
end
local message = st.message or ""
if st.phase == "Healthy" then
  hs.status = "Healthy"
elseif st.phase == "Paused" then
  hs.status = "Suspended"
elseif st.phase == "Degraded" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = message
return hs
