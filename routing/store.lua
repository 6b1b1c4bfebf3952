-- Routing's one Lua script: every state change of agents, calls and timers, atomically.
--
-- Prefixed at load time with the key functions `K.<name>(...)`, `MAX_LEVEL`, `DEFAULTS`,
-- `SEQ_WIDTH` and `DEFAULT_EVENTS_MAX` generated in Python (routing/keys.py, routing/store.py),
-- and followed by the entry point: `return invoke(ARGV)` for EVALSHA (Redis 6.2), or the
-- registration of `invoke` as a FUNCTION (Redis 7+). Arguments: 1 key (the seq key, for Cluster
-- slot routing), then <prefix> <command> <now> <command arguments...>.
--
-- Invariant kept by every command: after it, no waiting call has an eligible available agent.
-- A command frees at most one call or one agent at a time and then matches just that one, so
-- matching never needs a global pass. Validation happens before the first write: Redis does not
-- roll a script back when it fails half-way.

-- Per-invocation state, set by invoke(). Everything else is defined once: with Redis 7 the file
-- is a FUNCTION library, loaded once per server, so these helpers are not rebuilt on each call.
local ARGS -- the arguments: prefix, command, now, command arguments
local NOW_S, NOW -- the time, as passed and as a number
local OFFERS -- flat {call id, agent id, ...}: the reservations this invocation made
local EVENTS_MAX -- the tenant's bound on the event stream, read by the first emit
local CFG -- skill -> queue settings read by this invocation
local SKILLS -- agent -> skills read by this invocation (cleared where they change)
local SCAN_CHUNK = 20
local SCAN_LIMIT = 200 -- entries examined per bucket when calls carry extra skill requirements
local HANDLE_SAMPLES = 50 -- recent handle times kept per skill for the estimated wait

local function fail(id, detail)
    error({ routing_error = id .. ' ' .. (detail or '') })
end

local function hgetall(key)
    local raw = redis.call('HGETALL', key)
    if #raw == 0 then
        return nil
    end
    local t = {}
    for i = 1, #raw, 2 do
        t[raw[i]] = raw[i + 1]
    end
    return t
end

