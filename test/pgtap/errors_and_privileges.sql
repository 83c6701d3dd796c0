-- pgTAP: every user error has its SQLSTATE and changes nothing; plain
-- roles go through the API and never see a secret.
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
SELECT plan(33);

SET LOCAL lark_webhooks.max_webhooks_per_account = 5;
CREATE TEMP TABLE before AS
SELECT (SELECT count(*) FROM lark.webhooks) AS hooks,
       (SELECT count(*) FROM lark.webhook_secrets) AS secrets;

-- 22004: a required value is NULL
SELECT throws_ok($$SELECT lark.create_webhook(NULL, 'https://example.com', ARRAY['workflow_execution.success'])$$,
                 '22004', NULL, 'NULL account_id is 22004');
SELECT throws_ok($$SELECT lark.create_webhook('a', NULL, ARRAY['workflow_execution.success'])$$,
                 '22004', NULL, 'NULL url is 22004');
SELECT throws_ok($$SELECT lark.pause_webhook(NULL)$$, '22004', NULL, 'NULL webhook_id is 22004');

-- 22023: a value is wrong
SELECT throws_ok($$SELECT lark.create_webhook('a', 'ftp://example.com', ARRAY['workflow_execution.success'])$$,
                 '22023', 'webhook url must use http or https', 'ftp url is 22023');
SELECT throws_ok($$SELECT lark.create_webhook('a', 'https:///nohost', ARRAY['workflow_execution.success'])$$,
                 '22023', NULL, 'url without host is 22023');
SELECT throws_ok($$SELECT lark.create_webhook('a', 'https://u:p@example.com', ARRAY['workflow_execution.success'])$$,
                 '22023', 'webhook url must not contain a user name or password', 'credentials in url are 22023');
SELECT throws_ok($$SELECT lark.create_webhook('a', 'https://example.com/' || repeat('x', 2100), ARRAY['workflow_execution.success'])$$,
                 '22023', 'webhook url is longer than 2048 characters', 'long url is 22023');
SELECT throws_ok($$SELECT lark.create_webhook('a', 'https://example.com', ARRAY['nope'])$$,
                 '22023', 'unknown webhook event "nope"', 'unknown event is 22023');
SELECT throws_ok($$SELECT lark.create_webhook('a', 'https://example.com', '{}')$$,
                 '22023', 'a webhook must subscribe to at least one event', 'no events is 22023');
SELECT throws_ok($$SELECT lark.create_webhook('', 'https://example.com', ARRAY['workflow_execution.success'])$$,
                 '22023', NULL, 'empty account is 22023');
SELECT throws_ok($$SELECT lark.create_webhook('a', '', ARRAY['workflow_execution.success'])$$,
                 '22023', NULL, 'empty url is 22023');

-- 42704: no such webhook
SELECT throws_ok($$SELECT lark.update_webhook('wh_missing', 'https://example.com')$$, '42704', NULL, 'update of unknown id is 42704');
SELECT throws_ok($$SELECT lark.pause_webhook('wh_missing')$$, '42704', NULL, 'pause of unknown id is 42704');
SELECT throws_ok($$SELECT lark.resume_webhook('wh_missing')$$, '42704', NULL, 'resume of unknown id is 42704');
SELECT throws_ok($$SELECT lark.delete_webhook('wh_missing')$$, '42704', NULL, 'delete of unknown id is 42704');
SELECT throws_ok($$SELECT lark.rotate_secret('wh_missing')$$, '42704', NULL, 'rotate of unknown id is 42704');

-- The hint of an unknown event lists the valid ones.
CREATE FUNCTION pg_temp.hint_of(sql text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE h text;
BEGIN
    EXECUTE sql;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
    RETURN h;
END $f$;
SELECT is(pg_temp.hint_of($$SELECT lark.create_webhook('a', 'https://example.com', ARRAY['workflow.done'])$$),
          'Valid events are: ' || array_to_string(lark.event_types(), ', ') || '.',
          'unknown-event hint lists the seven events');

SELECT is((SELECT count(*) FROM lark.webhooks), (SELECT hooks FROM before), 'failed calls created no webhook');
SELECT is((SELECT count(*) FROM lark.webhook_secrets), (SELECT secrets FROM before), 'failed calls stored no secret');

-- 54000: the sixth webhook of an account
SELECT lives_ok($$SELECT lark.create_webhook('acct_tap', 'https://example.com/' || g, ARRAY['workflow_execution.success']) FROM generate_series(1, 5) g$$,
                'five webhooks for one account');
SELECT throws_ok($$SELECT lark.create_webhook('acct_tap', 'https://example.com/6', ARRAY['workflow_execution.success'])$$,
                 '54000', 'account "acct_tap" already has the maximum of 5 webhooks', 'the sixth is 54000');
SELECT is((SELECT count(*)::int FROM lark.webhooks WHERE account_id = 'acct_tap'), 5, 'still five');

-- The limit is a setting, and a superuser-only one.
SET LOCAL lark_webhooks.max_webhooks_per_account = 6;
SELECT lives_ok($$SELECT lark.create_webhook('acct_tap', 'https://example.com/6', ARRAY['workflow_execution.success'])$$,
                'a raised limit allows a sixth');
SELECT is((SELECT context FROM pg_settings WHERE name = 'lark_webhooks.max_webhooks_per_account'),
          'superuser', 'only a superuser can change the limit');

-- Privileges
CREATE ROLE lark_tap_user;
SELECT ok(NOT has_table_privilege('lark_tap_user', 'lark.webhook_secrets', 'SELECT'), 'plain role cannot read secrets');
SELECT ok(NOT has_table_privilege('lark_tap_user', 'lark.webhooks', 'INSERT'), 'plain role cannot insert webhooks');
SELECT ok(NOT has_table_privilege('lark_tap_user', 'lark.deliveries', 'UPDATE'), 'plain role cannot update deliveries');
SELECT ok(NOT has_table_privilege('lark_tap_user', 'lark.delivery_attempts', 'INSERT'), 'plain role cannot forge attempts');
SELECT ok(NOT has_function_privilege('lark_tap_user', 'lark.create_webhook(text, text, text[], text)', 'EXECUTE')
          AND NOT has_function_privilege('lark_tap_user', 'lark.rotate_secret(text)', 'EXECUTE')
          AND NOT has_function_privilege('lark_tap_user', 'lark.update_webhook(text, text, text[], text)', 'EXECUTE'),
          'plain role cannot manage webhooks until granted');
GRANT EXECUTE ON FUNCTION lark.create_webhook(text, text, text[], text) TO lark_tap_user;
SELECT ok(NOT has_function_privilege('lark_tap_user', 'lark._wake_worker()', 'EXECUTE'), 'internal functions are not public');

-- No function a plain role may call returns a stored secret: the only
-- functions that read lark.webhook_secrets hand out a secret they just made.
SELECT is(ARRAY(SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = 'lark' AND p.prosrc LIKE '%webhook_secrets%' ORDER BY 1),
          ARRAY['create_webhook', 'rotate_secret'], 'only create_webhook and rotate_secret touch secrets');
SET LOCAL ROLE lark_tap_user;
SELECT throws_ok($$SELECT secret FROM lark.webhook_secrets$$, '42501', NULL, 'reading secrets as a plain role is denied');
SELECT ok((SELECT signing_secret FROM lark.create_webhook('acct_tap_plain', 'https://example.com/p',
                                                          ARRAY['workflow_repair.success'])) ~ '^whsec_',
          'a plain role gets its own secret once, from create_webhook');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
