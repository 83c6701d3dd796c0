--
-- Events: which changes fire one, and the exact JSON body of each of the
-- seven event types.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS lark_webhooks;
RESET client_min_messages;
SET lark_webhooks.max_webhooks_per_account = 5;

INSERT INTO lark.workflows (id, account_id, name, description, secret_context_names)
VALUES ('wf_abc123', 'acct_payload', 'New User Signup',
        'Go to dashboard url and verify that you can sign up as a new user.',
        ARRAY['dashboard_login']);
SELECT count(*) FROM lark.create_webhook('acct_payload', 'https://example.com/all',
                                         lark.event_types());
SELECT count(*) FROM lark.create_webhook('acct_payload', 'https://example.com/failures',
                                         ARRAY['workflow_execution.failure']);
SELECT lark.pause_webhook(webhook_id)
  FROM lark.create_webhook('acct_payload', 'https://example.com/paused',
                           lark.event_types());

-- Every run goes through its lifecycle in one transaction, so that the
-- event timestamps can be compared with now().
BEGIN;
INSERT INTO lark.workflow_executions (id, workflow_id, status, started_at) VALUES
    ('exec_ok', 'wf_abc123', 'pending', NULL),
    ('exec_bad', 'wf_abc123', 'pending', NULL),
    ('exec_stop', 'wf_abc123', 'pending', NULL);
UPDATE lark.workflow_executions SET status = 'running', started_at = '2026-05-01 12:34:00+00';
UPDATE lark.workflow_executions
   SET status = 'success', finished_at = '2026-05-01 12:34:56.789+00', summary = 'All steps passed.'
 WHERE id = 'exec_ok';
UPDATE lark.workflow_executions
   SET status = 'failure', finished_at = '2026-05-01 12:35:00+00',
       summary = 'The signup button did not respond after submission.'
 WHERE id = 'exec_bad';
UPDATE lark.workflow_executions SET status = 'cancelled', finished_at = '2026-05-01 12:34:10+00'
 WHERE id = 'exec_stop';
INSERT INTO lark.workflow_generations (id, workflow_id, status, summary, started_at, finished_at)
VALUES ('gen_ok', 'wf_abc123', 'success', 'Script generated.', '2026-05-01 10:00:00+00', '2026-05-01 10:02:00+00'),
       ('gen_bad', 'wf_abc123', 'failure', 'No working script.', '2026-05-01 11:00:00+00', '2026-05-01 11:00:30+00');
INSERT INTO lark.workflow_repairs (id, workflow_id, status, started_at) VALUES
    ('rep_ok', 'wf_abc123', 'running', '2026-05-02 08:00:00+00'),
    ('rep_bad', 'wf_abc123', 'running', '2026-05-02 09:00:00+00');
UPDATE lark.workflow_repairs SET status = 'success', summary = 'Selector updated.',
       finished_at = '2026-05-02 08:00:05+00' WHERE id = 'rep_ok';
UPDATE lark.workflow_repairs SET status = 'failure', summary = NULL WHERE id = 'rep_bad';

