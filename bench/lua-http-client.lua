-- bench/lua-http-client.lua: the same request as conf/dovecot/mailmfa.lua, sent over the other
-- transport Dovecot's Lua offers (dovecot.http, HTTP/1.1 on loopback TCP), for
-- bench/lua_transport.py only. Not shipped: that bench says why (see README, "Performance").
local url = os.getenv("MAILMFA_BENCH_URL")
local client = nil
-- the client's settings differ: 2.3 takes its own names (request_timeout_msecs, ...), 2.4 the
-- http_client_* settings without the prefix, with units; 2.4's defaults do for a bench
local settings = {request_timeout_msecs = 15000, max_attempts = 1}

function script_init(args)
  if type(args) == "table" then  -- only 2.4 passes lua_settings
    url = args.mailmfa_url or url
    settings = {}
  end
  return 0
end

local function enc(value)
  return (string.gsub(value or "", "[^A-Za-z0-9%._~@%+%-]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

function auth_password_verify(req, pass)
  if client == nil then  -- kept between logins, like the lua-socket connection
    client = dovecot.http.client(settings)
  end
  local service = req.service or req.protocol
  local r = client:request({url = url, method = "POST"})
  r:set_payload("MFA1 AUTH " .. enc(req.user) .. " " .. enc(pass) .. " " .. enc(service) .. " " ..
                enc(req.remote_ip) .. "\n")
  local resp = r:submit()
  if resp:status() ~= 200 then
    return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, "status " .. resp:status()
  end
  if resp:payload() == "OK ok\n" then
    return dovecot.auth.PASSDB_RESULT_OK, {}
  end
  return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, "refused"
end

function auth_passdb_lookup(req)
  return dovecot.auth.PASSDB_RESULT_SCHEME_NOT_AVAILABLE, "no lookup"
end
