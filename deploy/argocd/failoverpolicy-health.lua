-- Argo CD health of a cutover.dev FailoverPolicy (resource.customizations.health.cutover.dev_FailoverPolicy).
-- Healthy: traffic on the primary member, which is healthy. Progressing: a failover or a
-- drill under way. Degraded: failed over (the primary is down or was left) or the policy
-- cannot act (no healthy member, data gate closed).
hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Cutover controller to observe the FailoverPolicy"
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
if st.activeMember ~= nil then
  message = "active member " .. st.activeMember .. (message ~= "" and (": " .. message) or "")
end
if st.phase == "Healthy" then
  hs.status = "Healthy"
elseif st.phase == "FailingOver" or st.phase == "Drilling" then
  hs.status = "Progressing"
else
  hs.status = "Degraded"
end
hs.message = message
return hs
