/* sql/lark_webhooks--1.0.sql */

\echo Use "CREATE EXTENSION lark_webhooks" to load this file. \quit

/*
 * Everything lives in schema "lark".  The tables carry no grants: writes go
 * through the SECURITY DEFINER functions below, which the owner grants to
 * the roles that manage webhooks, and the signing secrets can be read by the
 * extension's owner alone.
 */
CREATE SCHEMA lark;
GRANT USAGE ON SCHEMA lark TO PUBLIC;

/* ---------------------------------------------------------------------------
 * C helpers
 * ------------------------------------------------------------------------- */

CREATE FUNCTION lark._random_hex(nbytes integer)
RETURNS text
AS 'MODULE_PATHNAME', 'lark_random_hex'
LANGUAGE C VOLATILE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION lark._random_hex(integer) IS
'hex digits of nbytes bytes from the strong random source (used for ids and secrets)';

CREATE FUNCTION lark._ordered_id(prefix text)
RETURNS text
AS 'MODULE_PATHNAME', 'lark_ordered_id'
LANGUAGE C VOLATILE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION lark._ordered_id(text) IS
'prefix, 12 hex digits of the time in microseconds, 12 random hex digits (ids that sort by creation)';

CREATE FUNCTION lark._check_url(url text)
RETURNS void
AS 'MODULE_PATHNAME', 'lark_check_url'
LANGUAGE C STABLE PARALLEL SAFE;

CREATE FUNCTION lark._event_body(event text, fired_at timestamptz,
                                 workflow_id text, workflow_name text,
                                 workflow_description text,
                                 secret_context_names text[],
                                 id_key text, runnable_id text, status text,
                                 started_at timestamptz,
                                 finished_at timestamptz, summary text)
RETURNS text
AS 'MODULE_PATHNAME', 'lark_event_body'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION lark._wake_worker()
RETURNS void
AS 'MODULE_PATHNAME', 'lark_wake_worker'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION lark._wake_worker() IS
'wake the delivery worker when the current transaction commits';

REVOKE ALL ON FUNCTION lark._check_url(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION lark._event_body(text, timestamptz, text, text, text,
                                        text[], text, text, text, timestamptz,
                                        timestamptz, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION lark._wake_worker() FROM PUBLIC;

/* ---------------------------------------------------------------------------
 * Signing
 * ------------------------------------------------------------------------- */

CREATE FUNCTION lark.sign(body bytea, secret text)
RETURNS text
AS 'MODULE_PATHNAME', 'lark_sign_bytea'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION lark.sign(bytea, text) IS
'lowercase hex HMAC-SHA256 of body, keyed with the UTF-8 bytes of secret';

CREATE FUNCTION lark.sign(body text, secret text)
RETURNS text
AS 'MODULE_PATHNAME', 'lark_sign_text'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION lark.sign(text, text) IS
'lowercase hex HMAC-SHA256 of the UTF-8 bytes of body, keyed with the UTF-8 bytes of secret';

CREATE FUNCTION lark.sign(body bytea, key bytea)
RETURNS text
AS 'MODULE_PATHNAME', 'lark_sign_raw_key'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION lark.sign(bytea, bytea) IS
'lowercase hex HMAC-SHA256 of body under a raw binary key';

CREATE FUNCTION lark.verify(body bytea, signature text, secret text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'lark_verify_bytea'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION lark.verify(bytea, text, text) IS
'true when signature is the lowercase hex HMAC-SHA256 of body; compares in constant time';

CREATE FUNCTION lark.verify(body text, signature text, secret text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'lark_verify_text'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION lark.verify(text, text, text) IS
'true when signature is the lowercase hex HMAC-SHA256 of the UTF-8 bytes of body';

/* ---------------------------------------------------------------------------
 * Workflows and their runs
 * ------------------------------------------------------------------------- */

CREATE TABLE lark.workflows (
    id                   text PRIMARY KEY DEFAULT 'wf_' || lark._random_hex(12),
    account_id           text NOT NULL,
    name                 text NOT NULL,
    description          text,
    secret_context_names text[] NOT NULL DEFAULT '{}',
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workflows_account_id_idx ON lark.workflows (account_id);

CREATE TABLE lark.workflow_executions (
    id          text PRIMARY KEY DEFAULT 'exec_' || lark._random_hex(12),
    workflow_id text NOT NULL REFERENCES lark.workflows (id) ON DELETE CASCADE,
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running',
                                  'success', 'failure', 'cancelled')),
    summary     text,
    started_at  timestamptz,
    finished_at timestamptz
);
CREATE INDEX workflow_executions_workflow_id_idx
    ON lark.workflow_executions (workflow_id);

CREATE TABLE lark.workflow_generations (
    id          text PRIMARY KEY DEFAULT 'gen_' || lark._random_hex(12),
    workflow_id text NOT NULL REFERENCES lark.workflows (id) ON DELETE CASCADE,
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'success', 'failure')),
    summary     text,
    started_at  timestamptz,
    finished_at timestamptz
);
CREATE INDEX workflow_generations_workflow_id_idx
    ON lark.workflow_generations (workflow_id);

CREATE TABLE lark.workflow_repairs (
    id          text PRIMARY KEY DEFAULT 'rep_' || lark._random_hex(12),
    workflow_id text NOT NULL REFERENCES lark.workflows (id) ON DELETE CASCADE,
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'success', 'failure')),
    summary     text,
    started_at  timestamptz,
    finished_at timestamptz
);
CREATE INDEX workflow_repairs_workflow_id_idx
    ON lark.workflow_repairs (workflow_id);

