-- mailmfa.lua: Dovecot `passdb lua` that asks mailmfa-authd (no process per login).
--
-- Each login is one request to the daemon over its UNIX socket (Debian's lua-socket),
-- in the MFA1 line protocol (README, "Resident daemon"):
--   MFA1 AUTH <user> <password+code> <service> <remote-ip>\n  ->  OK|FAIL|TEMPFAIL <reason>\n
-- A daemon that is down, slow or answers nonsense gives PASSDB_RESULT_INTERNAL_FAILURE:
-- the client sees a temporary failure and keeps its saved password.
--
-- Settings, most specific first:
--   Dovecot 2.4: passdb lua { lua_settings { mailmfa_socket = ...  mailmfa_timeout = ... } }
--   Dovecot 2.3: import_environment = $import_environment MAILMFA_AUTHD_SOCKET=/run/...
--                (and MAILMFA_AUTHD_TIMEOUT=seconds)
--   default:     /run/mailmfa/authd.sock, 15 s
-- Run it in auth workers (2.3: args = file=... blocking=yes; 2.4: use_worker = yes), and on
-- 2.3 with auth_cache_size = 0 (auth-mailmfa-lua.conf.ext says why):
-- it blocks on the socket, and the workers let several logins wait at once.

local unix = require("socket.unix")

local socket_path = os.getenv("MAILMFA_AUTHD_SOCKET") or "/run/mailmfa/authd.sock"
local timeout = tonumber(os.getenv("MAILMFA_AUTHD_TIMEOUT") or "") or 15
local MAX_ANSWER = 256

-- Dovecot 2.4 passes lua_settings here; 2.3 calls it without arguments.
function script_init(args)
  if type(args) == "table" then
    socket_path = args.mailmfa_socket or socket_path
    timeout = tonumber(args.mailmfa_timeout or "") or timeout
  end
  return 0
end

-- Percent-encode every byte outside A-Z a-z 0-9 . _ ~ @ + - (the daemon's safe set).
local function enc(value)
  return (string.gsub(value or "", "[^A-Za-z0-9%._~@%+%-]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

local RESULT = {
  OK = dovecot.auth.PASSDB_RESULT_OK,
  FAIL = dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH,
  TEMPFAIL = dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE,
}

-- One connection per auth process, kept between logins: no connect, no new daemon thread per
-- login. The daemon drops a connection idle for [daemon] read_timeout; a request that finds
-- the kept connection closed is sent once more on a new one (usually the daemon never read
-- it; if a daemon died after recording the login, the resent one is refused as a replay,
-- never accepted twice). Any other failure is a temporary failure, never a retry.
local conn = nil

local function connect()
  local c, err = unix()
  if not c then
    return nil, "socket: " .. tostring(err)
  end
  c:settimeout(timeout)
  local ok
  ok, err = c:connect(socket_path)
  if not ok then
    c:close()
    return nil, "connect " .. socket_path .. ": " .. tostring(err)
  end
  return c
end

local function exchange(c, line)
  local ok, err = c:send(line)
  if not ok then
    return nil, err
  end
  return c:receive("*l")
end

local function ask(line)
  local reused = conn ~= nil
  local err
  if not conn then
    conn, err = connect()
    if not conn then
      return nil, err
    end
  end
  local answer
  answer, err = exchange(conn, line)
  if not answer and reused and err == "closed" then
    conn:close()
    conn, err = connect()
    if not conn then
      return nil, err
    end
    answer, err = exchange(conn, line)
  end
  if not answer then
    conn:close()
    conn = nil
    return nil, "exchange: " .. tostring(err)
  end
  if #answer > MAX_ANSWER then
    conn:close()
    conn = nil
    return nil, "answer too long"
  end
  return answer
end

function auth_password_verify(req, pass)
  -- 2.4 renamed the %{service} variable to %{protocol}
  local service = req.service or req.protocol
  local line = "MFA1 AUTH " .. enc(req.user) .. " " .. enc(pass) .. " " ..
               enc(service) .. " " .. enc(req.remote_ip) .. "\n"
  local answer, err = ask(line)
  if not answer then
    req:log_error("mailmfa-authd unreachable: " .. err)
    return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, "mailmfa-authd unreachable"
  end
  local verdict, reason = string.match(answer, "^(%u+) ([%w_]+)$")
  local result = verdict and RESULT[verdict]
  if not result then
    req:log_error("mailmfa-authd: unexpected answer")
    return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, "mailmfa-authd: bad answer"
  end
  if result == dovecot.auth.PASSDB_RESULT_OK then
    -- mailmfa-authd logs every login (user, client, reason, time): one line per success is
    -- enough, and a second one costs Dovecot's log process on every login. No extra fields:
    -- an empty table (2.4 refuses a string here, 2.3 takes either).
    return result, {}
  end
  req:log_info("mailmfa result=" .. string.lower(verdict) .. " reason=" .. reason)
  return result, "mailmfa " .. reason
end

-- As a userdb (`userdb lua` with this file): does the user exist, as mailmfa's directory says
-- (MFA1 LOOKUP)? Mail fields (uid, gid, home) come from the userdb block's own settings
-- (2.3: default_fields/override_fields; 2.4: fields { }); this answers only "exists", so LMTP
-- and doveadm refuse names nobody has (a static userdb says yes to every name).
function auth_userdb_lookup(req)
  local answer, err = ask("MFA1 LOOKUP " .. enc(req.user) .. "\n")
  if not answer then
    req:log_error("mailmfa-authd unreachable: " .. err)
    return dovecot.auth.USERDB_RESULT_INTERNAL_FAILURE, "mailmfa-authd unreachable"
  end
  local verdict, reason = string.match(answer, "^(%u+) ([%w_]+)$")
  if verdict == "OK" then
    return dovecot.auth.USERDB_RESULT_OK, {}
  elseif verdict == "FAIL" then
    return dovecot.auth.USERDB_RESULT_USER_UNKNOWN, "no such user"
  elseif verdict == "TEMPFAIL" then
    req:log_error("mailmfa result=tempfail reason=" .. reason)
    return dovecot.auth.USERDB_RESULT_INTERNAL_FAILURE, "mailmfa " .. reason
  end
  req:log_error("mailmfa-authd: unexpected answer")
  return dovecot.auth.USERDB_RESULT_INTERNAL_FAILURE, "mailmfa-authd: bad answer"
end

-- Only auth_password_verify is used for plaintext logins; a credentials lookup
-- (CRAM-MD5, DIGEST-MD5, ...) cannot work with a password+code, so it is refused.
function auth_passdb_lookup(req)
  return dovecot.auth.PASSDB_RESULT_SCHEME_NOT_AVAILABLE, "mailmfa needs a plaintext mechanism"
end