SELECT count(*) AS events,
       bool_and(body::json->>'timestamp'
                = to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')) AS stamped_now,
       bool_and(created_at = now()) AS created_now
  FROM lark.events WHERE account_id = 'acct_payload';
-- A repair that failed without finished_at got one, and so does its body.
SELECT finished_at = now() AS finished_at_stamped FROM lark.workflow_repairs WHERE id = 'rep_bad';
SELECT (body::json->'data'->>'finished_at')
       = to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS body_has_it
  FROM lark.events WHERE runnable_id = 'rep_bad';
COMMIT;

-- The bodies, byte for byte (the timestamp, checked above, is masked).
SELECT event, regexp_replace(body, '"timestamp":"[^"]*"', '"timestamp":"<now>"') AS body
  FROM lark.events
 WHERE account_id = 'acct_payload' AND runnable_id <> 'rep_bad'
 ORDER BY event;
SELECT regexp_replace(regexp_replace(body, '"(timestamp|finished_at)":"[^"]*"', '"\1":"<now>"', 'g'),
                      '"duration_ms":[0-9]+', '"duration_ms":<since started_at>') AS body
  FROM lark.events WHERE runnable_id = 'rep_bad';

-- Each event got one delivery per active subscribed webhook: the failure
-- went to both webhooks that want it, the paused webhook got nothing.
SELECT e.event, string_agg(w.url, ', ' ORDER BY w.url) AS delivered_to,
       bool_and(d.status = 'pending' AND d.attempts = 0) AS pending
  FROM lark.events e
  JOIN lark.deliveries d ON d.event_id = e.id
  JOIN lark.webhooks w ON w.id = d.webhook_id
 WHERE e.account_id = 'acct_payload'
 GROUP BY e.id, e.event ORDER BY e.event;

-- One transition, one event: repeating a status, or changing another
-- column, fires nothing.
SELECT count(*) AS before FROM lark.events WHERE account_id = 'acct_payload' \gset
UPDATE lark.workflow_executions SET status = 'success' WHERE id = 'exec_ok';
UPDATE lark.workflow_executions SET summary = 'edited' WHERE id = 'exec_bad';
UPDATE lark.workflow_executions SET status = 'running' WHERE id = 'exec_stop';
SELECT count(*) - :before AS new_events FROM lark.events WHERE account_id = 'acct_payload';
-- Leaving a terminal status and entering it again is a new transition.
UPDATE lark.workflow_executions SET status = 'cancelled' WHERE id = 'exec_stop';
SELECT count(*) - :before AS new_events FROM lark.events WHERE account_id = 'acct_payload';

-- Rolled back, also to a savepoint: no event, no delivery.
SELECT count(*) AS events_before FROM lark.events \gset
SELECT count(*) AS deliveries_before FROM lark.deliveries \gset
BEGIN;
INSERT INTO lark.workflow_executions (workflow_id, status) VALUES ('wf_abc123', 'failure');
ROLLBACK;
BEGIN;
SAVEPOINT s;
INSERT INTO lark.workflow_executions (workflow_id, status) VALUES ('wf_abc123', 'failure');
ROLLBACK TO SAVEPOINT s;
INSERT INTO lark.workflow_executions (workflow_id, status) VALUES ('wf_abc123', 'running');
COMMIT;
SELECT (SELECT count(*) FROM lark.events) - :events_before AS new_events,
       (SELECT count(*) FROM lark.deliveries) - :deliveries_before AS new_deliveries;

-- Many rows in one statement: one event each.
INSERT INTO lark.workflow_executions (workflow_id, status)
SELECT 'wf_abc123', 'running' FROM generate_series(1, 100);
UPDATE lark.workflow_executions SET status = 'failure' WHERE status = 'running';
SELECT count(*) - :events_before AS new_events FROM lark.events;

-- Names that need escaping come out as JSON that parses back to them.
INSERT INTO lark.workflows (id, account_id, name, description, secret_context_names)
VALUES ('wf_tricky', 'acct_payload',
        E'Say "hi" \\ back\nslash\t tab \u0001 ctrl 🎉 ünï',
        NULL, ARRAY['a"b', NULL, E'c\\d']);
INSERT INTO lark.workflow_executions (id, workflow_id, status, summary)
VALUES ('exec_tricky', 'wf_tricky', 'success', E'line1\nline2 </script> \u2028');
SELECT regexp_replace(body, '"(timestamp|finished_at)":"[^"]*"', '"\1":"<now>"', 'g') AS body
  FROM lark.events WHERE runnable_id = 'exec_tricky';
SELECT (e.body::json->'workflow'->>'name') = w.name AS name_round_trips,
       (e.body::json->'data'->>'summary') = x.summary AS summary_round_trips,
       (e.body::json->'workflow'->'secret_context_names')::text = '["a\"b",null,"c\\d"]' AS contexts,
       e.body::jsonb IS NOT NULL AS valid_json
  FROM lark.events e
  JOIN lark.workflows w ON w.id = e.workflow_id
  JOIN lark.workflow_executions x ON x.id = e.runnable_id
 WHERE e.runnable_id = 'exec_tricky';

-- A run that finishes again gets a new finished_at, not its old one.
INSERT INTO lark.workflow_executions (id, workflow_id, status, started_at, finished_at)
VALUES ('exec_again', 'wf_abc123', 'failure', '2026-05-01 09:00:00+00', '2026-05-01 09:05:00+00');
UPDATE lark.workflow_executions SET status = 'running', started_at = now() WHERE id = 'exec_again';
UPDATE lark.workflow_executions SET status = 'success' WHERE id = 'exec_again';
SELECT finished_at >= started_at AS finished_after_start FROM lark.workflow_executions WHERE id = 'exec_again';
SELECT (body::json->'data'->>'duration_ms')::bigint >= 0 AS duration_not_negative
  FROM lark.events WHERE runnable_id = 'exec_again' AND event = 'workflow_execution.success';

-- A run's id cannot change: it is what its events are known by.
UPDATE lark.workflow_executions SET id = 'exec_renamed', status = 'failure' WHERE id = 'exec_again';
SELECT count(*) AS renamed FROM lark.workflow_executions WHERE id = 'exec_renamed';

-- Delivery ids start with the Unix time in milliseconds, so they sort by
-- creation.
SELECT abs(('x' || lpad(substr(lark._ordered_id('dlv_'), 5, 12), 16, '0'))::bit(64)::bigint
           - (extract(epoch FROM clock_timestamp()) * 1000)::bigint) < 60000 AS id_carries_the_time;

-- Deleting events takes their deliveries along; so does TRUNCATE.
SELECT count(*) > 0 AS has_deliveries FROM lark.deliveries d
  JOIN lark.events e ON e.id = d.event_id WHERE e.runnable_id = 'exec_tricky';
DELETE FROM lark.events WHERE runnable_id = 'exec_tricky';
SELECT count(*) AS orphans FROM lark.deliveries d
 WHERE NOT EXISTS (SELECT 1 FROM lark.events e WHERE e.id = d.event_id);
TRUNCATE lark.events;
SELECT (SELECT count(*) FROM lark.deliveries) AS deliveries,
       (SELECT count(*) FROM lark.delivery_attempts) AS attempts;
