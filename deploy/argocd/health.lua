-- Argo CD health of an AIMA object (group aima.dev); one script serves every kind.
-- It reads what the controllers write (kstatus conventions, as Flux reads them): observedGeneration,
-- and the conditions Ready (the summary), Stalled (gave up until something changes) and Reconciling.
-- Lua 5.1 as Argo CD runs it (gopher-lua); no standard library beyond the base functions.
local hs = {}

local function describe(condition)
  local text = condition.type .. ": " .. (condition.reason or condition.status)
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end

local function find(conditions, wanted)
  for _, condition in ipairs(conditions) do
    if condition.type == wanted then
      return condition
    end
  end
  return nil
end

if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Pending deletion"
  return hs
end

local status = obj.status or {}
local conditions = status.conditions or {}
if #conditions == 0 then
  -- Engines are definitions that nothing reconciles: present means usable.
  if obj.kind == "Engine" then
    hs.status = "Healthy"
    hs.message = "Engine definition"
  else
    hs.status = "Progressing"
    hs.message = "Waiting for " .. obj.kind .. " to report status"
  end
  return hs
end

-- The summary: Ready (a PipelineRun mirrors its Succeeded in it; older runs carry only Succeeded).
local summary = find(conditions, "Ready") or find(conditions, "Succeeded")

-- A summary left over from an older generation says nothing about the current spec.
local generation = obj.metadata.generation
local stale = generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation
if generation ~= nil and summary ~= nil and summary.observedGeneration ~= nil and summary.observedGeneration < generation then
  stale = true
end
if stale then
  hs.status = "Progressing"
  hs.message = "Waiting for " .. obj.kind .. " reconciliation (generation mismatch)"
  return hs
end

local stalled = find(conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

local reconciling = find(conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(reconciling)
  return hs
end

if summary == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for " .. obj.kind .. " to report Ready"
elseif summary.status == "True" then
  hs.status = "Healthy"
  hs.message = summary.message or ""
elseif summary.type == "Succeeded" and summary.status == "False" then
  -- A finished run that failed (or was cancelled) stays so: nothing more will happen.
  hs.status = "Degraded"
  hs.message = describe(summary)
elseif obj.kind == "NodeDevices" and summary.status == "False" then
  -- The device agent reports what it finds (no NVML, an unhealthy GPU); nothing reconciles it.
  hs.status = "Degraded"
  hs.message = describe(summary)
elseif summary.reason == "Suspended" or summary.reason == "ScaledToZero" then
  hs.status = "Suspended"
  hs.message = describe(summary)
else
  hs.status = "Progressing"
  hs.message = describe(summary)
end
return hs
