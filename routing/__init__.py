"""Skill-based routing (ACD) on Redis: agents, queues, reservations, statistics."""
