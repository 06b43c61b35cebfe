-- Runs once, when the postgres container initialises an empty data volume.
-- The protected database is "app" (POSTGRES_DB); the alert service keeps its
-- alerts in its own database; the verifier reads with a read-only role.
CREATE DATABASE witnz_alert;

CREATE ROLE witnz_verifier LOGIN PASSWORD 'verifier';
GRANT pg_read_all_data TO witnz_verifier;

-- A demo table for the tamper demonstration: append-only audit records.
\connect app
CREATE TABLE public.audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    action     text NOT NULL,
    detail     jsonb
);
INSERT INTO public.audit_log (actor, action, detail) VALUES
    ('alice', 'login', '{"ip": "10.0.0.7"}'),
    ('bob', 'export', '{"rows": 1200}');
