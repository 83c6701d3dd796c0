--
-- Bad input gets a clear error and changes nothing.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS lark_webhooks;
RESET client_min_messages;
\set SHOW_CONTEXT never
SET lark_webhooks.max_webhooks_per_account = 5;

-- URLs
SELECT * FROM lark.create_webhook('acct_v', NULL, ARRAY['workflow_execution.success']);
SELECT * FROM lark.create_webhook('acct_v', '', ARRAY['workflow_execution.success']);
SELECT * FROM lark.create_webhook('acct_v', 'example.com/hook', ARRAY['workflow_execution.success']);
SELECT * FROM lark.create_webhook('acct_v', 'ftp://example.com/hook', ARRAY['workflow_execution.success']);
SELECT * FROM lark.create_webhook('acct_v', 'file:///etc/passwd', ARRAY['workflow_execution.success']);
SELECT * FROM lark.create_webhook('acct_v', 'javascript:alert(1)', ARRAY['workflow_execution.success']);
SELECT * FROM lark.create_webhook('acct_v', 'https:///nohost', ARRAY['workflow_execution.success']);
SELECT * FROM lark.create_webhook('acct_v', 'https://user:hunter2@example.com/hook', ARRAY['workflow_execution.success']);
SELECT * FROM lark.create_webhook('acct_v', 'https://user@example.com/hook', ARRAY['workflow_execution.success']);
SELECT * FROM lark.create_webhook('acct_v', 'https://exa mple.com/hook', ARRAY['workflow_execution.success']);
SELECT * FROM lark.create_webhook('acct_v', 'https://example.com/' || repeat('a', 2048), ARRAY['workflow_execution.success']);
SELECT * FROM lark.create_webhook('acct_v', 'http://' || repeat('x', 1000000), ARRAY['workflow_execution.success']);
-- The longest allowed URL is fine.
SELECT webhook_id LIKE 'wh_%' AS created
  FROM lark.create_webhook('acct_v', 'https://example.com/' || repeat('a', 2048 - 20), ARRAY['workflow_execution.success']);

-- Events
SELECT * FROM lark.create_webhook('acct_v', 'https://example.com/h', NULL);
SELECT * FROM lark.create_webhook('acct_v', 'https://example.com/h', ARRAY[]::text[]);
SELECT * FROM lark.create_webhook('acct_v', 'https://example.com/h', ARRAY['workflow_execution.started']);
SELECT * FROM lark.create_webhook('acct_v', 'https://example.com/h', ARRAY['workflow_execution.success', NULL]);
SELECT * FROM lark.create_webhook('acct_v', 'https://example.com/h', ARRAY['WORKFLOW_EXECUTION.SUCCESS']);
SELECT * FROM lark.create_webhook('acct_v', 'https://example.com/h', ARRAY[repeat('z', 1000000)]);

-- Accounts
SELECT * FROM lark.create_webhook(NULL, 'https://example.com/h', ARRAY['workflow_execution.success']);
SELECT * FROM lark.create_webhook('', 'https://example.com/h', ARRAY['workflow_execution.success']);
SELECT * FROM lark.create_webhook(repeat('a', 1000000), 'https://example.com/h', ARRAY['workflow_execution.success']);

-- Unknown or missing webhook ids, for every function that takes one
SELECT lark.update_webhook('wh_nope', url => 'https://example.com/x');
SELECT lark.pause_webhook('wh_nope');
SELECT lark.resume_webhook('wh_nope');
SELECT lark.delete_webhook('wh_nope');
SELECT lark.rotate_secret('wh_nope');
SELECT lark.pause_webhook(NULL);
SELECT lark.delete_webhook(repeat('x', 1000000));

-- A failed update leaves the webhook as it was.
CREATE TEMP TABLE hook AS
SELECT webhook_id FROM lark.create_webhook('acct_v2', 'https://example.com/keep',
                                           ARRAY['workflow_repair.failure'], 'keep me');
SELECT lark.update_webhook((SELECT webhook_id FROM hook), url => 'gopher://example.com');
SELECT lark.update_webhook((SELECT webhook_id FROM hook), events => ARRAY['nope']);
SELECT url, events, description, active FROM lark.webhooks WHERE id = (SELECT webhook_id FROM hook);

-- Nothing above created a webhook for acct_v but the one that was valid.
SELECT account_id, count(*) FROM lark.webhooks WHERE account_id LIKE 'acct_v%' GROUP BY account_id ORDER BY account_id;

-- Settings are checked as they are set.
\set VERBOSITY terse
ALTER SYSTEM SET lark_webhooks.retry_delays = '10s, soon';
ALTER SYSTEM SET lark_webhooks.allowed_networks = '10.0.0.0/33';
ALTER SYSTEM SET lark_webhooks.max_concurrency = 0;
