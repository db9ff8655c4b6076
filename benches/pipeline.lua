-- wrk script for HTTP pipelining: every write carries DEPTH requests for "/"
-- back to back (DEPTH is the script's first argument, 16 if absent), and wrk
-- counts each response. Used by benches/http_ab.sh when DEPTH > 1:
--   wrk -t1 -c100 -d5s -s benches/pipeline.lua http://127.0.0.1:8080/ -- 16
init = function(args)
  local depth = tonumber(args[1]) or 16
  local batch = {}
  for i = 1, depth do
    batch[i] = wrk.format(nil, "/")
  end
  pipelined = table.concat(batch)
end

request = function()
  return pipelined
end