/* ---------------------------------------------------------------------------
 * Webhooks, events and deliveries
 * ------------------------------------------------------------------------- */

CREATE TABLE lark.webhooks (
    id          text PRIMARY KEY DEFAULT 'wh_' || lark._random_hex(12),
    account_id  text NOT NULL,
    url         text NOT NULL,
    events      text[] NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    paused_at   timestamptz
);
CREATE INDEX webhooks_account_id_idx ON lark.webhooks (account_id);

/* Kept apart from lark.webhooks so that granting SELECT there exposes no secret. */
CREATE TABLE lark.webhook_secrets (
    webhook_id text PRIMARY KEY REFERENCES lark.webhooks (id) ON DELETE CASCADE,
    secret     text NOT NULL
);

/*
 * One row per account that ever had a webhook.  create_webhook increments
 * the count with an upsert, which serializes concurrent creators of one
 * account at every isolation level, so the limit cannot be overrun.
 */
CREATE TABLE lark.accounts (
    account_id    text PRIMARY KEY,
    webhook_count integer NOT NULL CHECK (webhook_count >= 0)
);

CREATE TABLE lark.events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event       text NOT NULL,
    account_id  text NOT NULL,
    workflow_id text NOT NULL,
    runnable_id text NOT NULL,
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE lark.deliveries (
    id               text PRIMARY KEY DEFAULT lark._ordered_id('dlv_'),
    event_id         bigint NOT NULL,
    webhook_id       text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'in_flight', 'succeeded',
                                       'failed', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz DEFAULT now(),
    last_http_status integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
/* The worker's queue: small, because finished deliveries leave it. */
CREATE INDEX deliveries_due_idx ON lark.deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX deliveries_webhook_id_idx ON lark.deliveries (webhook_id);
CREATE INDEX deliveries_event_id_idx ON lark.deliveries (event_id);

/*
 * Every delivery is updated twice on its way through the queue, and the
 * worker's plans depend on knowing how long the queue is: vacuum and
 * analyze this table long before the default 20% of it has changed.
 */
ALTER TABLE lark.deliveries SET (autovacuum_vacuum_scale_factor = 0.02,
                                 autovacuum_analyze_scale_factor = 0.02);

CREATE TABLE lark.delivery_attempts (
    delivery_id      text NOT NULL,
    attempt          integer NOT NULL,
    started_at       timestamptz NOT NULL,
    duration_ms      double precision NOT NULL,
    http_status      integer,
    error            text,
    response_excerpt bytea,
    PRIMARY KEY (delivery_id, attempt)
);

/*
 * Deleting events takes their deliveries and attempts along, like ON DELETE
 * CASCADE.  These are statement triggers rather than foreign keys because a
 * foreign key checks every inserted delivery and attempt, one query each,
 * on the hottest paths there are; only our own functions insert them.
 */
CREATE FUNCTION lark._cascade_delete()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_TABLE_NAME = 'events' THEN
        DELETE FROM lark.deliveries d USING old_rows o WHERE d.event_id = o.id;
    ELSE
        DELETE FROM lark.delivery_attempts a USING old_rows o WHERE a.delivery_id = o.id;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION lark._cascade_delete() FROM PUBLIC;

CREATE TRIGGER cascade_delete
    AFTER DELETE ON lark.events
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION lark._cascade_delete();
CREATE TRIGGER cascade_delete
    AFTER DELETE ON lark.deliveries
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION lark._cascade_delete();

/* TRUNCATE does not fire delete triggers; it cascades the same way. */
CREATE FUNCTION lark._cascade_truncate()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_TABLE_NAME = 'events' THEN
        TRUNCATE lark.deliveries;
    ELSE
        TRUNCATE lark.delivery_attempts;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION lark._cascade_truncate() FROM PUBLIC;

CREATE TRIGGER cascade_truncate
    AFTER TRUNCATE ON lark.events
    FOR EACH STATEMENT
    EXECUTE FUNCTION lark._cascade_truncate();
CREATE TRIGGER cascade_truncate
    AFTER TRUNCATE ON lark.deliveries
    FOR EACH STATEMENT
    EXECUTE FUNCTION lark._cascade_truncate();

COMMENT ON TABLE lark.webhooks IS 'subscriptions: where to POST which events';
COMMENT ON TABLE lark.events IS 'every event fired, with the exact JSON body that is signed and sent';
COMMENT ON TABLE lark.deliveries IS 'one row per event and subscribed webhook';
COMMENT ON TABLE lark.delivery_attempts IS 'one row per HTTP attempt, written by the delivery worker';

/* ---------------------------------------------------------------------------
 * Validation helpers
 * ------------------------------------------------------------------------- */

CREATE FUNCTION lark.event_types()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ARRAY['workflow_execution.success', 'workflow_execution.failure',
             'workflow_execution.cancelled',
             'workflow_generation.success', 'workflow_generation.failure',
             'workflow_repair.success', 'workflow_repair.failure'];
COMMENT ON FUNCTION lark.event_types() IS 'the event names a webhook can subscribe to';

/* Quote a user-supplied value for an error message, cut to a readable size. */
CREATE FUNCTION lark._quote_for_message(value text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN value IS NULL THEN 'NULL'
    WHEN length(value) > 64 THEN '"' || left(value, 64) || '..."'
    ELSE '"' || value || '"'
END;

/*
 * Check an events array and return it with duplicates removed, keeping the
 * order in which the names first appear.
 */
CREATE FUNCTION lark._normalize_events(events text[])
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    unknown text;
BEGIN
    IF events IS NULL OR cardinality(events) = 0 THEN
        RAISE EXCEPTION 'a webhook must subscribe to at least one event'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass a non-empty array of event names: '
                         || array_to_string(lark.event_types(), ', ') || '.';
    END IF;

    SELECT e INTO unknown
      FROM unnest(events) AS e
     WHERE e IS NULL OR NOT e = ANY (lark.event_types())
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'unknown webhook event %',
                        lark._quote_for_message(unknown)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Valid events are: '
                         || array_to_string(lark.event_types(), ', ') || '.';
    END IF;

    RETURN ARRAY(SELECT e
                   FROM unnest(events) WITH ORDINALITY AS t(e, n)
                  GROUP BY e
                  ORDER BY min(n));
END
$$;

/* Raise a clear error unless a webhook with this id exists; lock its row. */
CREATE FUNCTION lark._lock_webhook(webhook_id text)
RETURNS lark.webhooks
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hook lark.webhooks;
BEGIN
    IF webhook_id IS NULL THEN
        RAISE EXCEPTION 'webhook_id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the id that create_webhook returned.';
    END IF;

    SELECT * INTO hook FROM lark.webhooks w WHERE w.id = webhook_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist',
                        lark._quote_for_message(webhook_id)
            USING ERRCODE = 'undefined_object',
                  HINT = 'List the existing webhooks with: SELECT id, url FROM lark.webhooks;';
    END IF;
    RETURN hook;
END
$$;

/* A description is free text, but not a place to store documents. */
CREATE FUNCTION lark._check_description(description text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF length(description) > 1024 THEN
        RAISE EXCEPTION 'webhook description is longer than 1024 characters'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a shorter description.';
    END IF;
END
$$;

REVOKE ALL ON FUNCTION lark._check_description(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION lark._normalize_events(text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION lark._lock_webhook(text) FROM PUBLIC;

/* ---------------------------------------------------------------------------
 * Webhook API
 * ------------------------------------------------------------------------- */

CREATE FUNCTION lark.create_webhook(account_id text, url text, events text[],
                                    description text DEFAULT NULL)
RETURNS TABLE (webhook_id text, signing_secret text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    max_hooks integer := current_setting('lark_webhooks.max_webhooks_per_account')::integer;
    clean_events text[];
    new_id text;
    new_secret text;
BEGIN
    IF create_webhook.account_id IS NULL OR create_webhook.account_id = '' THEN
        RAISE EXCEPTION 'account_id must not be empty'
            USING ERRCODE = CASE WHEN create_webhook.account_id IS NULL
                                 THEN 'null_value_not_allowed'
                                 ELSE 'invalid_parameter_value' END,
                  HINT = 'Pass the id of the account that owns the webhook.';
    END IF;
    IF length(create_webhook.account_id) > 256 THEN
        RAISE EXCEPTION 'account_id is longer than 256 characters'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the id of the account that owns the webhook.';
    END IF;
    PERFORM lark._check_url(create_webhook.url);
    clean_events := lark._normalize_events(create_webhook.events);
    PERFORM lark._check_description(create_webhook.description);

    /* Take a slot; the upsert waits for any concurrent creator of this account. */
    INSERT INTO lark.accounts AS a (account_id, webhook_count)
    VALUES (create_webhook.account_id, 1)
    ON CONFLICT ON CONSTRAINT accounts_pkey DO UPDATE
        SET webhook_count = a.webhook_count + 1
        WHERE a.webhook_count < max_hooks;
    IF NOT FOUND OR max_hooks < 1 THEN
        RAISE EXCEPTION 'account "%" already has the maximum of % webhooks',
                        left(create_webhook.account_id, 64), max_hooks
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Delete a webhook the account no longer needs, or raise lark_webhooks.max_webhooks_per_account.';
    END IF;

    new_secret := 'whsec_' || lark._random_hex(32);
    INSERT INTO lark.webhooks AS w (account_id, url, events, description)
    VALUES (create_webhook.account_id, create_webhook.url, clean_events,
            nullif(create_webhook.description, ''))
    RETURNING w.id INTO new_id;
    INSERT INTO lark.webhook_secrets (webhook_id, secret)
    VALUES (new_id, new_secret);

    webhook_id := new_id;
    signing_secret := new_secret;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION lark.create_webhook(text, text, text[], text) IS
'create a webhook; returns its id and its signing secret, which is shown only this once';

CREATE FUNCTION lark.update_webhook(webhook_id text, url text DEFAULT NULL,
                                    events text[] DEFAULT NULL,
                                    description text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hook lark.webhooks := lark._lock_webhook(update_webhook.webhook_id);
BEGIN
    IF update_webhook.url IS NOT NULL THEN
        PERFORM lark._check_url(update_webhook.url);
        hook.url := update_webhook.url;
    END IF;
    IF update_webhook.events IS NOT NULL THEN
        hook.events := lark._normalize_events(update_webhook.events);
    END IF;
    IF update_webhook.description IS NOT NULL THEN
        PERFORM lark._check_description(update_webhook.description);
        hook.description := nullif(update_webhook.description, '');
    END IF;

    UPDATE lark.webhooks w
       SET url = hook.url, events = hook.events,
           description = hook.description, updated_at = now()
     WHERE w.id = hook.id;
END
$$;
COMMENT ON FUNCTION lark.update_webhook(text, text, text[], text) IS
'change a webhook''s url, events or description; NULL keeps a field, an empty description clears it';

CREATE FUNCTION lark.pause_webhook(webhook_id text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hook lark.webhooks := lark._lock_webhook(pause_webhook.webhook_id);
BEGIN
    IF hook.active THEN
        UPDATE lark.webhooks w
           SET active = false, paused_at = now(), updated_at = now()
         WHERE w.id = hook.id;
    END IF;
END
$$;
COMMENT ON FUNCTION lark.pause_webhook(text) IS
'stop delivering to a webhook; queued deliveries are held until it is resumed';

CREATE FUNCTION lark.resume_webhook(webhook_id text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hook lark.webhooks := lark._lock_webhook(resume_webhook.webhook_id);
BEGIN
    IF hook.active THEN
        RETURN;
    END IF;

    /*
     * The retry clock stood still while the webhook was paused: give each
     * held delivery the wait it still had left when the pause began.
     */
    UPDATE lark.deliveries d
       SET next_attempt_at = now() + greatest(d.next_attempt_at - hook.paused_at,
                                              interval '0')
     WHERE d.webhook_id = hook.id AND d.status = 'pending';

    UPDATE lark.webhooks w
       SET active = true, paused_at = NULL, updated_at = now()
     WHERE w.id = hook.id;
    PERFORM lark._wake_worker();
END
$$;
COMMENT ON FUNCTION lark.resume_webhook(text) IS
'resume delivering to a paused webhook, held deliveries included';

CREATE FUNCTION lark.delete_webhook(webhook_id text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hook lark.webhooks := lark._lock_webhook(delete_webhook.webhook_id);
BEGIN
    UPDATE lark.deliveries d
       SET status = 'cancelled', finished_at = now(), next_attempt_at = NULL,
           last_error = coalesce(d.last_error || '; ', '') || 'webhook deleted'
     WHERE d.webhook_id = hook.id AND d.status IN ('pending', 'in_flight');

    DELETE FROM lark.webhooks w WHERE w.id = hook.id;
    UPDATE lark.accounts a
       SET webhook_count = a.webhook_count - 1
     WHERE a.account_id = hook.account_id;
END
$$;
COMMENT ON FUNCTION lark.delete_webhook(text) IS
'delete a webhook; its queued deliveries are cancelled and delivery history is kept';

CREATE FUNCTION lark.rotate_secret(webhook_id text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hook lark.webhooks := lark._lock_webhook(rotate_secret.webhook_id);
    new_secret text := 'whsec_' || lark._random_hex(32);
BEGIN
    UPDATE lark.webhook_secrets s SET secret = new_secret
     WHERE s.webhook_id = hook.id;
    UPDATE lark.webhooks w SET updated_at = now() WHERE w.id = hook.id;
    RETURN new_secret;
END
$$;
COMMENT ON FUNCTION lark.rotate_secret(text) IS
'give a webhook a new signing secret, shown only this once; queued deliveries are signed with it';

/*
 * The webhook functions act for any account they are given, so they are
 * not PUBLIC: the owner grants them to the roles that manage webhooks.
 * sign, verify and event_types stay public; they touch nothing stored.
 */
REVOKE ALL ON FUNCTION lark.create_webhook(text, text, text[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION lark.update_webhook(text, text, text[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION lark.pause_webhook(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION lark.resume_webhook(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION lark.delete_webhook(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION lark.rotate_secret(text) FROM PUBLIC;

/* ---------------------------------------------------------------------------
 * Events
 * ------------------------------------------------------------------------- */

/*
 * BEFORE ROW, on entering a terminal status: stamp finished_at unless the
 * statement set it.  An insert without one gets now(); so does an update
 * that leaves it as it was, which for a run finishing again would
 * otherwise keep the time of its previous end.
 */
CREATE FUNCTION lark._stamp_finished_at()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.finished_at := now();
    RETURN NEW;
END
$$;

/*
 * BEFORE UPDATE OF id: a run's id is what its events and receivers know it
 * by, and what pairs its old and new row in the event trigger.
 */
CREATE FUNCTION lark._forbid_id_change()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'the id of a run cannot change'
        USING ERRCODE = 'feature_not_supported',
              DETAIL = format('%s %s would become %s.', TG_TABLE_NAME, OLD.id, NEW.id),
              HINT = 'Insert a new run instead.';
END
$$;

/*
 * AFTER STATEMENT, with transition tables: fire one event for each run that
 * entered a terminal status in this statement, and queue one delivery for
 * each active webhook of the workflow's account that subscribes to it.
 * TG_ARGV[0] is the event prefix, TG_ARGV[1] the name of the run's id in the
 * payload.  Working per statement keeps a bulk update to one INSERT of
 * events and one of deliveries.
 *
 * The two branches differ only in how they find the runs that finished:
 * an inserted row counts if its status is terminal, an updated one if its
 * status also changed.  Each is a single statement, which matters on the
 * single-row path that every completed run takes.
 */
CREATE FUNCTION lark._enqueue_events()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    prefix       text := TG_ARGV[0];
    id_key       text := TG_ARGV[1];
    n_deliveries bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        WITH fired AS (
            INSERT INTO lark.events (event, account_id, workflow_id, runnable_id, body)
            SELECT prefix || '.' || r.status, w.account_id, w.id, r.id,
                   lark._event_body(prefix || '.' || r.status, now(),
                                    w.id, w.name, w.description,
                                    w.secret_context_names, id_key, r.id,
                                    r.status, r.started_at, r.finished_at,
                                    r.summary)
              FROM new_rows r
              JOIN lark.workflows w ON w.id = r.workflow_id
             WHERE r.status IN ('success', 'failure', 'cancelled')
            RETURNING id, event, account_id
        )
        INSERT INTO lark.deliveries (event_id, webhook_id)
        SELECT f.id, h.id
          FROM fired f
          JOIN lark.webhooks h ON h.account_id = f.account_id
         WHERE h.active AND f.event = ANY (h.events)
         ORDER BY f.id;
    ELSE
        WITH fired AS (
            INSERT INTO lark.events (event, account_id, workflow_id, runnable_id, body)
            SELECT prefix || '.' || r.status, w.account_id, w.id, r.id,
                   lark._event_body(prefix || '.' || r.status, now(),
                                    w.id, w.name, w.description,
                                    w.secret_context_names, id_key, r.id,
                                    r.status, r.started_at, r.finished_at,
                                    r.summary)
              FROM new_rows r
              JOIN old_rows o ON o.id = r.id
              JOIN lark.workflows w ON w.id = r.workflow_id
             WHERE r.status IN ('success', 'failure', 'cancelled')
               AND r.status IS DISTINCT FROM o.status
            RETURNING id, event, account_id
        )
        INSERT INTO lark.deliveries (event_id, webhook_id)
        SELECT f.id, h.id
          FROM fired f
          JOIN lark.webhooks h ON h.account_id = f.account_id
         WHERE h.active AND f.event = ANY (h.events)
         ORDER BY f.id;
    END IF;

    GET DIAGNOSTICS n_deliveries = ROW_COUNT;
    IF n_deliveries > 0 THEN
        PERFORM lark._wake_worker();
    END IF;
    RETURN NULL;
END
$$;

/* The same five triggers on each of the three run tables. */
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT *
          FROM (VALUES ('workflow_executions', 'workflow_execution', 'execution_id',
                        ARRAY['success', 'failure', 'cancelled']),
                       ('workflow_generations', 'workflow_generation', 'generation_id',
                        ARRAY['success', 'failure']),
                       ('workflow_repairs', 'workflow_repair', 'repair_id',
                        ARRAY['success', 'failure']))
               AS v(run_table, prefix, id_key, terminal)
    LOOP
        EXECUTE format($ddl$
            CREATE TRIGGER stamp_finished_at_on_insert
                BEFORE INSERT ON lark.%1$I
                FOR EACH ROW
                WHEN (NEW.finished_at IS NULL AND NEW.status = ANY (%2$L::text[]))
                EXECUTE FUNCTION lark._stamp_finished_at();
            CREATE TRIGGER stamp_finished_at_on_update
                BEFORE UPDATE OF status ON lark.%1$I
                FOR EACH ROW
                WHEN (NEW.status = ANY (%2$L::text[])
                      AND NEW.status IS DISTINCT FROM OLD.status
                      AND NEW.finished_at IS NOT DISTINCT FROM OLD.finished_at)
                EXECUTE FUNCTION lark._stamp_finished_at();
            CREATE TRIGGER forbid_id_change
                BEFORE UPDATE OF id ON lark.%1$I
                FOR EACH ROW
                WHEN (NEW.id IS DISTINCT FROM OLD.id)
                EXECUTE FUNCTION lark._forbid_id_change();
            CREATE TRIGGER enqueue_on_insert
                AFTER INSERT ON lark.%1$I
                REFERENCING NEW TABLE AS new_rows
                FOR EACH STATEMENT
                EXECUTE FUNCTION lark._enqueue_events(%3$L, %4$L);
            CREATE TRIGGER enqueue_on_update
                AFTER UPDATE ON lark.%1$I
                REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                FOR EACH STATEMENT
                EXECUTE FUNCTION lark._enqueue_events(%3$L, %4$L);
            $ddl$, t.run_table, t.terminal, t.prefix, t.id_key);
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION lark._stamp_finished_at() FROM PUBLIC;
REVOKE ALL ON FUNCTION lark._forbid_id_change() FROM PUBLIC;
REVOKE ALL ON FUNCTION lark._enqueue_events() FROM PUBLIC;

/* A worker already waiting for this database picks the schema up at commit. */
SELECT lark._wake_worker();
