"""The embedded CRM store's schema, as migration steps (`crm_bridge.migrations`).

Append a step to change the schema; never edit one that has shipped (databases out there are
at its version already). Tables are STRICT: a value of the wrong type is an error, not a quiet
conversion. Times are seconds since the epoch (REAL), money integer fen, as in the model.
"""

from __future__ import annotations

from crm_bridge.migrations import Step

V1_TABLES: Step = (
    """
    CREATE TABLE tickets (
        id INTEGER PRIMARY KEY,              -- the store's own reference (crm_ref emb-<id>)
        ticket_id TEXT NOT NULL UNIQUE,      -- the number the caller was told
        idempotency_key TEXT NOT NULL UNIQUE,
        ticket_type TEXT NOT NULL,
        priority INTEGER NOT NULL,
        urgent INTEGER NOT NULL,
        caller TEXT NOT NULL,
        account TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        province TEXT NOT NULL,
        city TEXT NOT NULL,
        district TEXT NOT NULL,
        street TEXT NOT NULL,
        number TEXT NOT NULL,
        address_raw TEXT NOT NULL,
        description TEXT NOT NULL,
        source TEXT NOT NULL,
        call_id TEXT NOT NULL,
        ivr_path TEXT NOT NULL,              -- JSON array of flow node ids
        complete INTEGER NOT NULL,
        fields TEXT NOT NULL,                -- JSON object of the other slots
        status TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    ) STRICT
    """,
    """
    CREATE TABLE ticket_history (
        id INTEGER PRIMARY KEY,              -- insertion order is history order
        ticket INTEGER NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
        status TEXT NOT NULL,
        at REAL NOT NULL,
        note TEXT NOT NULL
    ) STRICT
    """,
    """
    CREATE TABLE customers (
        customer_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        province TEXT NOT NULL,
        city TEXT NOT NULL,
        district TEXT NOT NULL,
        street TEXT NOT NULL,
        number TEXT NOT NULL,
        address_raw TEXT NOT NULL
    ) STRICT
    """,
    # A number or an account belongs to one customer: giving it to another moves it.
    """
    CREATE TABLE customer_phones (
        phone TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE
    ) STRICT
    """,
    """
    CREATE TABLE customer_accounts (
        account TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE
    ) STRICT
    """,
    # No foreign key to customer_accounts: billing may know an account before the CRM's
    # customer records do.
    """
    CREATE TABLE bills (
        account TEXT PRIMARY KEY,
        balance_fen INTEGER NOT NULL,
        amount_due_fen INTEGER NOT NULL,
        due_date TEXT NOT NULL
    ) STRICT
    """,
    """
    CREATE TABLE outages (
        id INTEGER PRIMARY KEY,
        province TEXT NOT NULL,
        city TEXT NOT NULL,
        district TEXT NOT NULL,
        street TEXT NOT NULL,
        kind TEXT NOT NULL,
        cause TEXT NOT NULL,
        starts_at REAL NOT NULL,
        restore_at REAL,
        ended_at REAL
    ) STRICT
    """,
    """
    CREATE TABLE surveys (
        call_id TEXT PRIMARY KEY,            -- one rating per call: the first one stays
        score INTEGER NOT NULL,
        at REAL NOT NULL,
        agent_id TEXT NOT NULL,
        caller TEXT NOT NULL
    ) STRICT
    """,
)
"""Version 1: the tables."""

V2_INDEXES: Step = (
    "CREATE INDEX tickets_by_created ON tickets (created_at)",
    "CREATE INDEX tickets_by_status ON tickets (status, created_at)",
    "CREATE INDEX ticket_history_by_ticket ON ticket_history (ticket, id)",
    "CREATE INDEX outages_by_start ON outages (starts_at)",
    "CREATE INDEX customer_phones_by_customer ON customer_phones (customer_id)",
    "CREATE INDEX customer_accounts_by_customer ON customer_accounts (customer_id)",
)
"""Version 2: indexes for the admin lists, the outage look-up and the history of a ticket."""

V3_NO_NUMBERS: Step = (
    # Ticket numbers come from the node's outbox file alone (`crm_bridge.numbers`); a store
    # opened by an older hotline carries an unused sequence table of its own: gone, so there is
    # one place a number can come from.
    "DROP TABLE IF EXISTS ticket_number_sequence",
)
"""Version 3: no ticket number sequence in the store."""

STEPS: tuple[Step, ...] = (V1_TABLES, V2_INDEXES, V3_NO_NUMBERS)
"""Every step, oldest first; the store's schema version is ``len(STEPS)``."""
