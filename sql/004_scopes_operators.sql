-- 004_scopes_operators: what each API key may do, and which tenants operate Pulse.
--
-- Design note. A key carries scopes: send (create and cancel), read (get, list, attempts,
-- dead letters), admin (manage the tenant's keys, replay and purge dead letters). A tenant
-- flagged operator may also create tenants. Keys made before this migration keep full rights,
-- as they had them.

ALTER TABLE api_keys ADD COLUMN scopes text[] NOT NULL DEFAULT ARRAY['send', 'read', 'admin'];
ALTER TABLE api_keys ADD COLUMN name text NOT NULL DEFAULT '';
ALTER TABLE tenants ADD COLUMN operator boolean NOT NULL DEFAULT false;
