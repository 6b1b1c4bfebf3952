"""Skill-based routing (ACD) on Redis: agents, queues, reservations, the event stream.

- `routing.model`: agents and states, skills, queue settings, calls, offers (plain data).
- `routing.keys`: every Redis key, one hash tag per tenant.
- `routing.store`: the only module talking to Redis; every change is one Lua step
  (`store.lua`) that also makes the matching it triggers.
- `routing.events`: the event stream's types and its replay into states.
- `ivr.routing_redis`: `RedisRouting`, the session driver's routing interface over the store
  (in `ivr`, because routing never imports `ivr`).
"""
