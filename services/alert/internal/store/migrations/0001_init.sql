-- Seed data model: alerts, the hosts that run an agent, their tripwire
-- rules, and the raw events agents stream (audit_entries).

CREATE TABLE alerts (
    alert_id    uuid PRIMARY KEY,
    type        text        NOT NULL,
    severity    smallint    NOT NULL CHECK (severity BETWEEN 1 AND 5),
    message     text        NOT NULL,
    source      text        NOT NULL DEFAULT '',
    host        text        NOT NULL DEFAULT '',
    table_name  text        NOT NULL DEFAULT '',
    detail      jsonb,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- ListAlerts orders by (occurred_at DESC, alert_id) and filters on host,
-- type, table and minimum severity.
CREATE INDEX alerts_occurred_at_idx ON alerts (occurred_at DESC, alert_id);
CREATE INDEX alerts_host_idx        ON alerts (host, occurred_at DESC) WHERE host <> '';
CREATE INDEX alerts_type_idx        ON alerts (type, occurred_at DESC);
CREATE INDEX alerts_table_idx       ON alerts (table_name, occurred_at DESC) WHERE table_name <> '';
CREATE INDEX alerts_severity_idx    ON alerts (severity, occurred_at DESC);

CREATE TABLE hosts (
    host_id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    hostname      text        NOT NULL UNIQUE,
    ip            text        NOT NULL DEFAULT '',
    os            text        NOT NULL DEFAULT '',
    agent_version text        NOT NULL DEFAULT '',
    first_seen    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tripwire_rules (
    rule_id     text PRIMARY KEY,
    name        text     NOT NULL UNIQUE,
    -- witnz.alert.v1.TargetType: 1 file, 2 network, 3 process.
    target_type smallint NOT NULL CHECK (target_type BETWEEN 1 AND 3),
    target      text     NOT NULL,
    -- witnz.alert.v1.Severity of the alert a matching event raises.
    severity    smallint NOT NULL CHECK (severity BETWEEN 1 AND 5),
    enabled     boolean  NOT NULL DEFAULT true
);

CREATE TABLE audit_entries (
    event_id    uuid PRIMARY KEY,
    host_id     uuid        NOT NULL REFERENCES hosts (host_id),
    -- witnz.alert.v1.EventType name without its prefix, e.g. file_modified.
    event_type  text        NOT NULL,
    -- No foreign key: agents also report events of their built-in rules,
    -- and a rule may be deleted while its events must stay.
    rule_id     text        NOT NULL DEFAULT '',
    severity    smallint    NOT NULL DEFAULT 0,
    target      text        NOT NULL DEFAULT '',
    detail      jsonb,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_entries_host_idx ON audit_entries (host_id, occurred_at DESC);
CREATE INDEX audit_entries_occurred_at_idx ON audit_entries (occurred_at DESC);