-- Just the named fields of a hash (absent ones nil): the hot paths need a few fields, and a
-- short HMGET costs a fraction of an HGETALL (or of call_get's fifteen fields).
local function hmget(key, ...)
    local names = { ... }
    local v = redis.call('HMGET', key, ...)
    local t = {}
    for i = 1, #names do
        if v[i] then
            t[names[i]] = v[i]
        end
    end
    return t
end

local function next_seq()
    return redis.call('INCR', K.seq())
end

-- The stream keeps about the latest EVENTS_MAX entries (the node's `events_max`, given with the
-- command; else the tenant setting, read once per invocation; 0: unbounded). "~" lets Redis trim whole stream nodes only, which is
-- cheap; consumers that need every event (statistics) read it well before it is trimmed.
local function events_max()
    if not EVENTS_MAX then
        EVENTS_MAX = tonumber(redis.call('HGET', K.settings(), 'events_max')) or
            DEFAULT_EVENTS_MAX
    end
    return EVENTS_MAX
end

local function emit(kind, ...)
    if events_max() > 0 then
        redis.call('XADD', K.events(), 'MAXLEN', '~', EVENTS_MAX, '*', 'type', kind, 't', NOW_S,
            ...)
    else
        redis.call('XADD', K.events(), '*', 'type', kind, 't', NOW_S, ...)
    end
end

local function timer_set(kind, id, due)
    redis.call('ZADD', K.timers(), due, kind .. '|' .. id)
end

local function timer_clear(kind, id)
    redis.call('ZREM', K.timers(), kind .. '|' .. id)
end

-- Every timer a call can have (reservation, max wait, callback expiry, escalation, overflow,
-- a callback's retry), in one ZREM.
local function call_timers_clear(id)
    redis.call('ZREM', K.timers(), 'rona|' .. id, 'maxwait|' .. id, 'cbexp|' .. id,
        'esc|' .. id, 'ovf|' .. id, 'cbretry|' .. id)
end

-- The same for a call of `kind`: only a callback has an expiry and a retry.
local function timers_clear_of(id, kind)
    if kind == 'callback' then
        call_timers_clear(id)
        return
    end
    redis.call('ZREM', K.timers(), 'rona|' .. id, 'maxwait|' .. id, 'esc|' .. id, 'ovf|' .. id)
end

local function inbox(node, message)
    if node ~= nil and node ~= '' then
        redis.call('RPUSH', K.inbox(node), cjson.encode(message))
    end
end

-- The call fields scripts use (not the screen-pop context, which may be large).
local CALL_FIELDS = { 'kind', 'rid', 'skill', 'min', 'req', 'prio', 'node', 'enq', 'score',
    'member', 'state', 'agent', 'overdue', 'offered_at', 'connected_at' }

local function call_get(id)
    local v = redis.call('HMGET', K.call(id), unpack(CALL_FIELDS))
    if not v[11] then
        return nil
    end
    local c = {}
    for i, f in ipairs(CALL_FIELDS) do
        c[f] = v[i]
    end
    return c
end

-- ---------------------------------------------------------------- queue settings

local NUMERIC = { reservation_timeout = true, wrap_up_seconds = true, max_wait = true,
    max_length = true, aging_seconds_per_priority = true, callback_window = true,
    default_handle_seconds = true, escalate_after = true, escalate_min_level = true,
    overflow_after = true, callback_attempts = true, callback_retry_seconds = true }

-- A queue's settings. Each is read when first used and kept for the invocation: a command uses
-- one to five of them, and reading and converting all of them cost more than the rest of a
-- short command.
local function qcfg(skill)
    local c = CFG[skill]
    if c then
        return c
    end
    local key = K.queue_config(skill)
    c = setmetatable({}, { __index = function(t, name)
        local v = redis.call('HGET', key, name)
        if not v then
            v = DEFAULTS[name]
        end
        if NUMERIC[name] then
            v = tonumber(v)
        end
        rawset(t, name, v)
        return v
    end })
    CFG[skill] = c
    return c
end

-- ---------------------------------------------------------------- agents

local function agent_skills(a)
    local t = SKILLS[a]
    if t then
        return t
    end
    local raw = redis.call('HGETALL', K.agent_skills(a))
    t = {}
    for i = 1, #raw, 2 do
        t[raw[i]] = tonumber(raw[i + 1])
    end
    SKILLS[a] = t
    return t
end

-- The score an available agent has in a skill's bucket: lower is chosen first.
local function avail_score(ag, strategy)
    local idle = tonumber(ag.idle_seq)
    if strategy == 'round_robin' then
        return tonumber(ag.offer_seq)
    elseif strategy == 'fewest_calls' then
        return tonumber(ag.calls) * 1e9 + idle % 1e9
    elseif strategy == 'least_talk_time' then
        return math.floor(tonumber(ag.talk)) * 1e9 + idle % 1e9
    end
    return idle -- longest_idle, skill_level_first (the level is the bucket)
end

local function avail_add(a, ag)
    for s, l in pairs(agent_skills(a)) do
        redis.call('ZADD', K.available(s, l), avail_score(ag, qcfg(s).strategy), a)
    end
end

local function avail_remove(a)
    for s, l in pairs(agent_skills(a)) do
        redis.call('ZREM', K.available(s, l), a)
    end
end

local function agent_or_fail(a)
    local ag = hgetall(K.agent(a))
    if not ag then
        fail('no-such-agent', a)
    end
    return ag
end

-- A call's extra requirements (skills beyond its queue), as JSON; '' when none.
local function satisfies(req, skills)
    if req == nil or req == '' or req == false then
        return true
    end
    for s, m in pairs(cjson.decode(req)) do
        if (skills[s] or 0) < m then
            return false
        end
    end
    return true
end

-- ---------------------------------------------------------------- last agent
--
-- A caller who talked to an agent is remembered (caller number -> agent) until a time kept in a
-- zset, compared with NOW (time is an argument, so no Redis TTL) and swept by tick. A returning
-- caller is offered to that agent at once when available, else held for them a few seconds: the
-- call waits at its own place in line, marked '+' so that matching reads its hold (as for extra
-- skill requirements), and the agent's `held` set lets them find it first when free. The hold
-- ends at the first offer of the call or by its timer; `held` entries of calls that ended
-- otherwise are dropped when next read, not by every command that ends a call.

local function hold_clear(id, a)
    redis.call('HSET', K.call(id), 'pref', '', 'pref_until', '')
    redis.call('SREM', K.held(a), id)
    timer_clear('pref', id)
end

-- The call held for `a` with the best place in line that `a` can take, if any.
local function held_for(a)
    local ids = redis.call('SMEMBERS', K.held(a))
    if #ids == 0 then
        return nil
    end
    local skills = agent_skills(a)
    local best, best_score, best_member
    for _, id in ipairs(ids) do
        local v = redis.call('HMGET', K.call(id), 'pref', 'state', 'skill', 'min', 'req', 'score',
            'member')
        if v[1] ~= a or v[2] ~= 'waiting' then
            redis.call('SREM', K.held(a), id)
        elseif (skills[v[3]] or 0) >= tonumber(v[4]) and satisfies(v[5], skills) then
            local sc = tonumber(v[6])
            if best == nil or sc < best_score or (sc == best_score and v[7] < best_member) then
                best, best_score, best_member = id, sc, v[7]
            end
        end
    end
    return best
end

-- The agent a caller entering queue `c.skill` talked to last, if remembered, logged in and able
-- to take the call; and that agent's state.
local function last_agent_of(c, caller, cfg)
    if caller == '' or tonumber(cfg.last_agent_hours) <= 0 then
        return nil
    end
    local until_t = redis.call('ZSCORE', K.last_agent_until(), caller)
    if not until_t or tonumber(until_t) < NOW then
        return nil
    end
    local a = redis.call('HGET', K.last_agent(), caller)
    local state = a and redis.call('HGET', K.agent(a), 'state')
    if not state or state == 'logged_out' then
        return nil
    end
    local skills = agent_skills(a)
    if (skills[c.skill] or 0) < tonumber(c.min) or not satisfies(c.req, skills) then
        return nil
    end
    return a, state
end

-- At CONNECT: remember who took the caller, per the queue's setting.
-- `c.caller`: the call's caller number field, as read.
local function remember_agent(id, c, a)
    local caller = c.caller
    if c.kind ~= 'call' or not caller or caller == '' then
        return
    end
    local hours = tonumber(qcfg(c.skill).last_agent_hours)
    if hours <= 0 then
        return
    end
    redis.call('HSET', K.last_agent(), caller, a)
    redis.call('ZADD', K.last_agent_until(), NOW + hours * 3600, caller)
end

local function forget_expired(batch)
    local old = redis.call('ZRANGEBYSCORE', K.last_agent_until(), '-inf', '(' .. NOW_S,
        'LIMIT', 0, batch)
    if #old > 0 then
        redis.call('HDEL', K.last_agent(), unpack(old))
        redis.call('ZREM', K.last_agent_until(), unpack(old))
    end
end

-- ---------------------------------------------------------------- waiting-call buckets
--
-- A skill's waiting calls are in one bucket per minimum level (K.queue(skill, level)). Reading
-- every bucket (MAX_LEVEL of them) for each match and each position cost one redis.call each,
-- most of them on empty buckets. K.queue_levels(skill) is a string whose byte at offset <level>
-- is '1' when that bucket may hold calls: one MGET tells a match (all the agent's skills at
-- once), one GET a position, which buckets to read. A level's byte is set with every call put in
-- its bucket (one SETRANGE) and cleared when a match finds the bucket empty: it may name an
-- empty bucket, never miss a full one. The key exists from the skill's first call on, so its
-- absence means data written before it existed (the buckets are then looked at once). A hash or
-- a set was measured first: a hash of every skill's levels is a listpack that HMGET scans
-- linearly for each field asked, a set per skill needs one SMEMBERS per skill and a sort.

local ONE = 49 -- string.byte('1'): the library's top level may not use globals (Redis 7)

local function bucket_add(skill, level, score, member)
    redis.call('ZADD', K.queue(skill, level), score, member)
    redis.call('SETRANGE', K.queue_levels(skill), LEVEL_NAMES[tonumber(level)], '1')
end

-- The levels (ascending, up to `top`) whose bucket may hold waiting calls of `skill`, given the
-- skill's levels string as read (nil or false: absent).
local function levels_in(skill, bits, top)
    local levels = {}
    if not bits then -- written before the key existed: look at every bucket once
        local t = { '0' }
        for l = 1, MAX_LEVEL do
            t[l + 1] = '0'
            if redis.call('EXISTS', K.queue(skill, l)) == 1 then
                t[l + 1] = '1'
                if l <= top then
                    levels[#levels + 1] = l
                end
            end
        end
        redis.call('SET', K.queue_levels(skill), table.concat(t))
        return levels
    end
    for l = 1, top do
        if string.byte(bits, l + 1) == ONE then
            levels[#levels + 1] = l
        end
    end
    return levels
end

-- For each skill of `wanted` (skill -> the highest level of interest), its levels (levels_in).
local function used_levels(wanted)
    local skills, keys = {}, {}
    for s, _ in pairs(wanted) do
        skills[#skills + 1] = s
        keys[#keys + 1] = K.queue_levels(s)
    end
    local v = redis.call('MGET', unpack(keys))
    local out = {}
    for i, s in ipairs(skills) do
        out[s] = levels_in(s, v[i], wanted[s])
    end
    return out
end

local function queue_levels(skill)
    return levels_in(skill, redis.call('GET', K.queue_levels(skill)), MAX_LEVEL)
end

-- ---------------------------------------------------------------- matching

local function first_agent(key, req)
    if req == '' then
        -- string bounds: Redis 6.2 formats every number argument with "%.17g"
        local r = redis.call('ZRANGE', key, '0', '0', 'WITHSCORES')
        if #r == 0 then
            return nil
        end
        return r[1], tonumber(r[2])
    end
    local start = 0
    while start < SCAN_LIMIT do
        local r = redis.call('ZRANGE', key, start, start + SCAN_CHUNK - 1, 'WITHSCORES')
        if #r == 0 then
            return nil
        end
        for i = 1, #r, 2 do
            if satisfies(req, agent_skills(r[i])) then
                return r[i], tonumber(r[i + 1])
            end
        end
        start = start + SCAN_CHUNK
    end
    return nil
end

-- A queue member is "<arrival number><mark><call id>"; the mark is '+' when the call has extra
-- skill requirements, '|' when not, so the usual case needs no read of the call.
local function member_of(seq, req, id)
    local mark = '|'
    if req ~= '' then
        mark = '+'
    end
    return seq .. mark .. id
end

local function call_fits(member, skills, a)
    local id = string.sub(member, SEQ_WIDTH + 2)
    if string.byte(member, SEQ_WIDTH + 1) == 124 then -- '|': no extra requirements
        return id
    end
    local v = redis.call('HMGET', K.call(id), 'req', 'pref')
    if v[2] and v[2] ~= '' and v[2] ~= a then -- held for the caller's last agent
        return nil
    end
    if satisfies(v[1], skills) then
        return id
    end
    return nil
end

-- The first call of a bucket the agent can take: member, place, id; (nil, nil, nil, true) when
-- the bucket is empty.
local function first_call(key, skills, a)
    local head = redis.call('ZRANGE', key, '0', '0', 'WITHSCORES')
    if #head == 0 then
        return nil, nil, nil, true
    end
    local id = call_fits(head[1], skills, a)
    if id then
        return head[1], tonumber(head[2]), id
    end
    local start = 1
    while start < SCAN_LIMIT do
        local r = redis.call('ZRANGE', key, start, start + SCAN_CHUNK - 1, 'WITHSCORES')
        if #r == 0 then
            return nil
        end
        for i = 1, #r, 2 do
            id = call_fits(r[i], skills, a)
            if id then
                return r[i], tonumber(r[i + 1]), id
            end
        end
        start = start + SCAN_CHUNK
    end
    return nil
end

-- ---------------------------------------------------------------- ring-all offers
--
-- A call of a ring-all queue is offered to every eligible available agent at once. Each agent
-- rung is reserved for it (state 'reserved', 'call' the call) with its own reservation timer
-- ('ringto|<agent>'), so an agent who joins late gets the full time to answer. While it rings,
-- the call is 'offered' with an empty 'agent'; K.ring(call) holds the agents rung and
-- K.ringing(skill) the skill's ringing calls by place, where an agent becoming available looks
-- for a ring to join. Events about a ring carry 'ring' '1'. An accept or a hang-up frees every
-- agent still ringing at once; they are matched one after the other (ring_cancel), so matching
-- stays a matter of one agent at a time.

local function ringing(c)
    return c.state == 'offered' and c.agent == ''
end

local function ring_add(id, c, a)
    avail_remove(a)
    redis.call('HSET', K.agent(a), 'state', 'reserved', 'reason', '', 'since', NOW_S, 'call', id,
        'offer_seq', next_seq())
    redis.call('SADD', K.ring(id), a)
    timer_set('ringto', a, NOW + qcfg(c.skill).reservation_timeout)
    emit('OFFER', 'call', id, 'agent', a, 'skill', c.skill, 'cstate', 'offered',
        'astate', 'reserved', 'reason', '', 'wait', tostring(NOW - tonumber(c.enq)), 'ringall', '1')
    OFFERS[#OFFERS + 1] = id
    OFFERS[#OFFERS + 1] = a
end

local function ring_start(id, c, agents)
    if not c.unlisted then
        redis.call('ZREM', K.queue(c.skill, c.min), c.member)
    end
    redis.call('ZADD', K.ringing(c.skill), c.score, c.member)
    redis.call('HSET', K.call(id), 'state', 'offered', 'agent', '', 'offered_at', NOW_S)
    for _, a in ipairs(agents) do
        ring_add(id, c, a)
    end
end

-- Ring every eligible available agent (longest idle first, for the order of the offers).
local function ring_call(id, c)
    local agents, score = {}, {}
    for l = tonumber(c.min), MAX_LEVEL do
        local r = redis.call('ZRANGE', K.available(c.skill, l), 0, -1, 'WITHSCORES')
        for i = 1, #r, 2 do
            if satisfies(c.req, agent_skills(r[i])) then
                agents[#agents + 1] = r[i]
                score[r[i]] = tonumber(r[i + 1])
            end
        end
    end
    if #agents == 0 then
        return nil
    end
    table.sort(agents, function(x, y)
        if score[x] ~= score[y] then
            return score[x] < score[y]
        end
        return x < y
    end)
    ring_start(id, c, agents)
    return agents[1]
end

-- The first ringing call of a ring-all queue an available agent could join, if it is ahead of
-- the best waiting call the agent could take (best_score, best_member; nil: none).
local function ring_to_join(skills, best_score, best_member)
    local found, found_score, found_member
    for s, l in pairs(skills) do
        if qcfg(s).strategy == 'ring_all' then
            local r = redis.call('ZRANGE', K.ringing(s), 0, SCAN_LIMIT - 1, 'WITHSCORES')
            for i = 1, #r, 2 do
                local id = string.sub(r[i], SEQ_WIDTH + 2)
                local need = redis.call('HMGET', K.call(id), 'min', 'req')
                if need[1] and tonumber(need[1]) <= l and satisfies(need[2], skills) then
                    local sc = tonumber(r[i + 1])
                    if found == nil or sc < found_score
                            or (sc == found_score and r[i] < found_member) then
                        found, found_score, found_member = id, sc, r[i]
                    end
                    break
                end
            end
        end
    end
    if found and (best_score == nil or found_score < best_score
            or (found_score == best_score and found_member < best_member)) then
        return found
    end
    return nil
end

-- Offer the call to this one agent, whatever the queue's strategy (also a ring-all queue's
-- call offered to the caller's last agent: that offer is theirs alone, and only when it ends
-- without an accept does the call ring everyone).
-- `listed` false: the agent, just made available, was not put in the available sets.
local function reserve_one(id, c, a, listed)
    local cfg = qcfg(c.skill)
    if not c.unlisted then
        redis.call('ZREM', K.queue(c.skill, c.min), c.member)
    end
    if listed ~= false then
        avail_remove(a)
    end
    redis.call('HSET', K.agent(a), 'state', 'reserved', 'reason', '', 'since', NOW_S, 'call', id,
        'offer_seq', next_seq())
    redis.call('HSET', K.call(id), 'state', 'offered', 'agent', a, 'offered_at', NOW_S)
    timer_set('rona', id, NOW + cfg.reservation_timeout)
    emit('OFFER', 'call', id, 'agent', a, 'skill', c.skill, 'cstate', 'offered',
        'astate', 'reserved', 'reason', '', 'wait', tostring(NOW - tonumber(c.enq)))
    OFFERS[#OFFERS + 1] = id
    OFFERS[#OFFERS + 1] = a
end

local function reserve(id, c, a, listed)
    if qcfg(c.skill).strategy == 'ring_all' then
        -- an agent that became available: no other available agent is eligible for the call,
        -- but later ones may join this ring
        ring_start(id, c, { a })
        return
    end
    reserve_one(id, c, a, listed)
end

-- Offer a waiting call to the best eligible available agent, per its queue's strategy.
-- `c`: the call's fields, when the caller has them (it has just put the call in line).
local function match_call(id, c)
    c = c or call_get(id)
    if not c or c.state ~= 'waiting' then
        return nil
    end
    if qcfg(c.skill).strategy == 'ring_all' then
        return ring_call(id, c)
    end
    local min = tonumber(c.min)
    local best, best_score
    if qcfg(c.skill).strategy == 'skill_level_first' then
        for l = MAX_LEVEL, min, -1 do
            best, best_score = first_agent(K.available(c.skill, l), c.req)
            if best then
                break
            end
        end
    else
        for l = min, MAX_LEVEL do
            local a, sc = first_agent(K.available(c.skill, l), c.req)
            if a and (best == nil or sc < best_score or (sc == best_score and a < best)) then
                best, best_score = a, sc
            end
        end
    end
    if best then
        reserve(id, c, best)
    end
    return best
end

-- Offer the best waiting call (lowest place in line) an available agent is eligible for.
-- `listed` false: the agent was just made available and is not in the available sets (yet).
local function match_agent(a, listed)
    if listed ~= false and redis.call('HGET', K.agent(a), 'state') ~= 'available' then
        return nil
    end
    local held = held_for(a) -- a returning caller held for this agent goes first
    if held then
        hold_clear(held, a)
        reserve_one(held, call_get(held), a, listed)
        return held
    end
    local skills = agent_skills(a)
    local best_id, best_score, best_member, best_skill, best_min
    local used = used_levels(skills)
    for s, _ in pairs(skills) do
        for _, m in ipairs(used[s]) do
            local member, sc, id, empty = first_call(K.queue(s, m), skills, a)
            if empty then
                redis.call('SETRANGE', K.queue_levels(s), LEVEL_NAMES[m], '0')
            elseif member and (best_id == nil or sc < best_score
                    or (sc == best_score and member < best_member)) then
                best_id, best_score, best_member, best_skill, best_min = id, sc, member, s, m
            end
        end
    end
    local join = ring_to_join(skills, best_score, best_member)
    if join then
        ring_add(join, call_get(join), a)
        return join
    end
    if best_id then
        -- The bucket gives the call's queue, level, member and place: only its arrival time is
        -- read.
        local c = { skill = best_skill, min = best_min, member = best_member, score = best_score,
            enq = redis.call('HGET', K.call(best_id), 'enq') }
        reserve(best_id, c, a, listed)
    end
    return best_id
end

-- ---------------------------------------------------------------- calls

local function waiting_count(skill)
    local n = 0
    for _, l in ipairs(queue_levels(skill)) do
        n = n + redis.call('ZCARD', K.queue(skill, l))
    end
    return n
end

-- `newest`: the call has just been given the tenant's latest arrival number, so every call with
-- an equal score is ahead of it and one ZCOUNT per bucket suffices.
local function position_of(c, newest)
    local levels = queue_levels(c.skill)
    if newest then
        local pos = 0
        for _, l in ipairs(levels) do
            pos = pos + redis.call('ZCOUNT', K.queue(c.skill, l), '-inf', c.score)
        end
        return pos
    end
    local pos = 1
    for _, l in ipairs(levels) do
        local key = K.queue(c.skill, l)
        pos = pos + redis.call('ZCOUNT', key, '-inf', '(' .. c.score)
        for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, c.score, c.score)) do
            if m < c.member then
                pos = pos + 1
            end
        end
    end
    return pos
end

-- The sum of a skill's recent handle times. It is kept next to the list, so an estimated wait
-- (every enqueue and position update) needs no pass over the samples; without it (data written
-- before it existed) it is the sum of the list.
local function handle_sum(skill)
    local sum = redis.call('GET', K.handle_total(skill))
    if sum then
        return tonumber(sum)
    end
    sum = 0
    for _, v in ipairs(redis.call('LRANGE', K.handle_times(skill), '0', '-1')) do
        sum = sum + tonumber(v)
    end
    return sum
end

-- Estimated wait: position x average recent handle time / agents logged in with the skill.
local function estimated_wait(skill, pos)
    local staffed = redis.call('SCARD', K.staffed(skill))
    if staffed == 0 then
        return -1
    end
    local aht
    local samples = redis.call('LLEN', K.handle_times(skill))
    if samples > 0 then
        aht = handle_sum(skill) / samples
    else
        aht = qcfg(skill).default_handle_seconds
    end
    return math.ceil(pos * aht / staffed)
end

-- `c.unlisted`: the call is not put in its bucket yet (an enqueue offers it first if it can, and
-- lists it only if that fails: an offer then needs no ZADD, SADD and ZREM).
local function insert(id, c)
    redis.call('HSET', K.call(id), 'kind', c.kind, 'rid', c.rid, 'skill', c.skill, 'min', c.min,
        'req', c.req, 'prio', c.prio, 'ctx', c.ctx, 'node', c.node, 'enq', c.enq,
        'score', c.score, 'member', c.member, 'state', 'waiting', 'agent', '',
        'number', c.number, 'overdue', '', 'offered_at', '', 'connected_at', '',
        'origin', c.origin or c.skill, 'esc', c.esc or '', 'due', '', unpack(c.extra or {}))
    c.state = 'waiting'
    redis.call('SADD', K.calls(), id)
    redis.call('SADD', K.queues(), c.skill)
    if not c.unlisted then
        bucket_add(c.skill, c.min, c.score, c.member)
    end
end

local function end_call(id, c)
    redis.call('DEL', K.call(id))
    redis.call('SREM', K.calls(), id)
    -- A connected call is in no queue and has no timers left: accept cleared them.
    if c.state ~= 'connected' then
        redis.call('ZREM', K.queue(c.skill, c.min), c.member)
        call_timers_clear(id)
    end
end

-- An offered call goes back to its original place (same score, same member).
local function requeue(id, c)
    bucket_add(c.skill, c.min, c.score, c.member)
    redis.call('HSET', K.call(id), 'state', 'waiting', 'agent', '', 'offered_at', '')
    timer_clear('rona', id)
end

-- Routing gives up on a waiting call: max wait (a caller) or expiry (a callback).
local function exit_call(id, c, reason)
    end_call(id, c)
    local kind = 'EXITWITHTIMEOUT'
    if c.kind == 'callback' then
        kind = 'CALLBACK_EXPIRED'
    end
    emit(kind, 'call', id, 'skill', c.skill, 'cstate', 'ended', 'reason', reason,
        'wait', tostring(NOW - tonumber(c.enq)))
    if c.kind == 'call' then
        inbox(c.node, { kind = 'exited', call = id, rid = c.rid, reason = reason })
    end
end

-- ---------------------------------------------------------------- escalation and overflow
--
-- Both are timers counted from the enqueue ('esc|<call>', 'ovf|<call>'), armed when the call
-- enters the queue. A timer re-reads the queue's settings when it fires, so a setting turned off
-- or lengthened meanwhile is honoured. A call being offered is not moved under the agent's feet:
-- the move is noted in 'due' and made if the offer ends without an accept (after_return).
-- The call fields 'origin' (the queue it entered) and 'esc' ('1': requirements relaxed) are read
-- here only, so they are not among CALL_FIELDS.

local function moved_fields(id, c)
    local v = redis.call('HMGET', K.call(id), 'origin', 'esc', 'due')
    return v[1] or c.skill, v[2] or '', v[3] or ''
end

-- The escalation and overflow timers of a call, due counted from its enqueue (one already past
-- fires at the next tick).
local function moves_timers(id, c, origin, esc)
    if origin ~= c.skill then
        return -- overflowed already: a call overflows once, and arrives fully relaxed
    end
    local cfg = qcfg(c.skill)
    local enq = tonumber(c.enq)
    if cfg.escalate_after > 0 and esc ~= '1'
            and (tonumber(c.min) > cfg.escalate_min_level or c.req ~= '') then
        timer_set('esc', id, enq + cfg.escalate_after)
    end
    if cfg.overflow_after > 0 and cfg.overflow_queue ~= '' then
        timer_set('ovf', id, enq + cfg.overflow_after)
    end
end

-- Arm the timers of a call that just entered its queue (c.origin, c.esc: a callback taking a
-- place a caller left keeps that caller's escalation or overflow).
-- insert() wrote the fields 'origin', 'esc' and 'due' with the call.
local function moves_arm(id, c)
    moves_timers(id, c, c.origin or c.skill, c.esc or '')
end

-- The queue setting of a move may have changed since its timer was armed: true when the move
-- is due now; re-arms the timer when it is due later.
local function move_due_now(kind, id, c, after)
    if after <= 0 then
        return false
    end
    local due = tonumber(c.enq) + after
    if due > NOW then
        timer_set(kind, id, due)
        return false
    end
    return true
end

-- Escalate a waiting call: lower minimum level, no extra requirements, same place. Returns
-- true when the requirements changed.
local function escalate(id, c)
    local origin, esc = moved_fields(id, c)
    if origin ~= c.skill or esc == '1' then
        return false
    end
    local cfg = qcfg(c.skill)
    if not move_due_now('esc', id, c, cfg.escalate_after) then
        return false
    end
    local min = math.min(tonumber(c.min), cfg.escalate_min_level)
    if min == tonumber(c.min) and c.req == '' then
        return false
    end
    local member = member_of(string.sub(c.member, 1, SEQ_WIDTH), '', id)
    redis.call('ZREM', K.queue(c.skill, c.min), c.member)
    bucket_add(c.skill, min, c.score, member)
    redis.call('HSET', K.call(id), 'min', min, 'req', '', 'member', member, 'esc', '1')
    emit('ESCALATE', 'call', id, 'skill', c.skill, 'min', tostring(min), 'from_min', c.min,
        'req', '', 'wait', tostring(NOW - tonumber(c.enq)))
    return true
end

-- Move a waiting call to its queue's overflow queue: level 1, no extra requirements, its place
-- there from its enqueue time and priority (the overflow queue's aging), same arrival number.
-- A full overflow queue refuses it: the call stays where it waits (one attempt).
local function overflow(id, c)
    local origin = moved_fields(id, c)
    if origin ~= c.skill then
        return false
    end
    local cfg = qcfg(c.skill)
    local to = cfg.overflow_queue
    if to == '' or to == c.skill or not move_due_now('ovf', id, c, cfg.overflow_after) then
        return false
    end
    local wait = tostring(NOW - tonumber(c.enq))
    local target = qcfg(to)
    if target.max_length > 0 and waiting_count(to) >= target.max_length then
        emit('OVERFLOW_FULL', 'call', id, 'skill', c.skill, 'from', c.skill, 'to', to,
            'reason', 'queue_full', 'wait', wait)
        return false
    end
    local seq = string.sub(c.member, 1, SEQ_WIDTH)
    local member = member_of(seq, '', id)
    redis.call('ZREM', K.queue(c.skill, c.min), c.member)
    timer_clear('esc', id)
    redis.call('HSET', K.call(id), 'skill', to, 'min', 1, 'req', '', 'member', member, 'esc', '1',
        'score', tonumber(c.enq) - tonumber(c.prio) * target.aging_seconds_per_priority)
    local score = redis.call('HGET', K.call(id), 'score') -- the exact stored form
    bucket_add(to, 1, score, member)
    redis.call('SADD', K.queues(), to)
    emit('OVERFLOW', 'call', id, 'skill', to, 'from', c.skill, 'to', to, 'min', '1', 'req', '',
        'score', score, 'seq', tostring(tonumber(seq)), 'wait', wait)
    return true
end

-- An 'esc' or 'ovf' timer fired: move a waiting call and offer it if an agent now fits; note
-- the move on an offered call for when the offer ends.
local function move_timer(kind, id)
    local c = call_get(id)
    if not c then
        return
    elseif c.state == 'offered' then
        local _, _, due = moved_fields(id, c)
        redis.call('HSET', K.call(id), 'due', due .. kind .. ' ')
        return
    elseif c.state ~= 'waiting' then
        return
    end
    local moved
    if kind == 'ovf' then
        moved = overflow(id, c)
    else
        moved = escalate(id, c)
    end
    if moved then
        match_call(id)
    end
end

-- Make the moves that came due while the call was offered (escalation first: an overflow that
-- is refused still leaves the call escalated).
local function apply_due(id)
    local c = call_get(id)
    if not c or c.state ~= 'waiting' then
        return
    end
    local _, _, due = moved_fields(id, c)
    if due == '' then
        return
    end
    redis.call('HSET', K.call(id), 'due', '')
    if string.find(due, 'esc', 1, true) then
        escalate(id, c)
        c = call_get(id)
    end
    if string.find(due, 'ovf', 1, true) then
        overflow(id, c)
    end
end

-- After a call went back in line: leave if its time ran out meanwhile, else offer it again.
local function after_return(id)
    local c = call_get(id)
    if c and c.overdue ~= '' then
        exit_call(id, c, c.overdue)
    else
        apply_due(id)
        match_call(id)
    end
end

-- The hold for the caller's last agent is over: the call competes from its place in line.
local function hold_expired(id)
    local v = redis.call('HMGET', K.call(id), 'pref', 'pref_until', 'skill')
    if not v[1] or v[1] == '' or tonumber(v[2]) > NOW then
        return -- offered meanwhile (the hold ended then), or gone
    end
    hold_clear(id, v[1])
    emit('PREF_EXPIRED', 'call', id, 'skill', v[3], 'pref', v[1])
    match_call(id)
end

-- ---------------------------------------------------------------- agent transitions

-- A finished call's handle time (talk + wrap-up), kept for estimated waits.
local function record_handle_time(skill, seconds)
    local key = K.handle_times(skill)
    local sample = tostring(seconds)
    local sum = handle_sum(skill) + tonumber(sample) -- the sample as the list holds it
    if redis.call('LPUSH', key, sample) > HANDLE_SAMPLES then
        sum = sum - tonumber(redis.call('RPOP', key))
    end
    redis.call('SET', K.handle_total(skill), sum)
end

-- Record the finished call's handle time (talk + wrap-up) for estimated waits.
local function end_wrap(a, ag)
    if ag.handle_start ~= nil and ag.handle_start ~= '' and ag.last_skill ~= '' then
        record_handle_time(ag.last_skill, NOW - tonumber(ag.handle_start))
    end
    redis.call('HSET', K.agent(a), 'handle_start', '', 'wrap_until', '')
    timer_clear('wrap', a)
end

local function become_available(a, ag, event, cause)
    local idle = next_seq()
    redis.call('HSET', K.agent(a), 'state', 'available', 'reason', '', 'since', NOW_S,
        'idle_seq', idle, 'call', '')
    ag.idle_seq = idle
    emit(event, 'agent', a, 'astate', 'available', 'reason', '', 'cause', cause)
    -- Offered a call at once, the agent never enters the available sets (saves a ZADD and a
    -- ZREM per skill).
    if not match_agent(a, false) then
        avail_add(a, ag)
    end
end

-- The caller left an offered call: the agent, who did nothing wrong, keeps the idle place.
local function release_agent(a)
    local ag = hgetall(K.agent(a))
    redis.call('HSET', K.agent(a), 'state', 'available', 'reason', '', 'since', NOW_S, 'call', '')
    avail_add(a, ag)
end

-- ---------------------------------------------------------------- ring-all offers ending

-- One agent stops ringing; when nobody is left the call goes back to its place. Returns the
-- call's state after: 'offered' or 'waiting'.
local function ring_leave(id, c, a)
    redis.call('SREM', K.ring(id), a)
    timer_clear('ringto', a)
    if redis.call('SCARD', K.ring(id)) > 0 then
        return 'offered'
    end
    redis.call('ZREM', K.ringing(c.skill), c.member)
    requeue(id, c)
    return 'waiting'
end

-- The agent rejected the call or let its ring time out: not ready with the reason, like a
-- single offer; the others keep ringing.
local function ring_drop(id, c, a, kind, reason)
    local cstate = ring_leave(id, c, a)
    redis.call('HSET', K.agent(a), 'state', 'not_ready', 'reason', reason, 'since', NOW_S,
        'call', '')
    emit(kind, 'call', id, 'agent', a, 'skill', c.skill, 'cstate', cstate,
        'astate', 'not_ready', 'reason', reason, 'ringall', '1')
    if cstate == 'waiting' then
        after_return(id)
    end
end

local function ring_timeout(a)
    local ag = hgetall(K.agent(a))
    if not ag or ag.state ~= 'reserved' then
        return
    end
    local c = call_get(ag.call)
    if c and ringing(c) then
        ring_drop(ag.call, c, a, 'RONA', 'missed')
    end
end

-- The agent logs out or goes not ready while ringing (the caller of this sets its state).
-- Returns the call id when it went back in line, for after_return.
local function ring_release(id, c, a, why)
    local cstate = ring_leave(id, c, a)
    emit('RELEASE', 'call', id, 'agent', a, 'skill', c.skill, 'cstate', cstate, 'reason', why,
        'ringall', '1')
    if cstate == 'waiting' then
        return id
    end
    return nil
end

-- Everyone still ringing stops: available again, keeping the idle place (they did nothing
-- wrong, so not ready would punish them for someone else's answer). Returns them, sorted: the
-- caller matches each once every call it ends is gone.
local function ring_stop(id, c)
    local agents = redis.call('SMEMBERS', K.ring(id))
    table.sort(agents)
    redis.call('ZREM', K.ringing(c.skill), c.member)
    redis.call('DEL', K.ring(id))
    for _, b in ipairs(agents) do
        timer_clear('ringto', b)
        release_agent(b)
        emit('RINGCANCEL', 'call', id, 'agent', b, 'skill', c.skill, 'astate', 'available',
            'reason', '', 'ringall', '1')
    end
    return agents
end

-- Stop the ring; then each agent takes the best call it can, which may be a new ring.
local function ring_cancel(id, c)
    for _, b in ipairs(ring_stop(id, c)) do
        match_agent(b)
    end
end

-- The first accept wins the ring.
local function ring_won(id, c, a)
    redis.call('SREM', K.ring(id), a)
    timer_clear('ringto', a)
    redis.call('HSET', K.call(id), 'agent', a)
    ring_cancel(id, c)
end


-- A queue became ring-all: available agents join the rings still going on from before.
local function ring_join_available(skill)
    for l = 1, MAX_LEVEL do
        for _, a in ipairs(redis.call('ZRANGE', K.available(skill, l), 0, -1)) do
            match_agent(a)
        end
    end
end

-- Take a waiting, offered or ringing call out of line for good: the caller hung up, left for a
-- callback, or its node was lost. One `event` ends it (with `reason` when given); agents it was
-- offered to or rang are available again, keeping their idle place (they did nothing wrong).
-- Returns those agents: the caller matches each once every call it ends is gone.
local function leave_line(id, c, event, reason)
    local wait = tostring(NOW - tonumber(c.enq))
    local tail = { 'wait', wait }
    if reason then
        tail = { 'reason', reason, 'wait', wait }
    end
    end_call(id, c)
    if ringing(c) then
        emit(event, 'call', id, 'skill', c.skill, 'cstate', 'ended', unpack(tail))
        return ring_stop(id, c)
    elseif c.state == 'offered' then
        local a = c.agent
        release_agent(a)
        emit(event, 'call', id, 'agent', a, 'skill', c.skill, 'cstate', 'ended',
            'astate', 'available', 'reason', reason or '', 'wait', wait)
        return { a }
    end
    emit(event, 'call', id, 'skill', c.skill, 'cstate', 'ended', unpack(tail))
    return {}
end

-- The agent gives up an offer it holds (logout, not ready): the call goes back in place.
local function release_offer(a, ag, why)
    local id = ag.call
    local c = call_get(id)
    if ringing(c) then
        return ring_release(id, c, a, why)
    end
    requeue(id, c)
    emit('RELEASE', 'call', id, 'agent', a, 'skill', c.skill, 'cstate', 'waiting', 'reason', why)
    return id
end

-- The agent's part of the end of a talk (the call ends, or is transferred): a call handled, its
-- talk, wrap-up begun. `ag`: the agent's calls, talk and offer_seq when the caller has read them
-- already. Returns the talk, the wrap-up seconds and its end, for `wrap_start`, which comes once
-- the call itself was dealt with.
local function agent_done(c, a, ag)
    local talk = NOW - tonumber(c.connected_at)
    local wrap = qcfg(c.skill).wrap_up_seconds
    ag.calls, ag.talk = tonumber(ag.calls) + 1, tonumber(ag.talk) + talk
    local handle_start, wrap_until = c.connected_at, NOW + wrap
    if wrap <= 0 then
        -- No wrap-up: it ends here (end_wrap's work), with no timer and no second read.
        record_handle_time(c.skill, talk)
        handle_start, wrap_until = '', ''
    end
    redis.call('HSET', K.agent(a), 'calls', ag.calls, 'talk', ag.talk,
        'handle_start', handle_start, 'last_skill', c.skill, 'call', '', 'state', 'wrap_up',
        'reason', '', 'since', NOW_S, 'wrap_until', wrap_until)
    return talk, wrap, wrap_until
end

local function wrap_start(a, ag, wrap, wrap_until)
    if wrap > 0 then
        timer_set('wrap', a, wrap_until)
    else
        become_available(a, ag, 'READY', 'wrap_end')
    end
end

-- `code`: the agent's wrap-up code (the desk's, when the agent ended the call), carried by the
-- COMPLETE event; `after`: what the caller's node does next (empty: the flow's way, e.g. the
-- survey; 'end': hang up the caller too).
local function finish(id, c, a, by, ag, code, after)
    ag = ag or hmget(K.agent(a), 'calls', 'talk', 'offer_seq')
    local talk, wrap, wrap_until = agent_done(c, a, ag)
    end_call(id, c)
    local tail = {}
    if code and code ~= '' then
        tail = { 'code', code }
    end
    emit('COMPLETE', 'call', id, 'agent', a, 'skill', c.skill, 'by', by, 'talk', tostring(talk),
        'cstate', 'ended', 'astate', 'wrap_up', 'reason', '', unpack(tail))
    -- A caller's node ends the bridge; a callback's node hangs up both legs (the agent may have
    -- completed it through the API while they were up).
    inbox(c.node, { kind = 'disconnected', call = id, rid = c.rid, reason = after or '' })
    wrap_start(a, ag, wrap, wrap_until)
end

-- ---------------------------------------------------------------- connected calls going back
--
-- An accept is not the end of the story: the agent's phone may then fail to ring (busy,
-- unreachable, no answer), and a callback's customer may not answer. The call then goes back to
-- its place in line (same score, same member), with the timers accept cleared: max wait of the
-- queue it entered (a caller), the callback's expiry, escalation and overflow, each due when it
-- was (one already past fires at the next tick).

-- A callback's expiry: its request time plus the window (stored as 'expires').
local function callback_expiry_arm(id, c)
    local expires = tonumber(redis.call('HGET', K.call(id), 'expires'))
        or tonumber(c.enq) + qcfg(c.skill).callback_window -- written before 'expires' was
    timer_set('cbexp', id, expires)
end

local function back_in_line(id, c)
    requeue(id, c)
    redis.call('HSET', K.call(id), 'connected_at', '')
    local origin, esc = moved_fields(id, c)
    if c.kind == 'callback' then
        callback_expiry_arm(id, c)
    elseif qcfg(origin).max_wait > 0 then
        timer_set('maxwait', id, tonumber(c.enq) + qcfg(origin).max_wait)
    end
    moves_timers(id, c, origin, esc)
end

-- A callback whose customer did not answer waits out the queue's callback_retry_seconds out of
-- line (state 'retry', timer 'cbretry'): dialing the customer again at once would most likely
-- find them busy again. Its expiry keeps running; escalation and overflow wait until it is back.
local function retry_later(id, c, due)
    redis.call('HSET', K.call(id), 'state', 'retry', 'agent', '', 'offered_at', '',
        'connected_at', '', 'retry_at', due)
    timer_set('cbretry', id, due)
    callback_expiry_arm(id, c)
end

-- The retry delay is over: the callback is back at its place (same score, same arrival number,
-- same bucket), with its escalation and overflow timers, and is offered if an agent fits.
local function retry_due(id)
    local c = call_get(id)
    if not c or c.state ~= 'retry' then
        return
    end
    bucket_add(c.skill, c.min, c.score, c.member)
    redis.call('HSET', K.call(id), 'state', 'waiting', 'retry_at', '')
    local origin, esc = moved_fields(id, c)
    moves_timers(id, c, origin, esc)
    emit('CALLBACK_RETRY', 'call', id, 'skill', c.skill, 'cstate', 'waiting',
        'attempts', redis.call('HGET', K.call(id), 'attempts') or '0')
    after_return(id)
end

-- The call's state once it went back and was matched again: 'waiting', 'offered', or 'ended'
-- (its time had run out).
local function state_after_return(id)
    return redis.call('HGET', K.call(id), 'state') or 'ended'
end

-- The agent's part in a callback attempt nobody answered is over: wrap-up as after a call (the
-- queue's wrap-up time), but no call handled, no talk time and no handle time for estimated
-- waits, since nobody talked.
local function attempt_over(a, skill)
    local wrap = qcfg(skill).wrap_up_seconds
    local wrap_until = ''
    if wrap > 0 then
        wrap_until = NOW + wrap
        timer_set('wrap', a, wrap_until)
    end
    redis.call('HSET', K.agent(a), 'state', 'wrap_up', 'reason', '', 'since', NOW_S, 'call', '',
        'handle_start', '', 'last_skill', skill, 'wrap_until', wrap_until)
    return wrap <= 0
end

-- ---------------------------------------------------------------- nodes

-- End what a lost IVR node held. Its callers went with it: waiting or offered ones are
-- abandoned (an offered agent did nothing wrong: available again, keeping the idle place), a
-- talking one is completed (the agent wraps up as usual). Its callbacks lose nothing: nobody is
-- on the line, so they move to `heir`, whose inbox gets their later messages. Node loss is rare,
-- so the node's calls are found by a scan of the calls routing holds rather than by an index
-- every call change would have to keep up; ids are sorted so the events come in one order.
local function reclaim(node, heir)
    local ids = redis.call('SMEMBERS', K.calls())
    table.sort(ids)
    local gone, talking, callbacks = {}, {}, {}
    for _, id in ipairs(ids) do
        if redis.call('HGET', K.call(id), 'node') == node then
            local c = call_get(id)
            if c.kind == 'callback' then
                callbacks[#callbacks + 1] = id
            elseif c.state == 'connected' then
                talking[#talking + 1] = { id, c }
            else
                gone[#gone + 1] = { id, c }
            end
        end
    end
    -- Every call of the node ends before a released agent is matched again, so no agent is
    -- offered a call that is about to be abandoned.
    local released = {}
    for _, e in ipairs(gone) do
        for _, b in ipairs(leave_line(e[1], e[2], 'ABANDON', 'node_lost')) do
            released[#released + 1] = b
        end
    end
    for _, e in ipairs(talking) do
        finish(e[1], e[2], e[2].agent, 'node_lost')
    end
    for _, id in ipairs(callbacks) do
        redis.call('HSET', K.call(id), 'node', heir)
    end
    redis.call('DEL', K.inbox(node)) -- after finish(), which writes "disconnected" there
    for _, a in ipairs(released) do
        match_agent(a)
    end
    return #gone, #talking, #callbacks
end

-- Reclaim a node and say so. `heir`: the node taking its callbacks, or nil when they stay under
-- its id. `quiet`: no event when no call had to be ended. Returns how many callbacks it had.
local function node_lost(node, heir, cause, quiet)
    local abandoned, completed, callbacks = reclaim(node, heir or node)
    if not quiet or abandoned + completed > 0 then
        local rehomed = 0
        if heir then
            rehomed = callbacks
        end
        emit('NODELOST', 'node', node, 'cause', cause, 'to', heir or '',
            'abandoned', tostring(abandoned), 'completed', tostring(completed),
            'rehomed', tostring(rehomed))
    end
    return callbacks
end

local function node_alive(node)
    local until_t = redis.call('ZSCORE', K.nodes(), node)
    return until_t and tonumber(until_t) >= NOW
end

-- Run by a node's tick: reclaim every node whose heartbeat ran out. Only a node that is alive
-- itself does it, so a node cut off from Redis for a while (its own heartbeat lapsed) does not
-- take over the others' callbacks when it comes back, and never reclaims itself. Nodes that never
-- heartbeated are not in the set: unknown, not dead, their calls are never reclaimed.
local function reclaim_expired(ticker)
    if not node_alive(ticker) then
        return
    end
    local lost = redis.call('ZRANGEBYSCORE', K.nodes(), '-inf', '(' .. NOW_S, 'WITHSCORES')
    for i = 1, #lost, 2 do
        redis.call('ZREM', K.nodes(), lost[i])
        local cause = 'timeout'
        if tonumber(lost[i + 1]) <= 0 then
            cause = 'left' -- a node that left with callbacks and no live node to take them
        end
        node_lost(lost[i], ticker, cause, false)
    end
end

-- ---------------------------------------------------------------- commands

local function cmd_login()
    local a, name, contact, skills_json, ready = ARGS[4], ARGS[5], ARGS[6], ARGS[7], ARGS[8]
    local ag = hgetall(K.agent(a))
    if ag and ag.state ~= 'logged_out' then
        fail('invalid-transition', a .. ' is already logged in')
    end
    local skills = cjson.decode(skills_json)
    SKILLS[a] = nil
    redis.call('DEL', K.agent_skills(a))
    for s, l in pairs(skills) do
        redis.call('HSET', K.agent_skills(a), s, l)
        redis.call('SADD', K.staffed(s), a)
        redis.call('SADD', K.queues(), s)
    end
    redis.call('SADD', K.agents(), a)
    local seq = next_seq()
    local state, reason = 'not_ready', 'login'
    if ready == '1' then
        state, reason = 'available', ''
    end
    redis.call('HSET', K.agent(a), 'name', name, 'contact', contact, 'state', state,
        'reason', reason, 'since', NOW_S, 'calls', 0, 'talk', 0, 'idle_seq', seq,
        'offer_seq', seq, 'call', '', 'wrap_until', '', 'handle_start', '', 'last_skill', '')
    emit('AGENTLOGIN', 'agent', a, 'astate', state, 'reason', reason, 'skills', skills_json)
    if state == 'available' then
        avail_add(a, hgetall(K.agent(a)))
        match_agent(a)
    end
    return {}
end

local function cmd_logout()
    local a = ARGS[4]
    local ag = agent_or_fail(a)
    if ag.state == 'logged_out' then
        fail('invalid-transition', a .. ' is not logged in')
    elseif ag.state == 'on_call' then
        fail('agent-busy', a .. ' is on a call')
    end
    local released
    if ag.state == 'reserved' then
        released = release_offer(a, ag, 'logout')
    elseif ag.state == 'wrap_up' then
        end_wrap(a, ag)
    elseif ag.state == 'available' then
        avail_remove(a)
    end
    for s, _ in pairs(agent_skills(a)) do
        redis.call('SREM', K.staffed(s), a)
    end
    redis.call('HSET', K.agent(a), 'state', 'logged_out', 'reason', '', 'since', NOW_S, 'call', '')
    emit('AGENTLOGOFF', 'agent', a, 'astate', 'logged_out', 'reason', '')
    if released then
        after_return(released)
    end
    return {}
end

local function cmd_ready()
    local a = ARGS[4]
    local ag = agent_or_fail(a)
    if ag.state == 'available' then
        return {}
    elseif ag.state ~= 'not_ready' and ag.state ~= 'wrap_up' then
        fail('invalid-transition', a .. ' is ' .. ag.state)
    end
    local cause = 'ready'
    if ag.state == 'wrap_up' then
        end_wrap(a, ag)
        cause = 'wrap_done'
    end
    become_available(a, ag, 'READY', cause)
    return {}
end

local function cmd_not_ready()
    local a, reason = ARGS[4], ARGS[5]
    local ag = agent_or_fail(a)
    if ag.state == 'logged_out' then
        fail('invalid-transition', a .. ' is not logged in')
    elseif ag.state == 'on_call' then
        fail('agent-busy', a .. ' is on a call')
    end
    local released
    if ag.state == 'reserved' then
        released = release_offer(a, ag, 'not_ready')
    elseif ag.state == 'wrap_up' then
        end_wrap(a, ag)
    elseif ag.state == 'available' then
        avail_remove(a)
    end
    redis.call('HSET', K.agent(a), 'state', 'not_ready', 'reason', reason, 'since', NOW_S,
        'call', '')
    emit('NOTREADY', 'agent', a, 'astate', 'not_ready', 'reason', reason)
    if released then
        after_return(released)
    end
    return {}
end

local function cmd_set_skills()
    local a, skills_json = ARGS[4], ARGS[5]
    local ag = agent_or_fail(a)
    local logged_in = ag.state ~= 'logged_out'
    if ag.state == 'available' then
        avail_remove(a)
    end
    for s, _ in pairs(agent_skills(a)) do
        redis.call('SREM', K.staffed(s), a)
    end
    SKILLS[a] = nil
    redis.call('DEL', K.agent_skills(a))
    for s, l in pairs(cjson.decode(skills_json)) do
        redis.call('HSET', K.agent_skills(a), s, l)
        redis.call('SADD', K.queues(), s)
        if logged_in then
            redis.call('SADD', K.staffed(s), a)
        end
    end
    emit('SKILLS', 'agent', a, 'skills', skills_json)
    if ag.state == 'available' then
        avail_add(a, ag)
        match_agent(a)
    end
    return {}
end

-- The agent's state, call and contact, and the call (only the named fields, if any are named).
local function reserved_call(a, id, ...)
    local ag = hmget(K.agent(a), 'state', 'call', 'contact')
    if not ag.state then
        fail('no-such-agent', a)
    elseif ag.state ~= 'reserved' or ag.call ~= id then
        fail('no-such-reservation', id .. ' is not offered to ' .. a)
    end
    if select('#', ...) > 0 then
        return ag, hmget(K.call(id), ...)
    end
    return ag, call_get(id)
end

local function cmd_accept()
    local a, id = ARGS[4], ARGS[5]
    local ag, c = reserved_call(a, id, 'skill', 'kind', 'node', 'rid', 'enq', 'offered_at',
        'state', 'agent', 'member', 'caller')
    redis.call('HSET', K.agent(a), 'state', 'on_call', 'reason', '', 'since', NOW_S)
    redis.call('HSET', K.call(id), 'state', 'connected', 'connected_at', NOW_S)
    timers_clear_of(id, c.kind)
    emit('CONNECT', 'call', id, 'agent', a, 'skill', c.skill, 'kind', c.kind,
        'cstate', 'connected', 'astate', 'on_call', 'reason', '',
        'wait', tostring(NOW - tonumber(c.enq)), 'ring', tostring(NOW - tonumber(c.offered_at)))
    -- A caller's node bridges the caller; a callback's node dials the agent and the customer.
    inbox(c.node, { kind = 'connected', call = id, rid = c.rid, agent = a, contact = ag.contact })
    if ringing(c) then
        ring_won(id, c, a)
    end
    remember_agent(id, c, a)
    return { ag.contact }
end

local function cmd_reject()
    local a, id = ARGS[4], ARGS[5]
    local _, c = reserved_call(a, id)
    if ringing(c) then
        ring_drop(id, c, a, 'REJECT', 'rejected')
        return {}
    end
    requeue(id, c)
    redis.call('HSET', K.agent(a), 'state', 'not_ready', 'reason', 'rejected', 'since', NOW_S,
        'call', '')
    emit('REJECT', 'call', id, 'agent', a, 'skill', c.skill, 'cstate', 'waiting',
        'astate', 'not_ready', 'reason', 'rejected')
    after_return(id)
    return {}
end

local function cmd_complete()
    local a, code, after = ARGS[4], ARGS[5] or '', ARGS[6] or ''
    local ag = hmget(K.agent(a), 'state', 'call', 'calls', 'talk', 'offer_seq')
    if not ag.state then
        fail('no-such-agent', a)
    elseif ag.state ~= 'on_call' then
        fail('invalid-transition', a .. ' is ' .. ag.state)
    end
    -- A connected call: only the fields finish (and end_call) use.
    local c = hmget(K.call(ag.call), 'skill', 'kind', 'node', 'rid', 'state', 'connected_at')
    finish(ag.call, c, a, 'agent', ag, code, after)
    return {}
end

-- The agent accepted, but their phone could not be reached (busy, unreachable, no answer): as
-- for a reservation timeout, the call goes back to its place and the agent is not ready
-- (missed). A report about a call no longer connected to that agent changes nothing ('none').
-- The agent sends their caller to another queue: the agent wraps up as after a call, the caller
-- goes in line there (from now, at its priority, minimum level 1), keeping its screen-pop
-- context and its node, which puts it on hold again ('transferred').
local function cmd_transfer()
    local a, id, skill = ARGS[4], ARGS[5], ARGS[6]
    local ag = hmget(K.agent(a), 'state', 'call', 'calls', 'talk', 'offer_seq')
    if not ag.state then
        fail('no-such-agent', a)
    elseif ag.state ~= 'on_call' or ag.call ~= id then
        fail('invalid-transition', a .. ' is not talking with ' .. id)
    end
    local c = call_get(id)
    if c.kind ~= 'call' then
        fail('invalid-transition', 'only a caller can be transferred')
    end
    local cfg = qcfg(skill)
    if cfg.max_length > 0 and waiting_count(skill) >= cfg.max_length then
        fail('invalid-transition', skill .. ' is full')
    end
    local from = c.skill
    local talk, wrap, wrap_until = agent_done(c, a, ag)
    local seq = next_seq()
    c.skill, c.min, c.req, c.state, c.agent, c.enq = skill, '1', '', 'waiting', '', NOW_S
    c.member = member_of(string.format('%0' .. SEQ_WIDTH .. 'd', seq), '', id)
    c.score = NOW - tonumber(c.prio) * cfg.aging_seconds_per_priority
    redis.call('HSET', K.call(id), 'skill', skill, 'min', '1', 'req', '', 'enq', NOW_S,
        'score', c.score, 'member', c.member, 'state', 'waiting', 'agent', '', 'overdue', '',
        'offered_at', '', 'connected_at', '', 'origin', skill, 'esc', '', 'due', '')
    redis.call('SADD', K.queues(), skill)
    bucket_add(skill, 1, c.score, c.member)
    c.score = redis.call('HGET', K.call(id), 'score') -- the exact stored form
    if cfg.max_wait > 0 then
        timer_set('maxwait', id, NOW + cfg.max_wait)
    end
    moves_timers(id, c, skill, '')
    emit('TRANSFER', 'call', id, 'agent', a, 'skill', skill, 'from', from, 'talk', tostring(talk),
        'min', '1', 'req', '', 'node', c.node, 'seq', tostring(seq), 'score', c.score,
        'cstate', 'waiting', 'astate', 'wrap_up', 'reason', '')
    inbox(c.node, { kind = 'transferred', call = id, rid = c.rid, reason = skill })
    match_call(id, c)
    wrap_start(a, ag, wrap, wrap_until)
    return { redis.call('HGET', K.call(id), 'state') or 'ended' }
end

-- The agent chose the wrap-up code of a call that ended without it (the caller hung up first):
-- an event says so; nothing changes state.
local function cmd_wrapup()
    local a, id, code = ARGS[4], ARGS[5], ARGS[6]
    local state = redis.call('HGET', K.agent(a), 'state')
    if not state then
        fail('no-such-agent', a)
    elseif state ~= 'wrap_up' then
        fail('invalid-transition', a .. ' is ' .. state)
    end
    emit('WRAPUP', 'call', id, 'agent', a, 'code', code)
    return {}
end

local function cmd_unreachable()
    local id, a, cause = ARGS[4], ARGS[5], ARGS[6] or ''
    local c = call_get(id)
    if not c or c.state ~= 'connected' or c.agent ~= a then
        return { 'none' }
    end
    back_in_line(id, c)
    redis.call('HSET', K.agent(a), 'state', 'not_ready', 'reason', 'missed', 'since', NOW_S,
        'call', '')
    emit('UNREACHABLE', 'call', id, 'agent', a, 'skill', c.skill, 'kind', c.kind,
        'cstate', 'waiting', 'astate', 'not_ready', 'reason', 'missed', 'cause', cause)
    after_return(id)
    return { state_after_return(id) }
end

-- The customer of a callback did not answer (busy, no answer, refused). The attempt is counted:
-- below the queue's callback_attempts the callback goes back to its place (after the queue's
-- callback_retry_seconds, out of line meanwhile), else (or when `final`: it can never be
-- dialed) it ends as failed. The agent wraps up (attempt_over).
local function cmd_noanswer()
    local id, a, cause, final = ARGS[4], ARGS[5], ARGS[6] or '', ARGS[7] == '1'
    local c = call_get(id)
    if not c or c.kind ~= 'callback' or c.state ~= 'connected' or c.agent ~= a then
        return { 'none', '0' }
    end
    local attempts = (tonumber(redis.call('HGET', K.call(id), 'attempts')) or 0) + 1
    local n = tostring(attempts)
    if final or attempts >= qcfg(c.skill).callback_attempts then
        end_call(id, c)
        emit('CALLBACK_FAILED', 'call', id, 'agent', a, 'skill', c.skill, 'cstate', 'ended',
            'astate', 'wrap_up', 'reason', '', 'attempts', n, 'cause', cause,
            'wait', tostring(NOW - tonumber(c.enq)))
        if attempt_over(a, c.skill) then
            become_available(a, hmget(K.agent(a), 'calls', 'talk', 'offer_seq'), 'READY',
                'wrap_end')
        end
        return { 'failed', n }
    end
    redis.call('HSET', K.call(id), 'attempts', attempts)
    local delay = qcfg(c.skill).callback_retry_seconds
    if delay > 0 then
        local due = NOW + delay
        retry_later(id, c, due)
        emit('CALLBACK_NOANSWER', 'call', id, 'agent', a, 'skill', c.skill, 'cstate', 'retry',
            'astate', 'wrap_up', 'reason', '', 'attempts', n, 'cause', cause,
            'retry_at', tostring(due))
        if attempt_over(a, c.skill) then
            become_available(a, hmget(K.agent(a), 'calls', 'talk', 'offer_seq'), 'READY',
                'wrap_end')
        end
        return { 'retrying', n }
    end
    back_in_line(id, c)
    emit('CALLBACK_NOANSWER', 'call', id, 'agent', a, 'skill', c.skill, 'cstate', 'waiting',
        'astate', 'wrap_up', 'reason', '', 'attempts', n, 'cause', cause)
    local ready = attempt_over(a, c.skill)
    after_return(id)
    if ready then
        become_available(a, hmget(K.agent(a), 'calls', 'talk', 'offer_seq'), 'READY', 'wrap_end')
    end
    return { 'requeued', n }
end

-- A caller hung up after the accept, while the agent's phone rang (their node says so): nobody
-- answered them, so it is an abandon, not a call handled. The agent, who did nothing wrong, is
-- available again with their idle place (as when a caller leaves an offered call): no call, no
-- talk, no wrap-up, no handle time. The node hangs up the agent's leg itself.
local function abandon_ringing(id, c)
    local a = c.agent
    end_call(id, c)
    release_agent(a)
    emit('ABANDON', 'call', id, 'agent', a, 'skill', c.skill, 'cstate', 'ended',
        'astate', 'available', 'reason', 'abandon_while_ringing',
        'wait', tostring(NOW - tonumber(c.enq)))
    match_agent(a)
end

-- The caller is gone (hung up while waiting, while offered, while the accepting agent's phone
-- rang: ARGS[5] '1', or while talking).
local function cmd_hangup()
    local id = ARGS[4]
    local c = call_get(id)
    if not c then
        return { 'none' }
    end
    if c.state == 'connected' then
        if ARGS[5] == '1' and c.kind == 'call' then
            abandon_ringing(id, c)
            return { 'abandoned' }
        end
        finish(id, c, c.agent, 'caller')
        return { 'completed' }
    end
    for _, a in ipairs(leave_line(id, c, 'ABANDON')) do
        match_agent(a)
    end
    return { 'abandoned' }
end

-- The caller leaves the line to be called back; the place is parked for the callback.
local function cmd_leave_for_callback()
    local id, park = ARGS[4], tonumber(ARGS[5])
    local c = call_get(id)
    if not c then
        return { 'none' }
    elseif c.state == 'connected' then
        return { 'connected' }
    end
    redis.call('DEL', K.parked(id))
    redis.call('HSET', K.parked(id), 'skill', c.skill, 'min', c.min, 'score', c.score,
        'member', c.member, 'enq', c.enq)
    local origin, esc = moved_fields(id, c)
    redis.call('HSET', K.parked(id), 'origin', origin, 'esc', esc)
    timer_set('park', id, NOW + park)
    for _, a in ipairs(leave_line(id, c, 'EXITWITHKEY')) do
        match_agent(a)
    end
    return { 'parked' }
end

-- Shared by enqueue and callback: the call's fields from ARGS[4..].
local function new_call()
    return {
        id = ARGS[4], rid = ARGS[5], skill = ARGS[6], min = ARGS[7], req = ARGS[8],
        prio = ARGS[9], ctx = ARGS[10], node = ARGS[11], kind = ARGS[12], number = ARGS[13],
    }
end

local function place(c, newest)
    local pos = position_of(c, newest)
    return { tostring(pos), tostring(estimated_wait(c.skill, pos)) }
end

local function cmd_enqueue()
    local c = new_call()
    local id = c.id
    if redis.call('EXISTS', K.call(id)) == 1 then
        fail('already-queued', id)
    end
    local cfg = qcfg(c.skill)
    if cfg.max_length > 0 and waiting_count(c.skill) >= cfg.max_length then
        emit('FULL', 'call', id, 'skill', c.skill, 'cstate', 'ended', 'reason', 'queue_full')
        return { 'full' }
    end
    local seq = next_seq()
    c.member = member_of(string.format('%0' .. SEQ_WIDTH .. 'd', seq), c.req, id)
    -- as Redis would store the number (it formats Lua numbers with %.17g): no read-back needed
    c.score = string.format('%.17g', NOW - tonumber(c.prio) * cfg.aging_seconds_per_priority)
    c.enq = NOW_S
    local caller = ARGS[14] or ''
    local pref, pref_state = last_agent_of(c, caller, cfg)
    local hold = pref and pref_state ~= 'available' and tonumber(cfg.last_agent_seconds) > 0
    if hold then
        -- '+': matching reads the call (and its hold) before offering it to anyone
        c.member = string.format('%0' .. SEQ_WIDTH .. 'd', seq) .. '+' .. id
    end
    c.unlisted = not hold -- offered first if it can be (below), listed only if not
    if caller ~= '' then
        c.extra = { 'caller', caller }
    end
    insert(id, c)
    if cfg.max_wait > 0 then
        timer_set('maxwait', id, NOW + cfg.max_wait)
    end
    moves_arm(id, c)
    local last = {}
    if hold then
        local until_t = NOW + tonumber(cfg.last_agent_seconds)
        redis.call('HSET', K.call(id), 'pref', pref, 'pref_until', until_t)
        redis.call('SADD', K.held(pref), id)
        timer_set('pref', id, until_t)
        last = { 'pref', pref, 'hold', redis.call('HGET', K.call(id), 'pref_until') }
    elseif pref and pref_state == 'available' then
        last = { 'pref', pref, 'hold', '' }
    end
    emit('ENTERQUEUE', 'call', id, 'skill', c.skill, 'min', c.min, 'req', c.req, 'prio', c.prio,
        'node', c.node, 'kind', c.kind, 'seq', tostring(seq), 'score', c.score,
        'cstate', 'waiting', unpack(last))
    if #last > 0 and not hold then
        reserve_one(id, c, pref) -- the caller's last agent is free: theirs at once
        return { 'offered', '0', '-1', pref }
    elseif hold then
        local p = place(c, true)
        return { 'queued', p[1], p[2], pref }
    end
    if match_call(id, c) then
        return { 'offered', '0', '-1' }
    end
    c.unlisted = nil
    bucket_add(c.skill, c.min, c.score, c.member)
    local p = place(c, true)
    return { 'queued', p[1], p[2] }
end

local function cmd_callback()
    local c = new_call()
    local id, from = c.id, ARGS[14]
    if redis.call('EXISTS', K.call(id)) == 1 then
        fail('already-queued', id)
    end
    local cfg = qcfg(c.skill)
    local parked = hgetall(K.parked(from))
    local kept = '0'
    local seq
    if parked and (parked.skill == c.skill or parked.origin == c.skill) then
        -- the callback takes the caller's place: same score, same arrival number, same bucket,
        -- in the queue the caller had overflowed to, with the requirements it had escalated to
        seq = string.sub(parked.member, 1, SEQ_WIDTH)
        c.score, c.enq, c.min, kept = parked.score, parked.enq, parked.min, '1'
        c.skill, c.origin, c.esc = parked.skill, parked.origin, parked.esc
        if parked.esc == '1' then
            c.req = ''
        end
        redis.call('DEL', K.parked(from))
        timer_clear('park', from)
    else
        seq = string.format('%0' .. SEQ_WIDTH .. 'd', next_seq())
        c.score = NOW - tonumber(c.prio) * cfg.aging_seconds_per_priority
        c.enq = NOW_S
    end
    c.member = member_of(seq, c.req, id)
    insert(id, c)
    c.score = redis.call('HGET', K.call(id), 'score')
    timer_set('cbexp', id, NOW + cfg.callback_window)
    redis.call('HSET', K.call(id), 'expires', NOW + cfg.callback_window)
    moves_arm(id, c)
    emit('CALLBACK', 'call', id, 'skill', c.skill, 'min', c.min, 'req', c.req, 'prio', c.prio,
        'node', c.node, 'kind', c.kind, 'seq', tostring(tonumber(seq)), 'score', c.score,
        'cstate', 'waiting', 'kept', kept, 'from', from)
    if match_call(id, c) then
        return { 'offered', '0', '-1', kept }
    end
    local p = place(c)
    return { 'queued', p[1], p[2], kept }
end

local function cmd_positions()
    local out = {}
    for i = 4, #ARGS do
        local c = call_get(ARGS[i])
        if c and c.state == 'waiting' then
            local p = place(c)
            out[#out + 1] = p[1]
            out[#out + 1] = p[2]
        else
            out[#out + 1] = '0'
            out[#out + 1] = '-1'
        end
    end
    return out
end

local function cmd_configure()
    local skill = ARGS[4]
    local before = qcfg(skill).strategy
    for i = 5, #ARGS, 2 do
        redis.call('HSET', K.queue_config(skill), ARGS[i], ARGS[i + 1])
    end
    redis.call('SADD', K.queues(), skill)
    CFG[skill] = nil
    local after = qcfg(skill).strategy
    if after ~= before then
        for l = 1, MAX_LEVEL do
            local key = K.available(skill, l)
            for _, a in ipairs(redis.call('ZRANGE', key, 0, -1)) do
                redis.call('ZADD', key, avail_score(hgetall(K.agent(a)), after), a)
            end
        end
    end
    emit('CONFIG', 'skill', skill, 'strategy', after)
    if after == 'ring_all' and before ~= 'ring_all' then
        ring_join_available(skill)
    end
    return {}
end

-- Timers that are due: reservation timeouts (RONA), wrap-up ends, max waits, callback expiry,
-- parked places, holds for a last agent. Each is one short step; the caller repeats while a full
-- batch was due. Run by a node (ARGS[5]), it first reclaims the nodes whose heartbeat ran out.
local function cmd_tick()
    local batch = tonumber(ARGS[4])
    if ARGS[5] and ARGS[5] ~= '' then
        reclaim_expired(ARGS[5])
    end
    forget_expired(batch)
    local due = redis.call('ZRANGEBYSCORE', K.timers(), '-inf', NOW_S, 'LIMIT', 0, batch)
    for _, m in ipairs(due) do
        redis.call('ZREM', K.timers(), m)
        local bar = string.find(m, '|', 1, true)
        local kind, id = string.sub(m, 1, bar - 1), string.sub(m, bar + 1)
        if kind == 'rona' then
            local c = call_get(id)
            if c and c.state == 'offered' then
                local a = c.agent
                requeue(id, c)
                redis.call('HSET', K.agent(a), 'state', 'not_ready', 'reason', 'missed',
                    'since', NOW_S, 'call', '')
                emit('RONA', 'call', id, 'agent', a, 'skill', c.skill, 'cstate', 'waiting',
                    'astate', 'not_ready', 'reason', 'missed')
                after_return(id)
            end
        elseif kind == 'wrap' then
            local ag = hgetall(K.agent(id))
            if ag and ag.state == 'wrap_up' then
                end_wrap(id, ag)
                become_available(id, ag, 'READY', 'wrap_end')
            end
        elseif kind == 'maxwait' or kind == 'cbexp' then
            local c = call_get(id)
            local reason = kind == 'maxwait' and 'max_wait' or 'expired'
            if c and (c.state == 'waiting' or c.state == 'retry') then
                exit_call(id, c, reason)
            elseif c and c.state == 'offered' then
                redis.call('HSET', K.call(id), 'overdue', reason)
            end
        elseif kind == 'park' then
            redis.call('DEL', K.parked(id))
        elseif kind == 'esc' or kind == 'ovf' then
            move_timer(kind, id)
        elseif kind == 'ringto' then
            ring_timeout(id)
        elseif kind == 'pref' then
            hold_expired(id)
        elseif kind == 'cbretry' then
            retry_due(id)
        end
    end
    return { tostring(#due) }
end

-- A node is alive until now + timeout. On its first heartbeat (`starting` = '1') a node also
-- reclaims what an earlier process under the same id left behind (a crash and a restart within
-- the timeout): those callers are gone, its callbacks stay with it. Returns 'alive' when the
-- node was known, 'joined' when it was not (first start, or declared lost meanwhile).
local function cmd_heartbeat()
    local node, timeout, starting = ARGS[4], tonumber(ARGS[5]), ARGS[6] == '1'
    local known = redis.call('ZSCORE', K.nodes(), node)
    redis.call('ZADD', K.nodes(), NOW + timeout, node)
    if starting then
        node_lost(node, nil, 'restart', true)
    end
    if known then
        return { 'alive' }
    end
    return { 'joined' }
end

-- A node stops: what it still holds is reclaimed at once, its callbacks go to the live node
-- heard from last. With no other node alive they stay under its id, and its entry is kept as
-- long expired, so the first node to tick later takes them over.
local function cmd_node_leave()
    local node = ARGS[4]
    redis.call('ZREM', K.nodes(), node)
    local heir = redis.call('ZREVRANGEBYSCORE', K.nodes(), '+inf', NOW_S, 'LIMIT', 0, 1)[1]
    if node_lost(node, heir, 'left', false) > 0 and not heir then
        redis.call('ZADD', K.nodes(), 0, node)
    end
    return {}
end

local COMMANDS = {
    login = cmd_login,
    logout = cmd_logout,
    ready = cmd_ready,
    not_ready = cmd_not_ready,
    set_skills = cmd_set_skills,
    accept = cmd_accept,
    reject = cmd_reject,
    complete = cmd_complete,
    transfer = cmd_transfer,
    wrapup = cmd_wrapup,
    unreachable = cmd_unreachable,
    noanswer = cmd_noanswer,
    hangup = cmd_hangup,
    leave_for_callback = cmd_leave_for_callback,
    enqueue = cmd_enqueue,
    callback = cmd_callback,
    positions = cmd_positions,
    configure = cmd_configure,
    tick = cmd_tick,
    heartbeat = cmd_heartbeat,
    node_leave = cmd_node_leave,
}

-- args[2] is the command, optionally followed by '|<events_max>' (the node's setting, saving a
-- read of the tenant's per call) and '|a': the reply then also carries the agent named by
-- args[4] as the command left it (its hash and its skills, flat), so the agent API needs no
-- second round trip to answer with it.
local function invoke(args)
    ARGS, P = args, args[1]
    NOW_S = args[3]
    NOW = tonumber(NOW_S)
    OFFERS, CFG, SKILLS = {}, {}, {}
    local name, em, want = string.match(args[2], '^([^|]*)|?([0-9]*)|?(a?)$')
    EVENTS_MAX = tonumber(em)
    local command = COMMANDS[name]
    if not command then
        return redis.error_reply('bad-command ' .. tostring(args[2]))
    end
    local ok, result = pcall(command)
    if not ok then
        if type(result) == 'table' and result.routing_error then
            return redis.error_reply(result.routing_error)
        end
        error(result)
    end
    if want == 'a' then
        return { result, OFFERS, redis.call('HGETALL', K.agent(args[4])),
            redis.call('HGETALL', K.agent_skills(args[4])) }
    end
    return { result, OFFERS }
end
