-- 015_tenant_weights: each tenant's weight in the fair share between tenants of one priority.
--
-- Design note. Within a priority, the worker serves the tenants that have work by weighted
-- deficit round robin (pulse/core/tenant_share.py): a tenant of weight 3 gets three times the
-- deliveries of a tenant of weight 1 while both have work waiting, and any tenant alone gets
-- all of it. The default, 1, treats every tenant alike; an operator sets others through
-- PUT /api/tenants/{id}/weight. A column of tenants (not of tenant_limits): every tenant has a
-- weight, and the workers read the few that differ from 1.
ALTER TABLE tenants ADD COLUMN weight integer NOT NULL DEFAULT 1
    CHECK (weight BETWEEN 1 AND 1000);
CREATE INDEX tenants_weight_set ON tenants (id) WHERE weight <> 1;
